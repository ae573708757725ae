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
# # 01 · Data preparation
#
# Loads the task's TSV files from `data_dir` (default `../shared/data`), validates every line
# (`kdnb.data.load_task`) and shows counts, class balance and sentence lengths.
# Run by `make report` through papermill, which injects `task` and `profile` below.

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
from kdnb import figures, report
from kdnb.config import run_config
from kdnb.data import prepare, task_spec
from kdnb.models.teacher import load_tokenizer

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
cfg.save()
print(f"task={cfg.task} profile={cfg.profile} metric={task_spec(task).metric_label}")

# %%
dsd = prepare(cfg)  # kdnb.data.load_task on cfg.data_path; every kdnb stage logs its own wall time
dsd

# %% [markdown]
# ## Counts and lengths (words; WordPiece tokens of the teacher's tokenizer)

# %%
# NBVAL_CHECK_OUTPUT
stats = figures.split_stats(dsd, load_tokenizer(cfg))
report.save_table(cfg, stats, "data_stats")
print(stats.to_string(index=False))

# %% [markdown]
# ## Class balance

# %%
# NBVAL_CHECK_OUTPUT
balance = figures.class_balance(dsd)
report.save_table(cfg, balance, "class_balance")
print(balance.head(12).round(3).to_string(index=False))

# %%
fig = figures.plot_class_balance(balance, cfg.task)
report.save_figure(cfg, fig, "class_balance")

# %% [markdown]
# ## Sentence lengths

# %%
fig = figures.plot_lengths(dsd, cfg.task)
report.save_figure(cfg, fig, "sentence_lengths")
