"""kdnb.augment: Tang et al.'s rules, GPT-2 generation, the transfer set, resumable teacher logits."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from kdnb import augment as A
from kdnb import experiments, store
from kdnb.augment import gpt2, rules
from kdnb.augment.shards import augmented_artefact
from kdnb.config import load_config
from kdnb.data import load_task
from kdnb.errors import ConfigError, StageInputError

ROOT = Path(__file__).resolve().parents[1]

GPT2_SMALL = {"augment.gpt2.model_name_or_path": "scratch", "augment.gpt2.epochs": 1,
              "augment.gpt2.learning_rate": 1e-3, "augment.gpt2.max_length": 24,
              "augment.gpt2.scratch_vocab_size": 400, "augment.gpt2.scratch_n_embd": 32,
              "augment.gpt2.scratch_n_head": 2, "augment.gpt2.scratch_n_layer": 1,
              "augment.gpt2.n_sentences": 40, "augment.gpt2.generate_batch_size": 8}


def _cfg(tmp_path, **over):
    return load_config("cola", "smoke", overrides={"output_dir": str(tmp_path), "train_limit": 60, **over})


@pytest.fixture(scope="module")
def dsd():
    return load_task("cola", load_config("cola", "smoke").data_path)


@pytest.fixture(scope="module")
def nlp():
    return rules.load_spacy()


# ---- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize("over, msg", [
    ({"augment.transfer_set": "bogus"}, "augment.transfer_set"),
    ({"augment.rules.p_mask": 1.5}, "augment.rules.p_mask"),
    ({"augment.rules.p_mask": 0.6, "augment.rules.p_pos": 0.6}, "must sum to <= 1"),
    ({"augment.ablation_sets": ["none", "none"]}, "distinct"),
    ({"augment.ablation_budget": "more"}, "augment.ablation_budget"),
    ({"augment.gpt2.top_p": 1.5}, "augment.gpt2.top_p"),
    ({"augment.gpt2.scratch_n_embd": 30, "augment.gpt2.scratch_n_head": 4}, "multiple"),
    ({"augment.gpt2.colour": 1}, "unknown key 'augment.gpt2.colour'"),
])
def test_bad_augment_parameters_are_rejected(over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config("cola", "smoke", overrides=over)


def test_sets_and_methods_needed(tmp_path):
    cfg = _cfg(tmp_path, **{"augment.transfer_set": "rules", "augment.ablation": False})
    assert A.transfer_sets_needed(cfg) == ["rules"] and A.methods_needed(cfg) == ["rules"]
    cfg = _cfg(tmp_path, **{"augment.transfer_set": "none", "augment.ablation": True,
                            "augment.ablation_sets": ["none", "rules+gpt2"]})
    assert A.transfer_sets_needed(cfg) == ["none", "rules+gpt2"]
    assert A.methods_needed(cfg) == ["rules", "gpt2"]


# ---- rules (Tang et al. 2019) --------------------------------------------------------------
def test_pos_vocabulary_is_the_tag_conditioned_unigram_distribution():
    tagged = [(["the", "dog", "ran"], [True, True, False], ["DT", "NN", "VBD"]),
              (["a", "dog", "cat"], [True, True, False], ["DT", "NN", "NN"])]
    vocab = rules.PosVocabulary(tagged)
    assert vocab.probabilities("NN") == pytest.approx({"cat": 1 / 3, "dog": 2 / 3})
    rng = np.random.default_rng(0)
    draws = Counter(vocab.sample("NN", rng) for _ in range(6000))
    assert set(draws) == {"cat", "dog"} and draws["dog"] / 6000 == pytest.approx(2 / 3, abs=0.03)


def test_rule_sample_operations(nlp):
    (tok, sp, tags), = rules.tag_sentences(["The quick brown fox jumped over the lazy dog."], nlp)
    vocab = rules.PosVocabulary(rules.tag_sentences(["A slow red cat walked under the big table.",
                                              "The quick brown fox jumped over the lazy dog."], nlp))
    rng = np.random.default_rng(1)
    assert rules.detokenize(tok, sp) == "The quick brown fox jumped over the lazy dog."
    # masking only: every token becomes [MASK]
    s = rules.rule_sample(tok, sp, tags, vocab, rng, p_mask=0.999999, p_pos=0.0, p_ngram=0.0)
    assert s == " ".join(["[MASK]"] * 10)
    # POS swaps only: same length, every token replaced by a word seen with its tag
    swapped = 0
    for _ in range(20):
        out = rules.rule_sample(tok, sp, tags, vocab, rng, p_mask=0.0, p_pos=0.999999, p_ngram=0.0)
        words = out[:-1].split()
        assert len(words) == 9 and out.endswith(".")
        assert all(w in vocab.words[t] for w, t in zip(words, tags))
        swapped += words != tok[:9]
    assert swapped > 10
    # n-grams only: a contiguous run of 1..5 original tokens
    for _ in range(30):
        out = rules.rule_sample(tok, sp, tags, vocab, rng, p_mask=0.0, p_pos=0.0, p_ngram=1.0, ngram_max=5)
        assert out in rules.detokenize(tok, sp) and 1 <= len(rules.tag_sentences([out], nlp)[0][0]) <= 5
    # nothing applied: the original
    assert rules.rule_sample(tok, sp, tags, vocab, rng, p_mask=0.0, p_pos=0.0, p_ngram=0.0) == rules.detokenize(tok, sp)


def test_augment_rules_dedups_is_reproducible_and_reused(tmp_path, dsd, nlp):
    over = {"augment.rules.n_iter": 6, "augment.shard_size": 64}
    cfg = _cfg(tmp_path / "a", **over)
    res = A.augment_rules(cfg, dsd, nlp_loader=lambda: nlp)
    train = set(A.training_sentences(cfg, dsd)["sentence"])
    sents = list(res.dataset["sentence"])
    assert res.stats["generated"] == 60 * 6 and res.stats["kept"] == len(sents) > 100
    assert len(set(sents)) == len(sents) and not set(sents) & train and all(s.strip() for s in sents)
    assert set(res.dataset["source"]) == {"rules"}
    assert sum("[MASK]" in s for s in sents) > 0.2 * len(sents)
    # same seed, other folder: identical; reused on a second call
    res2 = A.augment_rules(_cfg(tmp_path / "b", **over), dsd, nlp_loader=lambda: nlp)
    assert list(res2.dataset["sentence"]) == sents
    again = A.augment_rules(cfg, dsd, nlp_loader=lambda: pytest.fail("tags should be cached"))
    assert again.reused and list(again.dataset["sentence"]) == sents
    # the store object it is: same artefact, key and record, listed in the run's manifest
    assert again.artefact.path == res.artefact.path == A.augmented_dir(cfg, "rules")
    assert again.artefact.key == res.artefact.key and res.artefact.saved()["stats"] == res.stats
    assert store.artefacts(cfg, "augmented_set") == {"augmented/rules": {
        "kind": "augmented_set", "record": "augmented/rules.json", "loader": store.ARTEFACTS["augmented_set"],
        "key": res.artefact.key}}
    assert A.load_augmented(cfg, "rules").artefact == again.artefact
    # other seed: other samples
    res3 = A.augment_rules(_cfg(tmp_path / "c", seed=7, **over), dsd, nlp_loader=lambda: nlp)
    assert list(res3.dataset["sentence"]) != sents


def test_augment_rules_resumes_after_interruption(tmp_path, dsd, nlp, monkeypatch):
    over = {"augment.rules.n_iter": 4, "augment.shard_size": 32}
    ref = A.augment_rules(_cfg(tmp_path / "ref", **over), dsd, nlp_loader=lambda: nlp)
    cfg = _cfg(tmp_path / "run", **over)
    real, calls = rules.rule_sample, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3 * 32:  # dies inside the 4th shard
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(rules, "rule_sample", dying)
    with pytest.raises(KeyboardInterrupt):
        A.augment_rules(cfg, dsd, nlp_loader=lambda: nlp)
    shards = sorted(p.name for p in (cfg.out / "augmented" / "rules.shards").glob("shard-*"))
    assert shards == ["shard-00000", "shard-00001", "shard-00002"]
    monkeypatch.setattr(rules, "rule_sample", real)
    res = A.augment_rules(cfg, dsd, nlp_loader=lambda: nlp)
    assert list(res.dataset["sentence"]) == list(ref.dataset["sentence"])


def test_pairs_cycle_first_second_both(tmp_path, nlp):
    orig1 = "The young man in the blue coat is eating his food slowly at the old table."
    orig2 = "A tall woman with a red hat is reading a long book in the quiet garden."
    split = datasets.Dataset.from_dict({"idx": [0], "sentence": [orig1], "sentence2": [orig2], "label": [0]})
    pairs = datasets.DatasetDict({"train": split, "dev": split})
    cfg = _cfg(tmp_path, **{"augment.rules.n_iter": 30, "augment.rules.p_mask": 0.5,
                            "augment.rules.p_ngram": 0.0})
    res = A.augment_rules(cfg, pairs, nlp_loader=lambda: nlp)
    assert res.dataset.column_names == ["sentence", "sentence2", "source", "origin"]
    kinds = Counter("first" if b == orig2 else "second" if a == orig1 else "both"
                    for a, b in zip(res.dataset["sentence"], res.dataset["sentence2"]))
    assert kinds == {"first": 10, "second": 10, "both": 10}  # n_iter = 30 cycles first / second / both


# ---- GPT-2 --------------------------------------------------------------------------------
def test_gpt2_generation_starts_from_training_initial_subwords_and_resumes(tmp_path, dsd, monkeypatch, one_thread):
    over = {**GPT2_SMALL, "augment.shard_size": 16}
    cfg = _cfg(tmp_path / "a", **over)
    res = A.augment_gpt2(cfg, dsd)
    assert res.stats["model"] == "scratch" and "GPT2Config" in res.stats["description"]
    _, tok = A.load_gpt2(cfg)
    train = A.training_sentences(cfg, dsd)
    firsts = {ids[0] for ids in gpt2.encode_for_lm(tok, list(train["sentence"]), 24)}
    sents = list(res.dataset["sentence"])
    assert len(sents) == res.stats["kept"] == 40 and len(set(sents)) == 40
    assert not set(sents) & set(train["sentence"])
    assert set(res.dataset["first_subword"]) <= firsts
    assert all(s.startswith(tok.decode([f]).strip()) for s, f in zip(sents, res.dataset["first_subword"]))
    assert max(res.dataset["n_subwords"]) <= 24 and res.stats["generated"] >= 40
    assert A.augment_gpt2(cfg, dsd).reused

    # A second run with the same trained LM, killed after two shards, resumes to the same set.
    cfg_b = _cfg(tmp_path / "b", **over)
    (cfg_b.out / "augmented").mkdir(parents=True)
    shutil.copytree(cfg.out / "augmented" / "gpt2_model", cfg_b.out / "augmented" / "gpt2_model")
    shutil.copy(cfg.out / "augmented" / "gpt2_model.json", cfg_b.out / "augmented" / "gpt2_model.json")
    real, calls = gpt2.sample_sentences, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gpt2, "sample_sentences", dying)
    with pytest.raises(KeyboardInterrupt):
        A.augment_gpt2(cfg_b, dsd)
    assert len(list((cfg_b.out / "augmented" / "gpt2.shards").glob("shard-*"))) == 2
    monkeypatch.setattr(gpt2, "sample_sentences", real)
    resumed = A.augment_gpt2(cfg_b, dsd)
    assert list(resumed.dataset["sentence"]) == sents


def test_gpt2_rejects_pair_tasks(tmp_path):
    cfg = load_config("sst2", "smoke", overrides={"output_dir": str(tmp_path), **GPT2_SMALL})
    pairs = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"idx": [0], "sentence": ["a"], "sentence2": ["b"], "label": [0]}),
        "dev": datasets.Dataset.from_dict({"idx": [0], "sentence": ["a"], "sentence2": ["b"], "label": [0]})})
    with pytest.raises(ConfigError, match="sentence pairs"):
        A.train_gpt2(cfg, pairs)


# ---- the transfer set ----------------------------------------------------------------------
def _fake_augmented(cfg, method, sentences):
    ds = datasets.Dataset.from_dict({"sentence": sentences, "source": [method] * len(sentences),
                                     "origin": [-1] * len(sentences)})
    augmented_artefact(cfg, method, "x").save_dataset(ds, {"stats": {"kept": len(ds)}})


def test_transfer_input_composition(tmp_path, dsd):
    cfg = _cfg(tmp_path, **{"augment.transfer_size": 6})
    with pytest.raises(StageInputError, match="02_augmentation"):
        A.transfer_input(cfg, dsd, "rules")
    train = A.training_sentences(cfg, dsd)
    _fake_augmented(cfg, "rules", [f"rule {i}" for i in range(10)])
    _fake_augmented(cfg, "gpt2", ["rule 0", train[0]["sentence"]] + [f"gen {i}" for i in range(10)])
    none = A.transfer_input(cfg, dsd, "none")
    assert len(none) == 60 and set(none["source"]) == {"train"}
    rules = A.transfer_input(cfg, dsd, "rules")
    assert list(rules["sentence"][60:]) == [f"rule {i}" for i in range(6)]
    assert list(rules["label"][60:]) == [-1] * 6 and list(rules["idx"][60:]) == [-1] * 6
    assert rules.features["label"] == train.features["label"]
    both = A.transfer_input(cfg, dsd, "rules+gpt2")
    extra = list(both["sentence"][60:])
    # 3 rules + 3 GPT-2; the GPT-2 copy of 'rule 0' and of a training sentence are skipped
    assert extra == ["rule 0", "rule 1", "rule 2", "gen 0", "gen 1", "gen 2"]
    assert Counter(both["source"]) == {"train": 60, "rules": 3, "gpt2": 3}
    assert len(A.transfer_input(_cfg(tmp_path), dsd, "gpt2")) == 60 + 11  # size None: all but the training one


def test_ablation_epochs_budget(tmp_path):
    cfg = _cfg(tmp_path, **{"bilstm.epochs": 10, "augment.ablation_budget": "equal_steps"})
    assert experiments.ablation_epochs(cfg, 1000, 1000) == 10 and experiments.ablation_epochs(cfg, 4000, 1000) == 2
    assert experiments.ablation_epochs(cfg, 10**6, 1000) == 1
    cfg = _cfg(tmp_path, **{"bilstm.epochs": 10})
    assert experiments.ablation_epochs(cfg, 4000, 1000) == 10


# ---- teacher logits: killed with SIGKILL, resumed, identical ----------------------------------
def _tiny_teacher(cfg):
    """A small random BERT classifier saved where kdnb.models.teacher.load_teacher looks."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdnb.models.teacher import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.teacher.model_name_or_path))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    mdir = cfg.out / "teacher" / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    (cfg.out / "teacher" / "result.json").write_text(json.dumps({"config_hash": "tiny"}))


_CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from kdnb import augment as A
    from kdnb.training import teacher as T
    from kdnb.config import load_config
    from kdnb.data import load_task
    real = T.predict_logits
    def slow(*a, **k):          # a slow teacher, so that the kill lands between shards
        time.sleep(0.4)
        return real(*a, **k)
    T.predict_logits = slow
    cfg = load_config("cola", "smoke", overrides={"output_dir": sys.argv[1], "train_limit": 60})
    dsd = load_task("cola", cfg.data_path)
    T.compute_teacher_logits(cfg, A.transfer_input(cfg, dsd, "rules"), cfg.out / "transfer" / "rules",
                             shard_size=10)
""")


def test_teacher_logits_killed_mid_way_resume_to_the_identical_set(tmp_path, dsd, monkeypatch, one_thread):
    from kdnb.training import teacher as T

    cfgs = {}
    for name in ("killed", "whole"):
        cfg = cfgs[name] = _cfg(tmp_path / name)
        _tiny_teacher(cfg)
        _fake_augmented(cfg, "rules", [f"a generated sentence number {i} ." for i in range(40)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "killed")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard_root = cfgs["killed"].out / "transfer" / "rules.shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_root.glob("shard-*"))) < 3 and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = sorted(shard_root.glob("shard-*"))
    assert 3 <= len(done) < 10, "the kill should land mid-way (10 shards in all)"
    assert not (cfgs["killed"].out / "transfer" / "rules").exists()

    computed = []
    real = T.predict_logits
    monkeypatch.setattr(T, "predict_logits", lambda *a, **k: computed.append(1) or real(*a, **k))
    ds = A.transfer_input(cfgs["killed"], dsd, "rules")
    resumed = T.compute_teacher_logits(cfgs["killed"], ds, cfgs["killed"].out / "transfer" / "rules",
                                       shard_size=10)
    assert len(computed) == 10 - len(done), "complete shards must not be recomputed"
    whole = T.compute_teacher_logits(cfgs["whole"], A.transfer_input(cfgs["whole"], dsd, "rules"),
                                     cfgs["whole"].out / "transfer" / "rules", shard_size=10)
    assert len(resumed) == len(whole) == 100
    assert resumed.column_names == whole.column_names
    for col in ("idx", "sentence", "label", "source"):
        assert list(resumed[col]) == list(whole[col])
    assert np.array_equal(np.asarray(resumed["teacher_logits"]), np.asarray(whole["teacher_logits"]))
    # labelled in row order: the logits of a row equal those computed for it alone
    model, tok = T.load_teacher(cfgs["whole"])
    model.eval()
    with torch.no_grad():
        one = model(**tok([whole[57]["sentence"]], return_tensors="pt")).logits[0].numpy()
    np.testing.assert_allclose(whole[57]["teacher_logits"], one, atol=1e-5)
    assert not shard_root.exists()


def test_label_transfer_sets_labels_training_rows_once_and_reuses(tmp_path, dsd, monkeypatch, one_thread):
    from kdnb.training import teacher as T

    cfg = _cfg(tmp_path, **{"augment.transfer_set": "rules", "augment.ablation": True,
                            "augment.ablation_sets": ["none", "rules+gpt2"], "augment.shard_size": 32})
    _tiny_teacher(cfg)
    _fake_augmented(cfg, "rules", [f"rule sentence {i} ." for i in range(20)])
    _fake_augmented(cfg, "gpt2", [f"gpt sentence {i} ." for i in range(20)])
    rows = []
    real = T.predict_logits
    monkeypatch.setattr(T, "predict_logits", lambda m, data, *a, **k: rows.append(len(data)) or real(m, data, *a, **k))
    sets = A.label_transfer_sets(cfg, dsd)
    assert list(sets) == ["rules", "none", "rules+gpt2"] and not sets.reused  # the teacher ran
    assert sum(rows) == 60 + 20 + 40  # the 60 training rows once, then only the new rows of each set
    assert [len(sets[n]) for n in sets] == [80, 60, 100]
    for name, ts in sets.items():
        ref = A.transfer_input(cfg, dsd, name)
        assert list(ts["sentence"]) == list(ref["sentence"]) and list(ts["source"]) == list(ref["source"])
        np.testing.assert_array_equal(A.logits_array(ts)[:60], A.logits_array(sets["none"]))
    assert A.logits_array(sets["rules"]).shape == (80, 2)
    arts = sets.artefacts  # each set's store object: the logits of the training rows and of each set's new rows, the sets
    assert {n: a.kind for n, a in arts.items()} == {
        "none": "teacher_logits", "rules.augmented": "teacher_logits", "rules": "transfer_set",
        "rules+gpt2.augmented": "teacher_logits", "rules+gpt2": "transfer_set"}
    assert all(a.saved() for a in arts.values()) and arts["rules"].key["teacher_config_hash"] == store.record(cfg)["config_hash"]
    listed = store.artefacts(cfg)
    assert {str(a.path.relative_to(cfg.out)) for a in arts.values()} <= set(listed)
    rows.clear()
    store.record_time(cfg, "teacher_logits", 123.0)  # as if the first labelling had taken that long
    again = A.label_transfer_sets(cfg, dsd)
    assert rows == [] and np.array_equal(A.logits_array(again["rules+gpt2"]), A.logits_array(sets["rules+gpt2"]))
    assert {n: a.key for n, a in again.artefacts.items()} == {n: a.key for n, a in arts.items()}
    assert again.reused and store.stage_times(cfg)["teacher_logits"] == 123.0  # all loaded: the time of the run that made them stays
    _fake_augmented(cfg, "gpt2", [f"new gpt sentence {i} ." for i in range(20)])
    third = A.label_transfer_sets(cfg, dsd)
    assert not third.reused and sum(rows) == 40  # only the changed set's new rows (rules+gpt2) were labelled
    assert store.stage_times(cfg)["teacher_logits"] != 123.0  # and this labelling's time is logged
    conf = A.confidence_summary(A.teacher_confidence(sets))
    assert dict(zip(conf["source"], conf["rows"])) == {"train": 60, "rules": 20, "gpt2": 20}


def test_ablation_profile_is_the_cpu_profile_plus_the_ablation():
    """params/profiles/ablation.yaml is cpu.yaml plus augment.ablation and the transfer-set sizes of the size
    ablation: they share outputs/<task>/ and the
    fine-tuned teacher (its reuse key covers task, seed, train_limit and the teacher section)."""
    for task in ("cola", "sst2", "sara"):
        abl = load_config(task, "ablation").to_dict()
        cpu = load_config(task, "cpu", overrides={"augment.ablation": True,
                                                  "augment.size_ablation": load_config(task, "ablation").augment.size_ablation}).to_dict()
        abl.pop("profile"), cpu.pop("profile")
        assert abl == cpu, f"params/profiles/ablation.yaml differs from cpu.yaml + augment.ablation ({task})"
        a, c = load_config(task, "ablation"), load_config(task, "cpu")
        assert a.out == c.out and a.section_hash("task", "seed", "train_limit", "teacher") == \
            c.section_hash("task", "seed", "train_limit", "teacher")


def test_augmentation_ablation_trains_one_bilstm_per_set_and_writes_the_table(tmp_path, dsd, one_thread):
    import pandas as pd

    from kdnb.training.bilstm import distill_bilstm

    cfg = _cfg(tmp_path, **{"augment.transfer_set": "none", "augment.ablation": True,
                            "augment.ablation_sets": ["none", "rules", "gpt2"], "augment.transfer_size": 60,
                            "augment.ablation_budget": "equal_steps", "bilstm.epochs": 2,
                            "bilstm.hidden_size": 8, "bilstm.fc_size": 8})
    _tiny_teacher(cfg)
    _fake_augmented(cfg, "rules", [f"rule sentence {i} ." for i in range(100)])
    _fake_augmented(cfg, "gpt2", [f"gpt sentence {i} ." for i in range(100)])
    sets = A.label_transfer_sets(cfg, dsd)
    main = distill_bilstm(cfg, sets["none"], dsd)
    with pytest.raises(StageInputError):
        A.load_transfer_set(cfg, "rules+gpt2")
    table = experiments.augmentation_ablation(cfg, dsd, done={"none": main})
    assert list(table["transfer set"]) == ["none", "rules", "gpt2"]
    assert list(table["sentences"]) == [60, 120, 120] and list(table["augmented"]) == [0, 60, 60]
    assert list(table["epochs"]) == [2, 1, 1] and list(table["examples seen"]) == [120, 120, 120]
    assert table["dev MCC (%)"].iloc[0] == round(100 * main.dev_score, 1)
    assert not (cfg.out / "students" / "bilstm_none").exists()  # the main student was reused
    assert (cfg.out / "students" / "bilstm_rules" / "result.json").exists()
    assert "test MCC (%)" not in table.columns  # CoLA's test set is unlabelled
    saved = pd.read_csv(cfg.out / "augmentation_ablation.csv")
    assert list(saved["transfer set"]) == ["none", "rules", "gpt2"]


def test_transfer_size_ablation_trains_one_bilstm_per_prefix(tmp_path, dsd):
    import pandas as pd

    from kdnb.training.bilstm import distill_bilstm

    cfg = _cfg(tmp_path, **{"augment.transfer_set": "gpt2", "augment.transfer_size": 40, "augment.ablation": False,
                            "augment.size_ablation": [0, 20, 40], "bilstm.epochs": 1,
                            "bilstm.hidden_size": 8, "bilstm.fc_size": 8})
    _tiny_teacher(cfg)
    _fake_augmented(cfg, "gpt2", [f"gpt sentence {i} ." for i in range(100)])
    transfer = A.label_transfer_sets(cfg, dsd)["gpt2"]
    main = distill_bilstm(cfg, transfer, dsd)
    table = experiments.transfer_size_ablation(cfg, transfer, dsd, teacher_dev=0.5, done=main)
    assert list(table["augmented"]) == [0, 20, 40] and list(table["transfer-set rows"]) == [60, 80, 100]
    assert not (cfg.out / "students" / "bilstm_size40").exists()  # the main student was reused
    small = distill_bilstm(cfg, transfer.select(range(60)), dsd, name="bilstm_size0")
    assert small.reused and table["dev MCC (%)"].iloc[0] == round(100 * small.dev_score, 1)
    assert table["retention (%)"].iloc[2] == round(100 * main.dev_score / 0.5, 1)
    assert list(pd.read_csv(cfg.out / "transfer_size_ablation.csv")["augmented"]) == [0, 20, 40]
    fig = experiments.plot_transfer_size(table, "cola", 0.5, "MCC")
    assert fig.axes[0].get_xlabel().startswith("augmented sentences")
    too_big = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, size_ablation=[41]))
    with pytest.raises(ConfigError, match="size 41 exceeds the 40 augmented sentences"):
        experiments.transfer_size_ablation(too_big, transfer, dsd, teacher_dev=0.5)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(gpt2._filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it → two kept
    assert torch.isinf(gpt2._filter_logits(logits, 0, 0.7)).tolist() == [[False, False, True, True]]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isinf(gpt2._filter_logits(shuffled, 0, 0.7)).tolist() == [[True, False, True, False]]
    assert torch.equal(gpt2._filter_logits(logits, 0, 1.0), logits)


def test_sample_batch_drops_finished_rows_and_cuts_at_max_length():
    """Rows leave the batch at end-of-text; the others run to max_length; the cache follows."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=16, n_embd=8, n_layer=1, n_head=2)).eval()
    with torch.no_grad():  # end-of-text (id 5) likely, so that rows end at different steps
        model.lm_head.weight[5] += 2.0
    torch.manual_seed(1)
    with torch.no_grad():
        seqs, ended = gpt2._sample_batch(model, torch.tensor([0, 1, 2, 3] * 8), eos=5, max_length=6, temperature=1.0,
                                      top_k=0, top_p=1.0)
    assert len(seqs) == 32 and [s[0] for s in seqs] == [0, 1, 2, 3] * 8
    assert all(5 not in s for s in seqs) and all(len(s) <= 6 for s in seqs)
    assert all(len(s) == 6 for s, e in zip(seqs, ended) if not e)  # cut at max_length
    assert 0 < sum(ended) < 32 and len({len(s) for s in seqs}) > 2
    # the same seed, the same samples (a shard is reproducible)
    torch.manual_seed(1)
    with torch.no_grad():
        again, _ = gpt2._sample_batch(model, torch.tensor([0, 1, 2, 3] * 8), eos=5, max_length=6, temperature=1.0,
                                   top_k=0, top_p=1.0)
    assert again == seqs
