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
# # 04 · Students
#
# Distils the teacher into the students named in params. The BiLSTM of Tang et al. (2019):
# one bidirectional LSTM layer (300 units per direction), the concatenated final states, a
# 400-unit ReLU layer, logits; embeddings initialised from the teacher's WordPiece embeddings;
# trained with MSE between student and teacher logits (Adadelta, lr 1.0, ρ 0.95, batch 50,
# gradient clipping 30; the `cpu` profile: lr 0.5 and 4 dev evaluations per epoch on CoLA, chosen
# on 3 seeds — README).

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
from kdnb import report
from kdnb.augment import load_transfer_set, source_counts
from kdnb.config import run_config
from kdnb.data import load_task, task_spec
from kdnb.training.bilstm import distill_bilstm
from kdnb.training.runs import distill_seeds

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
dsd = load_task(cfg.task, cfg.data_path)
metric = task_spec(task).metric_label
transfer = load_transfer_set(cfg)  # <out>/transfer/<augment.transfer_set>; StageInputError if missing
print(f"transfer set '{cfg.augment.transfer_set}': {len(transfer)} sentences "
      f"({len(transfer) - source_counts(transfer).get('train', 0)} generated)")

# %% [markdown]
# ## BiLSTM student

# %%
teacher_dev = report.teacher_dev(cfg)  # the fine-tuned teacher's dev score (notebook 03)
if cfg.bilstm.enabled:
    bilstm_seeds = distill_seeds(cfg, distill_bilstm, transfer, dsd, name="bilstm", force=force)
    bilstm = bilstm_seeds.main

# %%
# NBVAL_CHECK_OUTPUT
if cfg.bilstm.enabled:
    print(f"parameters: {bilstm.n_params:,}; {cfg.bilstm.loss} loss on {len(transfer):,} transfer-set rows")
    print(f"dev {metric}: {100 * bilstm.dev_score:.1f} % (kept checkpoint, epoch {bilstm.best_epoch}; last "
          f"{100 * bilstm.dev_last:.1f} %); {report.retention_text(bilstm.dev_score, teacher_dev)}")
    print(report.seed_line(bilstm_seeds, teacher_dev))
    print(bilstm.curve.round(4).to_string(index=False))

# %% [markdown]
# ## Augmentation ablation: the BiLSTM on each transfer set
#
# With `augment.ablation: true`, one BiLSTM per set of `augment.ablation_sets` (Tang, Lu & Lin
# 2019, Table 1: CoLA MCC 0.0 without augmentation, 27.5 with rules, 40.0 with GPT-2 samples).
# `augment.ablation_budget`: `equal_epochs` trains each for `bilstm.epochs`; `equal_steps` gives
# each the number of examples the training set alone sees in `bilstm.epochs` (same compute).

# %%
if cfg.augment.ablation and cfg.bilstm.enabled:
    from kdnb.experiments import augmentation_ablation

    ablation = augmentation_ablation(cfg, dsd, done={cfg.augment.transfer_set: bilstm}, force=force)
    print(ablation.drop(columns=["seconds"]).to_string(index=False))

# %% [markdown]
# ## The finding: student skill vs transfer-set size
#
# With `augment.size_ablation` (e.g. `PROFILE=ablation`), one BiLSTM per number of augmented
# sentences added to the training set (0 = the training set alone), all with the same
# parameters, epochs and teacher: the thesis' central result is that a student distilled on a
# large transfer set keeps most of its teacher's skill (Sučík 2020; Tang et al. 2019). Written
# to `outputs/<task>/transfer_size_ablation.csv`.

# %%
if cfg.augment.size_ablation and cfg.bilstm.enabled:
    from kdnb.experiments import plot_transfer_size, transfer_size_ablation

    sizes = transfer_size_ablation(cfg, transfer, dsd, teacher_dev, done=bilstm, force=force)
    report.save_figure(cfg, plot_transfer_size(sizes, cfg.task, teacher_dev, metric), "transfer_size")
    print(sizes.to_string(index=False))

# %% [markdown]
# ## BERT student
#
# The thesis' small BERT (Sučík 2020, §4.3): `bert_student.num_layers` layers of width
# `hidden_size` (thesis: 5 × 204, intermediate 750, 3 heads, 2.42M parameters outside the
# embeddings); its input embeddings are the teacher's WordPiece matrix projected linearly to
# the student's width; trained on the teacher's soft targets (cross-entropy at T = 3; Adam
# 5e-4, batch 256, 60 epochs with 10 warm-up epochs). `init: teacher` starts it from the
# teacher's first layers instead (PKD / Pea-KD setting). Sentence pairs are encoded
# `[CLS] a [SEP] b [SEP]`. The `cpu` profile trains the teacher's first 2 layers (CoLA, Sara: 3)
# with the WordPiece matrix frozen on an α-mix of soft targets and gold labels (where the
# transfer set has them) for one pass over the transfer set (Sara: 6, at lr 2e-4): a randomly initialised
# 5 × 204 student needs tens of epochs, which 2 CPU cores cannot give it in a 20-minute report.

# %%
bert = None
if cfg.bert_student.enabled:
    from kdnb.training.bert_student import distill_bert_student

    bc = cfg.bert_student
    bert_seeds = distill_seeds(cfg, distill_bert_student, transfer, dsd, name="bert_student", method=bc.method,
                               force=force)
    bert = bert_seeds.main

# %%
# NBVAL_CHECK_OUTPUT
if bert is not None:
    print(f"L={bc.num_layers}, H={bc.hidden_size}, I={bc.intermediate_size}, A={bc.num_heads}, init {bc.init}: "
          f"{bert.n_params:,} parameters ({bert.n_params_non_embedding:,} outside the embeddings)")
    print(f"{bc.method or bc.loss} at T={bc.temperature:g}, {bc.epochs} epochs; dev {metric}: {100 * bert.dev_score:.1f} % "
          f"(kept checkpoint, epoch {bert.best_epoch}; last {100 * bert.dev_last:.1f} %); "
          f"{report.retention_text(bert.dev_score, teacher_dev)}")
    print(report.seed_line(bert_seeds, teacher_dev))
    print(bert.curve.round(4).to_string(index=False))

# %% [markdown]
# ## Did the students learn?
#
# Each student's dev score beside the majority-class baseline, and its agreement with the
# teacher (dev rows where it predicts the teacher's class) beside that of a student that learned
# nothing (always the majority class): distillation should raise it (`kdnb.analysis.learning`).

# %%
# NBVAL_CHECK_OUTPUT
from kdnb.analysis.learning import learning_table

trained = [m for m, on in (("bilstm", cfg.bilstm.enabled), ("bert_student", bert is not None)) if on]
print(learning_table(cfg, models=trained).to_string(index=False))

# %% [markdown]
# ## KD-loss ablation: one BERT student per method
#
# With `kd_ablation.enabled` (`PROFILE=kdzoo`), every method of `kd_ablation.methods` trains the
# same BERT student (sizes, optimiser, epochs of `bert_student`) on the same transfer set:
# logit MSE (Tang et al. 2019); KL at T with T² (Hinton et al. 2015; the BERT student's soft
# cross-entropy has the same gradients, so its run is this row); α-mix with the gold labels
# (Hinton et al. 2015); PKD, patient loss on normalised [CLS] states (Sun et al. 2019); KL
# between attention distributions and cosine on [CLS], layers distilled bottom-up
# (`aguilar_schedule`: progressive or stacked; Aguilar et al. 2020); noisy teacher logits
# (Sau & Balasubramanian 2016); teacher → assistant → student (Mirzadeh et al. 2020). PKD and
# Aguilar et al. run the frozen teacher forward in every step. The BiLSTM's row is shown for
# comparison. Retention = student dev / teacher dev; agreement = dev sentences where the student
# predicts the teacher's class, dev KL = KL(teacher ‖ student) at T = 1 on dev (both show how far
# a student got where the task metric does not yet, e.g. MCC 0 for a one-class student); train
# time: the wall time of the training loop (steps and dev evaluations), for `ta` the
# assistant's included. Written to `outputs/<task>/kd_ablation.csv`.

# %%
if cfg.kd_ablation.enabled:
    from kdnb.experiments import kd_ablation

    kd_table = kd_ablation(cfg, transfer, dsd, done=bert, force=force, bilstm=bilstm if cfg.bilstm.enabled else None)
    print(kd_table.to_string(index=False))

# %% [markdown]
# ## Pea-KD: Shuffled Parameter Sharing and Pretraining with Teacher's Predictions
#
# With `peakd.enabled` (`PROFILE=peakd`), Cho & Kang (2020): each student is the first `k`
# layers (`peakd.layers`) of the *pre-trained* model the teacher was fine-tuned from
# (`peakd.init: pretrained`, as the paper and PKD; `teacher`: the fine-tuned teacher's);
# **SPS** appends `k` layers that share the lower layers' parameters with query and key
# swapped (a 6-layer student: its top 3), doubling the depth at no parameter cost; **PTP**
# first trains the student to predict whether the teacher is confidently/unconfidently
# correct/wrong (one threshold `peakd.ptp_threshold` on its softmax confidence) until
# convergence: early stopping when the accuracy on the dev set's PTP labels has not improved
# for `peakd.ptp_patience` epochs (at most `peakd.ptp_epochs`). Then KD with (1 − α) CE +
# α KL·T² + β MSE of the normalised [CLS] states (`kdnb.training.peakd`). Every variant of
# `peakd.variants` trains on the same transfer set with the same seeds (`peakd.seeds`: 3 in
# the `peakd` profile; the table gives mean ± std); the table is
# written to `outputs/<task>/peakd.csv`.

# %%
if cfg.peakd.enabled:
    from kdnb import experiments

    pea = experiments.peakd_comparison(cfg, transfer, dsd, force=force)
    report.save_table(cfg, pea.table, "peakd")
    pc = cfg.peakd
    print(f"KD: (1 - {pc.alpha}) CE + {pc.alpha} KL·T² (T = {pc.temperature}) + {pc.beta} · MSE(normalised [CLS]); "
          f"{pc.epochs} epochs (PTP: until the dev PTP accuracy stalls {pc.ptp_patience} epochs, at most "
          f"{pc.ptp_epochs}), init {pc.init}, AdamW lr {pc.learning_rate}, batch {pc.batch_size}; "
          f"teacher dev {metric} {100 * pea.teacher_dev:.1f} %")
    for r in pea.runs:
        if r.ptp_counts:
            print(f"{r.name}: PTP labels on the transfer set: {r.ptp_counts}; PTP ran {r.ptp_epochs} epoch(s)")
    print(pea.table.to_string(index=False))
