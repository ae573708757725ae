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
# The results table (ours beside the thesis' numbers, Sučík 2020), stage runtimes, the
# learning curves, the analysis of the models' dev predictions (`kdnb.analysis`), the
# efficiency benchmark (`kdnb.analysis.bench`) and, when `analysis.optuna_trials` > 0, a hyperparameter
# exploration of the BiLSTM student (`analysis.optuna_bert_trials` > 0: the BERT student's size
# map); tables go to `outputs/<task>/`, figures to `thesis_figures/`.

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
import pandas as pd

from kdnb import figures, report
from kdnb.config import run_config
from kdnb.data import task_spec

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
metrics = report.write_metrics(cfg)  # metrics.json, from the run store (kdnb.report.metrics)
metric = task_spec(task).metric_label

# %% [markdown]
# ## Results (scores in %; retention = student dev / teacher dev)
#
# Every model is its checkpoint with the best dev score, as in the thesis; the last evaluation's
# dev score and the kept checkpoint's epoch are beside it. Selecting on dev makes the dev scores
# optimistic: the test scores (where the test set is labelled: SST-2, Sara) are not selected on.
# With `seeds` (PROFILE=seeds) the students' mean and sample std over the seeds follow; one seed
# of CoLA's 527 dev sentences is noise of a few MCC points.

# %%
# NBVAL_CHECK_OUTPUT
results = report.results_table(cfg)
report.save_table(cfg, results, "results")
print(results.dropna(axis=1, how="all").to_string(index=False))

# %%
# NBVAL_CHECK_OUTPUT
from kdnb.analysis.learning import learning_table

print(learning_table(cfg).to_string(index=False))  # every model vs the majority class (kdnb.analysis.learning)

# %% [markdown]
# The thesis' final numbers (Sučík 2020; sources cited in `kdnb.report.THESIS_REFERENCE`): its
# teacher is BERT-large (340M parameters), its students are sized in trainable non-embedding
# parameters; on CoLA its best students were scaled up (BERT student 76.4M, BiLSTM 15.4M). Each
# of our rows above sits beside the thesis' row of the same student type, with the ratio of the
# sizes; the columns `dev from` / `test from` say which version of the thesis each number comes
# from (the students' test scores are the published report's; the draft has none).

# %%
# NBVAL_CHECK_OUTPUT
print(report.thesis_table(cfg.task).to_string(index=False))

# %% [markdown]
# ## Runtimes of the stages (this machine, beside the thesis' GPU runtimes at full scale)

# %%
runtimes = report.runtimes_table(cfg)
report.save_table(cfg, runtimes, "runtimes")
runtimes

# %% [markdown]
# ## Learning curves (dev score at each evaluation)

# %%
curves = {"teacher": pd.read_csv(cfg.out / "teacher" / "learning_curve.csv")}
fig = figures.plot_learning_curves(curves, metric, cfg.task)
report.save_figure(cfg, fig, "teacher_learning_curve")

# %%
students = {name: pd.read_csv(cfg.out / "students" / name / "learning_curve.csv") for name in metrics["models"]
            if (cfg.out / "students" / name / "learning_curve.csv").exists()}  # the report's students
if students:
    fig = figures.plot_learning_curves(students, metric, cfg.task)
    report.save_figure(cfg, fig, "student_learning_curves")

# %% [markdown]
# ## Prediction analysis (dev set)
#
# As in the thesis' analysis of the models' predictions: each model's *confidence* on an
# example is its softmax maximum. We compare the confidences of every pair of models
# (Pearson's r), the average confidence on correct and incorrect predictions, how much the
# models' mistakes and hits overlap, and which true classes the mistakes fall in. The overlap is
# the thesis' measure: cell (row 1, column 2) is the share of model 1's mistakes (hits) that
# model 2 also makes, so the matrix is not symmetric (`measure="jaccard"` gives Jaccard instead).

# %%
from kdnb.analysis import bench, explore, predictions

preds = predictions.load_predictions(cfg)
names = predictions.label_names(cfg)
conf = predictions.confidences(preds)
corr = predictions.confidence_correlation(conf)
by_outcome = predictions.confidence_by_outcome(conf)
overlap = predictions.overlap_matrix(preds, "mistakes", "share")
overlap_counts = predictions.overlap_matrix(preds, "mistakes", "count")
hits = predictions.overlap_matrix(preds, "hits", "share")
mistakes = predictions.mistake_classes(preds, names)
report.save_table(cfg, corr.reset_index(), "confidence_correlation")
report.save_table(cfg, by_outcome, "confidence_by_outcome")
report.save_table(cfg, overlap_counts.reset_index(), "mistakes_overlap")
report.save_table(cfg, mistakes, "mistake_classes")
print(f"models: {', '.join(preds)}; {len(next(iter(preds.values())))} dev examples, {len(names)} classes")

# %%
# NBVAL_CHECK_OUTPUT
print("Pearson's r of the confidences:")
print(corr.round(2).to_string())
print("\nconfidence on correct / incorrect predictions (mean, std):")
print(by_outcome.round(2).to_string(index=False))
print("\nshared mistakes (counts; diagonal: the model's own mistakes):")
print(overlap_counts.astype(int).to_string())

# %%
fig = figures.plot_confidence_correlation(corr, cfg.task)
report.save_figure(cfg, fig, "confidence_correlation")

# %%
fig = figures.plot_average_confidence(by_outcome, cfg.task)
report.save_figure(cfg, fig, "average_confidence")

# %%
fig = figures.plot_overlap(overlap, cfg.task, "mistakes", "share")
report.save_figure(cfg, fig, "mistakes_overlap")

# %%
fig = figures.plot_overlap(hits, cfg.task, "hits", "share")
report.save_figure(cfg, fig, "hits_overlap")

# %% [markdown]
# Class distribution of the mistakes (by true class; on Sara the 57 intents) and each model's
# most frequent confusions.

# %%
fig = figures.plot_mistake_classes(mistakes, cfg.task)
report.save_figure(cfg, fig, "mistake_classes")

# %%
predictions.confusions(preds, names, top=5 if len(names) > 2 else 2)

# %% [markdown]
# ## Efficiency: parameters and inference time per example
#
# All models timed in this process on the same sentences (CoLA dev by default), batch
# `analysis.bench_batch_size`, with the PyTorch thread count shown: inputs padded to 64 tokens,
# and at their real lengths. BERT-large is built from its config with random weights and the
# thesis-size BERT student too (unless a trained BERT student exists) — timing only, never
# scored. int8 rows are PyTorch dynamic quantisation of the students, scored on the dev set.
# Speed-ups are per-example time ratios on the same device: against BERT-large with the same
# input, against BERT-large padded to 64 tokens (so a student's gain from real lengths counts),
# and against the teacher.

# %%
from kdnb.utils import read_json

if cfg.analysis.bench:
    efficiency = bench.efficiency_table(cfg, force=force)
    machine = read_json(cfg.out / "efficiency.json")["machine"]
    print(f"CPU: {machine['cpu']}; torch threads: {machine['torch_threads']} of {machine['cores_usable']} cores; "
          f"GPU: {machine['gpu']}")
    for line in bench.headline(efficiency):
        print(line)
    display_table = bench.summary_table(efficiency)
else:
    display_table = pd.DataFrame()
display_table

# %%
speed_png = None
if cfg.analysis.bench:
    speed_png = report.save_figure(cfg, figures.plot_speed(efficiency, cfg.task), "inference_speed")
speed_png

# %% [markdown]
# ## Hyperparameter exploration of the BiLSTM student (optuna)
#
# Learning rate, batch size, embedding type and mode, and width (the thesis' size maps),
# each trial distilled for `analysis.optuna_epochs` epochs on `analysis.explore_rows` rows of the
# transfer set drawn once at random (all rows if unset; the `explore` profile: 8,000, so that
# the exploration fits 2 CPU cores — the thesis explored on the whole set); the study lives in
# `outputs/<task>/optuna.db` and resumes where it stopped.

# %%
trials, size_map_png = explore.size_map(cfg, "bilstm")  # empty unless analysis.optuna_trials > 0
trials

# %%
size_map_png

# %% [markdown]
# ## Embedding type × mode of the BiLSTM student
#
# As the thesis' exploration (after Tang et al. 2019 and Kim 2014): word2vec vectors (trained
# with gensim on the transfer set, or `bilstm.word2vec.path`) vs the teacher's WordPiece
# embeddings, each static, non-static and multichannel, each BiLSTM distilled for
# `analysis.optuna_epochs` epochs on the same `analysis.explore_rows` rows. Runs when `analysis.explore_embeddings` (the `explore`
# profile); the students are kept under `outputs/<task>/explore/` and reused.

# %%
emb_table = explore.embedding_exploration(cfg)  # empty unless analysis.explore_embeddings
emb_png = None
if len(emb_table):
    report.save_table(cfg, emb_table, "embedding_exploration")
    print(emb_table.drop(columns=["best dev", "final dev"]).to_string(index=False))
    emb_png = report.save_figure(cfg, figures.plot_embedding_modes(emb_table, cfg.task), "bilstm_embedding_modes")
emb_png

# %% [markdown]
# ## BERT student size map (optuna)
#
# As the thesis' §"Choosing student size" (Sučík 2020): BERT students of
# 1–`analysis.optuna_bert_max_layers` layers and widths `analysis.optuna_bert_widths`, and
# their learning rate, each distilled for `analysis.optuna_epochs` epochs with the loss, optimiser
# and transfer set of `bert_student` (with `bert_student.init: teacher` only depth and learning
# rate: the width is the teacher's). Runs when `analysis.optuna_bert_trials` > 0; the study
# lives in `outputs/<task>/optuna.db` beside the BiLSTM's and resumes where it stopped.

# %%
bert_trials, bert_size_map_png = explore.size_map(cfg, "bert_student")  # empty unless analysis.optuna_bert_trials > 0
bert_trials

# %%
bert_size_map_png
