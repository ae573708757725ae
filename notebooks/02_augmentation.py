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
# # 02 · Augmentation
#
# A small student learns the teacher's function only where it sees the teacher's outputs, so
# distillation needs many more sentences than a GLUE training set holds (Tang, Lu & Lin 2019, Table 1:
# a BiLSTM distilled on CoLA alone reaches MCC 0.0; 27.5 with rule-based augmentation, 40.0
# with GPT-2 samples; Sučík 2020: 44.2 dev with 800k GPT-2 sentences). This notebook makes the
# **unlabelled** sentences; notebook 03 labels the chosen transfer set (`augment.transfer_set`:
# `none | rules | gpt2 | rules+gpt2`, at most `augment.transfer_size` new sentences) with the
# teacher's logits. The `cpu` profile takes 30,000 rule-based sentences for CoLA (the small GPT-2
# trained here without GPT-2 weights gave the BiLSTM 13.2 dev MCC against 19.7 with rules, one
# seed), 10,000 GPT-2 samples for Sara and none for SST-2 (50,000 of its own training phrases).
#
# * **Rules** (Tang et al. 2019, §3.3, `kdnb.augment.augment_rules`): per token, with
#   probability `p_mask` → `[MASK]`, else with `p_pos` → a word of the same POS tag (spaCy
#   tagger) drawn from the tag-conditioned unigram distribution of the training set; then with
#   `p_ngram` the sample is cut to a random n-gram (n ≤ 5); `n_iter` samples per sentence.
# * **GPT-2** (Sučík 2020, §3, `kdnb.augment.augment_gpt2`): a GPT-2 language model trained
#   on the training sentences (thesis: `gpt2-medium` fine-tuned; the `cpu`/`smoke` profiles,
#   without GPT-2 weights, train a small GPT-2 built from `GPT2Config`); each sentence starts
#   with a subword drawn from the training set's sentence-initial subwords and is sampled with
#   the KV cache until end-of-text.
#
# Outputs: `outputs/<task>/augmented/<method>/` (Arrow, shard by shard, resumable, reused
# while the parameters match).

# %% tags=["parameters"]
task = "sst2"
profile = "smoke"
data_dir = None  # None: the data_dir of params/<task>.yaml
force = False
overrides = {}  # dotted keys to values, e.g. teacher.epochs: 1 (from make report ARGS)
config = None  # the run's saved parameters (kdnb.pipeline passes <out>/config.yaml); None: merge the above

# %%
from kdnb import augment, report
from kdnb.config import run_config
from kdnb.data import load_task

cfg = run_config(config, task, profile, data_dir=data_dir, overrides=overrides)
dsd = load_task(cfg.task, cfg.data_path)
methods = augment.methods_needed(cfg)
print(f"transfer sets: {', '.join(augment.transfer_sets_needed(cfg))}; methods to run: {', '.join(methods) or 'none'}")

# %% [markdown]
# ## Rule-based augmentation (Tang et al. 2019)

# %%
results = {}
if "rules" in methods:
    results["rules"] = augment.augment_rules(cfg, dsd, force=force)
    rc = cfg.augment.rules
    print(f"p_mask={rc.p_mask} p_pos={rc.p_pos} p_ngram={rc.p_ngram} n ≤ {rc.ngram_max}, n_iter={rc.n_iter}; "
          f"POS tagger: spaCy {results['rules'].stats['spacy_model']}")

# %%
# NBVAL_CHECK_OUTPUT
if "rules" in results:
    s = results["rules"].stats
    print(f"{s['training_sentences']} training sentences → {s['generated']} samples, {s['unique']} unique, "
          f"{s['kept']} kept (new)")
    print(augment.examples(cfg, dsd, "rules", n=3, per_sentence=4).to_string(index=False))

# %% [markdown]
# ## GPT-2 generation (Sučík 2020, §3)

# %%
if "gpt2" in methods:
    results["gpt2"] = augment.augment_gpt2(cfg, dsd, force=force)
    g = results["gpt2"].stats
    print(f"generator: {g['description']}")
    print(f"LM parameters: {g['lm_n_params']:,}; dev perplexity {g['lm_dev_perplexity']:.1f}; "
          f"trained in {g['lm_seconds']:.0f} s")
    print(f"generation on {g['device']}: {g['sentences_per_second']} sentences/s; "
          f"{100 * g['ended']:.1f} % ended with end-of-text")

# %%
if "gpt2" in results:
    print(augment.examples(cfg, dsd, "gpt2", n=4, per_sentence=3).to_string(index=False))

# %% [markdown]
# ## Counts before and after removing duplicates
#
# `generated`: samples drawn; `unique`: distinct ones; `kept`: distinct and not a training
# sentence. The transfer set takes at most `augment.transfer_size` of the kept ones.

# %%
if results:
    counts = augment.counts_table(results)
    report.save_table(cfg, counts, "augmentation_counts")
    print(counts.to_string(index=False))
    print(f"transfer_size: {cfg.augment.transfer_size or 'all'}")

# %% [markdown]
# ## Sentence lengths: real vs generated

# %%
lengths = augment.lengths_frame(cfg, dsd, results)
summary = augment.length_summary(lengths)
report.save_table(cfg, summary, "augmentation_lengths")
print(summary.to_string(index=False))

# %%
fig = augment.plot_lengths(lengths, cfg.task)
report.save_figure(cfg, fig, "augmentation_lengths")

# %% [markdown]
# The teacher's confidence on real vs generated sentences is shown in notebook 03, once the
# transfer sets carry its logits; the BiLSTM trained on each set (the ablation) in notebook 04.
