# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Probing
#
# What do the teacher's layers and the students know about a sentence? The 10 SentEval probing
# tasks of Conneau et al. (2018), as in Sučík (2020): `kdnb.analysis.probing` averages each
# BERT layer over the tokens (E = the embedding layer; for BERT-large the thesis plots E, 1, 6,
# 12, 18, 24, and the same spread is used for other depths), averages the BERT student's
# embedding output and every one of its layers E, 1…L (where `bert_student.enabled`), takes the
# BiLSTM student's final states, and trains the thesis' probe on each. Both students are probed
# trained and as initialised before distillation (`probing.initialised_students`), as the
# thesis asks how the student's architecture changes what is distilled and where it is stored.
# The probe: an MLP with one sigmoid hidden layer, Adam
# (lr 1e-3), batch 64, early stopping on `va`, a grid over width × dropout chosen on `va`;
# only the chosen probe is scored on `te`. Baselines: the majority class of the data, and the
# published human and best-encoder numbers of Conneau et al. (2018, Table 2).
#
# **Data.** The probing files (`split<TAB>label<TAB>sentence`) are read from
# `<data_dir>/senteval_probing/` (or `probing.data_dir`). `../shared/data` holds only a small
# sample (≈120 tr / 60 va / 60 te sentences per task), enough to run the pipeline but not for
# real numbers: put the full files of
# [SentEval](https://github.com/facebookresearch/SentEval/tree/main/data/probing)
# (100k / 10k / 10k sentences per task) in that folder, or point `probing.data_dir` at them.

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
from kdnb import report
from kdnb.analysis import probing
from kdnb.config import run_config

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
pc = cfg.probing
print(f"probing enabled: {pc.enabled}")
if pc.enabled:
    print(f"tasks: {', '.join(pc.tasks)}")
    print(f"probe grid: width {pc.hidden_sizes} × dropout {pc.dropouts}, Adam lr {pc.learning_rate}, "
          f"batch {pc.probe_batch_size}, early stopping after {pc.patience} epochs (max {pc.max_epochs})")

# %% [markdown]
# ## The data used

# %%
# NBVAL_CHECK_OUTPUT
if pc.enabled:
    tasks = probing.load_probing_tasks(cfg)
    sizes = probing.data_sizes(tasks)
    print(sizes.to_string(index=False))
    warning = probing.sample_warning(tasks)
    print(warning or "full SentEval probing data")

# %% [markdown]
# ## Probing every model and layer
#
# Vectors are cached per (model, layer, task) under `outputs/<task>/probing/features/`, probe
# results under `outputs/<task>/probing/probes/`; a rerun reuses them (`force` redoes them).

# %%
run = None
if pc.enabled:
    run = probing.run_probing(cfg, force=force)
    table = probing.scores_table(run)
    report.save_table(cfg, table, "probing_scores")
    print(f"models: {', '.join(run.scores['model'].unique())}")

# %% [markdown]
# ## Test accuracy (%) of every model and layer

# %%
if run is not None:
    if run.warning:
        print(run.warning, "\n")
    print(probing.pivot_scores(run.scores).round(1).to_string())

# %% [markdown]
# Baselines (test accuracy, %): the majority class of this data, and Conneau et al. (2018, Table 2).

# %%
if run is not None:
    base = table[table["family"] == "baseline"].pivot_table(index="model", columns="task", values="test_acc",
                                                            sort=False)
    print(base[[t for t in probing.PROBING_TASKS if t in base.columns]].to_string())

# %% [markdown]
# ## The teacher's layers
#
# The best layer of the fine-tuned teacher per task (chosen on `va`, like the probes), and whether
# its probe beats the majority class of the data on Length at some layer.

# %%
if run is not None:
    print(probing.best_layers(run.scores, "teacher").to_string(index=False))
    for student in ("bert_student", "bert_student (initialised)"):
        if (run.scores["model"] == student).any():
            print(f"\n{student}: best layer per task (chosen on va)")
            print(probing.best_layers(run.scores, student).to_string(index=False))

# %%
# NBVAL_CHECK_OUTPUT
if run is not None and "Length" in pc.tasks:
    length = run.scores[(run.scores["model"] == "teacher") & (run.scores["task"] == "Length")]
    majority = sizes.set_index("task").loc["Length", "majority (this data, %)"]
    print(f"teacher beats the majority class ({majority:.1f} %) on Length at some layer: "
          f"{bool((length['test_acc'] > majority).any())}")

# %% [markdown]
# ## Figures

# %%
if run is not None:
    fig = probing.plot_teacher_layers(run.scores, run.sizes, cfg.task)
    report.save_figure(cfg, fig, "probing_teacher_layers")

# %%
if run is not None:
    fig = probing.plot_students_vs_teacher(run.scores, run.sizes, cfg.task)
    report.save_figure(cfg, fig, "probing_students_vs_teacher")

# %%
if run is not None and (run.scores["state"] == "initialised").any():
    fig = probing.plot_students_init_vs_trained(run.scores, run.sizes, cfg.task)
    report.save_figure(cfg, fig, "probing_students_init_vs_trained")

# %% [markdown]
# Every layer of every model by relative depth (E = 0, last layer = 1; the BiLSTM's final states
# at 1): the teacher's, the BERT student's and the BiLSTM's, solid after fine-tuning or
# distillation, dashed before.

# %%
if run is not None:
    fig = probing.plot_layers_by_depth(run.scores, run.sizes, cfg.task)
    report.save_figure(cfg, fig, "probing_layers_by_depth")
