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
# # 06 · Analysis
#
# The results table (ours beside the thesis' numbers, Sučík 2020), stage runtimes and the
# learning curves, written to `outputs/<task>/` and `thesis_figures/`.

# %% tags=["parameters"]
task = "cola"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False

# %%
import pandas as pd

from kdnb import figures, report
from kdnb.config import load_config
from kdnb.data import task_spec

cfg = load_config(task, profile, data_dir=data_dir)
metrics = report.load_metrics(cfg)
metric = task_spec(task).metric_label

# %% [markdown]
# ## Results (scores in %; retention = student dev / teacher dev)

# %%
# NBVAL_CHECK_OUTPUT
results = report.results_table(cfg)
report.save_table(cfg, results, "results")
print(results.to_string(index=False))

# %% [markdown]
# ## Runtimes of the stages (seconds, this machine)

# %%
runtimes = pd.DataFrame(sorted(metrics["stages_seconds"].items()), columns=["stage", "seconds"])
report.save_table(cfg, runtimes, "runtimes")
runtimes

# %% [markdown]
# ## Learning curves (dev score at each evaluation)

# %%
curves = {"teacher": pd.read_csv(cfg.out / "teacher" / "learning_curve.csv")}
fig = figures.plot_learning_curves(curves, metric, cfg.task)
report.save_figure(cfg, fig, "teacher_learning_curve")

# %%
students = {p.parent.name: pd.read_csv(p) for p in sorted((cfg.out / "students").glob("*/learning_curve.csv"))}
if students:
    fig = figures.plot_learning_curves(students, metric, cfg.task)
    report.save_figure(cfg, fig, "student_learning_curves")
