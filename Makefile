# kdnb — knowledge distillation from BERT, notebook-first.  `make help` lists the targets.
SHELL   := /bin/bash
TASK    ?= cola
PROFILE ?= cpu
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
FORCE   ?=
QUIET   ?=
ARGS    ?=
DATA_DIR ?=
# No model hub at run time by default; set HF_HUB_OFFLINE=0 to let transformers download.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONWARNINGS ?= ignore::DeprecationWarning

# nbval replays the notebooks as `make notebooks` stored them: no progress bars or warnings
QUIET_ENV = TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
PIPELINE_ARGS = --task $(TASK) --profile $(PROFILE) $(if $(FORCE),--force) $(if $(QUIET),--quiet) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

TASKS   ?= cola sst2 sara

.PHONY: help stages setup report thesis probing inventory test lab notebooks clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: TASK=cola|sst2|sara|rte  TASKS=\"cola sst2 sara\"  PROFILE=cpu|seeds|smoke|thesis|gpu|ablation|kdzoo|peakd|explore  FORCE=1  QUIET=1 (no progress bars)  DATA_DIR=path  ARGS=\"--set teacher.epochs=1\""

stages: ## list the study's stages (kdnb.stages): notebook, what each reads and writes; --only takes their names
	@$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m kdnb.stages

setup: $(VENV)/.installed ## create .venv with the pinned requirements (torch==2.13.0) and kdnb editable

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

report: setup ## run the stages' notebooks for TASK with PROFILE into outputs/<task>/ and thesis_figures/
	$(PY) -m kdnb.pipeline $(PIPELINE_ARGS)

thesis: setup ## every task of TASKS with PROFILE, then thesis_figures/index.md + results.csv (all tables and figures)
	@set -e; for t in $(TASKS); do \
	  echo "[make thesis] $$t"; \
	  $(PY) -m kdnb.pipeline --task $$t --profile $(PROFILE) $(if $(FORCE),--force) $(if $(QUIET),--quiet) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS); \
	done
	$(PY) -m kdnb.report --tasks $(TASKS) --profile $(PROFILE) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

inventory: setup ## list the models and artefacts of outputs/<task> (kind, key, loader; python -m kdnb.store)
	$(PY) -m kdnb.store --task $(TASK) --profile $(PROFILE) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

probing: setup ## only the SentEval probing stage (05) for TASK, on the saved teacher and students
	$(PY) -m kdnb.pipeline $(PIPELINE_ARGS) --only probing

# nbval replays the stored notebooks into a fresh outputs/<task>-smoke (removed first), so it
# tests what the code computes now, not a cache; checked cells are compared after the sanitizers
NBVAL = $(QUIET_ENV) $(PY) -m pytest --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg
SMOKE_OUT = outputs/$(shell sed -n 's/^task = "\(.*\)"$$/\1/p' notebooks/01_data_prep.py)-smoke

test: setup ## unit tests + nbval replay of the stored smoke-profile notebooks (into a fresh outputs/<task>-smoke)
	$(PY) -m pytest tests
	rm -rf $(SMOKE_OUT)
	$(NBVAL) notebooks

lab: setup ## open JupyterLab on the notebooks (as root, e.g. in a container, it adds --allow-root)
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

notebooks: setup ## re-execute the stored notebooks with the smoke profile (refreshes what nbval checks)
	$(PY) -m kdnb.store_notebooks

clean: ## remove generated outputs and figures (keeps .venv)
	rm -rf outputs/*/ thesis_figures/*.png thesis_figures/*.pdf
