"""kdnb.analysis on small synthetic prediction files, its figures, the runtimes table, the
thesis reference and the HTML report (kdnb.report)."""

from __future__ import annotations

import base64

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

from kdnb import figures, report, store
from kdnb.analysis import explore, predictions
from kdnb.config import load_config
from kdnb.errors import ConfigError, DataError, StageInputError

from .conftest import fake_run

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
                       "hKmMIQAAAABJRU5ErkJggg==")


def write_preds(path, labels, logits):
    logits = np.asarray(logits, dtype=float)
    df = pd.DataFrame({"idx": np.arange(len(labels)), "label": labels, "prediction": logits.argmax(1)})
    for c in range(logits.shape[1]):
        df[f"logit_{c}"] = logits[:, c]
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def onehot_logits(pred, n_classes, scale):
    out = np.zeros((len(pred), n_classes))
    out[np.arange(len(pred)), pred] = scale
    return out


@pytest.fixture
def three_models(smoke_cfg):
    """teacher, bilstm and bert student on 8 examples with known mistakes and confidences."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    t_pred = np.array([0, 0, 0, 1, 1, 1, 1, 0])  # mistakes at 3, 7
    s_pred = np.array([0, 0, 1, 1, 1, 1, 1, 0])  # mistakes at 2, 3, 7
    b_pred = np.array([1, 0, 0, 0, 1, 1, 1, 1])  # mistake at 0
    t_scale = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    write_preds(smoke_cfg.out / "teacher" / "dev_predictions.csv", labels, onehot_logits(t_pred, 2, t_scale))
    write_preds(smoke_cfg.out / "students" / "bilstm" / "dev_predictions.csv", labels,
                onehot_logits(s_pred, 2, 2 * t_scale))  # same confidence order as the teacher
    write_preds(smoke_cfg.out / "students" / "bert" / "dev_predictions.csv", labels,
                onehot_logits(b_pred, 2, t_scale[::-1]))  # reversed order
    return smoke_cfg


def test_load_predictions_order_and_missing_teacher(three_models, tmp_path):
    preds = predictions.load_predictions(three_models)
    assert list(preds) == ["teacher", "bert", "bilstm"]
    assert list(predictions.load_predictions(three_models, models=["bilstm", "teacher"])) == ["bilstm", "teacher"]
    with pytest.raises(StageInputError, match="no dev predictions for nope"):
        predictions.load_predictions(three_models, models=["nope"])
    empty = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "empty")})
    with pytest.raises(StageInputError, match="03_teacher"):
        predictions.load_predictions(empty)


def test_confidence_is_softmax_max_and_correlations(three_models):
    preds = predictions.load_predictions(three_models)
    conf = predictions.confidences(preds)
    t = conf[conf["model"] == "teacher"].sort_values("idx")
    # logits (s, 0) → max softmax = 1 / (1 + e^-s)
    np.testing.assert_allclose(t["confidence"], 1 / (1 + np.exp(-np.arange(1, 9))), rtol=1e-9)
    assert t["correct"].tolist() == [True, True, True, False, True, True, True, False]
    corr = predictions.confidence_correlation(conf)
    assert list(corr.columns) == ["teacher", "bert", "bilstm"]
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert corr.loc["teacher", "bilstm"] > 0.9  # same ordering of confidences
    sig = 1 / (1 + np.exp(-np.arange(1.0, 9.0)))
    assert corr.loc["teacher", "bert"] == pytest.approx(np.corrcoef(sig, sig[::-1])[0, 1])  # reversed order
    assert corr.loc["teacher", "bert"] < 0
    assert corr.loc["bert", "teacher"] == pytest.approx(corr.loc["teacher", "bert"])


def test_confidence_by_outcome(three_models):
    conf = predictions.confidences(predictions.load_predictions(three_models))
    stats = predictions.confidence_by_outcome(conf).set_index(["model", "outcome"])
    wrong = 1 / (1 + np.exp(-np.array([4.0, 8.0])))
    assert stats.loc[("teacher", "incorrect"), "n"] == 2
    assert stats.loc[("teacher", "correct"), "n"] == 6
    assert stats.loc[("teacher", "incorrect"), "mean"] == pytest.approx(wrong.mean())
    assert stats.loc[("teacher", "incorrect"), "std"] == pytest.approx(wrong.std())


def test_overlap_of_mistakes_and_hits(three_models):
    preds = predictions.load_predictions(three_models)
    counts = predictions.overlap_matrix(preds, "mistakes", "count")
    assert counts.loc["teacher", "teacher"] == 2 and counts.loc["bilstm", "bilstm"] == 3
    assert counts.loc["teacher", "bilstm"] == 2 and counts.loc["teacher", "bert"] == 0
    jac = predictions.overlap_matrix(preds, "mistakes", "jaccard")
    assert jac.loc["teacher", "bilstm"] == pytest.approx(2 / 3)
    assert jac.loc["bert", "teacher"] == 0.0
    share = predictions.overlap_matrix(preds, "mistakes", "share")
    assert share.loc["teacher", "bilstm"] == 1.0 and share.loc["bilstm", "teacher"] == pytest.approx(2 / 3)
    default = predictions.overlap_matrix(preds, "mistakes")  # the thesis' measure by default
    pd.testing.assert_frame_equal(default, share)
    assert default.loc["teacher", "bilstm"] != default.loc["bilstm", "teacher"]  # asymmetric
    assert np.allclose(np.diag(default.to_numpy()), 1.0)
    hits = predictions.overlap_matrix(preds, "hits", "count")
    assert hits.loc["teacher", "bilstm"] == 5  # both right on 0, 1, 4, 5, 6
    with pytest.raises(ValueError):
        predictions.overlap_matrix(preds, "errors")


def test_mistake_classes_and_confusions(three_models):
    preds = predictions.load_predictions(three_models)
    dist = predictions.mistake_classes(preds, ("unacceptable", "acceptable")).set_index(["model", "label"])
    assert dist.loc[("bilstm", "unacceptable"), "mistakes"] == 2
    assert dist.loc[("bilstm", "acceptable"), "mistakes"] == 1
    assert dist.loc[("bilstm", "unacceptable"), "share"] == pytest.approx(2 / 3)
    assert dist.loc[("bilstm", "unacceptable"), "error_rate"] == pytest.approx(2 / 4)
    conf = predictions.confusions(preds, ("unacceptable", "acceptable"))
    top = conf[conf["model"] == "bilstm"].iloc[0]
    assert (top["label"], top["predicted"], top["count"]) == ("unacceptable", "acceptable", 2)


def test_bad_prediction_files(three_models):
    path = three_models.out / "students" / "bilstm" / "dev_predictions.csv"
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:3] + ["x" + text[3]] + text[4:]) + "\n")
    with pytest.raises(DataError, match=r"line 4: column 'idx'"):
        predictions.load_predictions(three_models)
    df = pd.read_csv(three_models.out / "teacher" / "dev_predictions.csv")
    df.loc[2, "prediction"] = 1 - df.loc[2, "prediction"]
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="line 4: prediction .* arg-max"):
        predictions.load_predictions(three_models)
    df = pd.read_csv(three_models.out / "teacher" / "dev_predictions.csv").iloc[:-1]
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="idx values differ"):
        predictions.load_predictions(three_models)


def test_sara_intents_in_mistake_figure(tmp_path):
    cfg = load_config("sara", "smoke", overrides={"output_dir": str(tmp_path / "out"),
                                                   "figures_dir": str(tmp_path / "fig")})
    names = predictions.label_names(cfg)
    assert len(names) == 57 and "enter_data" in names
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 57, 200)
    for where in ("teacher", "students/bilstm"):
        pred = np.where(rng.random(200) < 0.8, labels, rng.integers(0, 57, 200))
        write_preds(cfg.out / where / "dev_predictions.csv", labels, onehot_logits(pred, 57, 3.0))
    preds = predictions.load_predictions(cfg)
    dist = predictions.mistake_classes(preds, names)
    assert set(dist["label"]) <= set(names)
    assert dist.groupby("model")["share"].sum().round(6).tolist() == [1.0, 1.0]
    fig = figures.plot_mistake_classes(dist, cfg.task)
    ticks = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert ticks == set(dist["label"])
    assert fig.axes[0].get_xlabel() == "share of the model's mistakes"
    png = report.save_figure(cfg, fig, "mistake_classes")
    assert png.name == "sara_mistake_classes.png" and png.with_suffix(".pdf").is_file()


def test_analysis_figures(three_models):
    assert matplotlib.get_backend().lower() == "agg"
    preds = predictions.load_predictions(three_models)
    conf = predictions.confidences(preds)
    fig = figures.plot_confidence_correlation(predictions.confidence_correlation(conf), "cola")
    assert fig.axes[0].get_title() == "cola: correlation of confidences (dev)"
    fig = figures.plot_average_confidence(predictions.confidence_by_outcome(conf), "cola")
    assert len(fig.axes[0].patches) >= 6 and "confidence" in fig.axes[0].get_ylabel()
    fig = figures.plot_overlap(predictions.overlap_matrix(preds), "cola", "mistakes")
    assert "mistakes" in fig.axes[0].get_title() and "model 1" in fig.axes[0].get_ylabel()
    df = pd.DataFrame({"width": [0.5, 1, 0.5, 1], "emb": ["a", "a", "b", "b"], "score": [1, 2, 3, 4.0]})
    fig = figures.plot_size_map(df, "width", "emb", "score", "cola", "map")
    assert fig.axes[0].get_xlabel() == "width"


def test_thesis_reference_and_results_table(smoke_cfg):
    sara = report.thesis_reference("sara", "teacher")
    assert (sara["dev"], sara["test"], sara["params_m"], sara["type"]) == (87.5, 88.3, 340.0, "teacher")
    # the thesis' test scores (published version), BERT student / BiLSTM / teacher
    for task, bert, bilstm, teacher in (("cola", 29.8, 27.9, 54.6), ("sst2", 87.8, 92.2, 93.1),
                                        ("sara", 86.4, 86.4, 88.3)):
        assert report.thesis_reference(task, "bert_student")["test"] == bert
        assert report.thesis_reference(task, "bilstm")["test"] == bilstm
        assert report.thesis_reference(task, "teacher")["test"] == teacher
        for r in report.THESIS_REFERENCE[task].values():
            assert r["dev_version"] in report.THESIS_VERSIONS and r["test_version"] in report.THESIS_VERSIONS
    assert report.thesis_reference("sst2", "bilstm_kl")["dev"] == 91.2
    assert report.thesis_reference("cola", "bert")["params_m"] == 76.4
    assert report.thesis_reference("rte", "teacher") == {}
    for task in ("cola", "sst2", "sara"):
        t = report.thesis_table(task)
        assert list(t["model"]) == ["teacher", "bert_student", "bilstm"]
        assert (t["thesis dev (%)"] <= t.loc[0, "thesis dev (%)"]).all()  # no student beats its teacher
    fake_run(smoke_cfg, "teacher", "teacher", n_params=22_000_000, dev_score=0.5)
    fake_run(smoke_cfg, "bilstm", "bilstm", n_params=2_000_000, dev_score=0.4)
    fake_run(smoke_cfg, "bert_student", "bert_student", n_params=17_600_000, dev_score=0.45,
             n_params_non_embedding=5_500_000)
    res = report.results_table(smoke_cfg).set_index("model")
    assert res.loc["bilstm", "thesis dev (%)"] == 44.2 and res.loc["bilstm", "retention (%)"] == 80.0
    # like with like: each row beside the thesis' row of the same student type, sizes compared
    assert "BiLSTM" in res.loc["bilstm", "thesis model"] and "BERT student" in res.loc["bert_student", "thesis model"]
    assert res.loc["bert_student", "thesis test (%)"] == 29.8 and res.loc["bilstm", "thesis test (%)"] == 27.9
    assert res.loc["bert_student", "size vs thesis"] == f"{5.5 / 76.4:.2g}×"
    assert "published report" in res.loc["bert_student", "thesis version"]
    assert report.thesis_reference("cola", "peakd-1L-kd-s42") == {}  # no counterpart in the thesis


def test_runtimes_table(smoke_cfg):
    for stage, sec in (("teacher_fine_tuning", 120), ("teacher_logits", 6), ("bilstm_training", 30),
                       ("bilstm_kl_training", 10), ("notebook 03_teacher", 130), ("data_prep", 1),
                       ("augment_rules", 3), ("augment_gpt2", 50), ("augmentation_ablation", 70)):
        store.record_time(smoke_cfg, stage, sec)
    rt = report.runtimes_table(smoke_cfg).set_index("stage")
    assert rt.loc["teacher fine-tuning", "seconds"] == 120
    assert rt.loc["BiLSTM student training", "seconds"] == 40  # both BiLSTM runs
    assert rt.loc["BiLSTM student training", "thesis (GPU)"] == "~5 h"
    assert pd.isna(rt.loc["BERT student training", "seconds"])
    assert list(rt.index)[-1] == "notebook 03_teacher" and "data_prep" in rt.index
    assert rt.loc["augmentation (GPT-2 sampling)", "recorded as"] == "augment_gpt2"
    assert rt.loc["augmentation (rules, Tang et al. 2019)", "seconds"] == 3
    assert rt.loc["augmentation_ablation", "seconds"] == 70  # not counted as augmentation or training


def test_write_html_report(smoke_cfg):
    with pytest.raises(StageInputError, match="no executed notebooks"):
        report.write_html_report(smoke_cfg)
    fig_path = smoke_cfg.figure_path("teacher_learning_curve")
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig_path.write_bytes(PNG)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('task = "cola"  # PARAMCELL')
    params.metadata["tags"] = ["parameters"]
    code = nbformat.v4.new_code_cell("secret_code_line = 1")
    code.outputs = [nbformat.v4.new_output("stream", name="stderr", text="PROGRESSBAR 50%"),
                    nbformat.v4.new_output("stream", name="stdout", text="dev MCC: 42.0 %"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": f"PosixPath('{fig_path}')"},
                                           execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# 03 · Teacher"), params, code]
    (smoke_cfg.out / "notebooks").mkdir(parents=True)
    nbformat.write(nb, smoke_cfg.out / "notebooks" / "03_teacher.ipynb")
    nb.cells[0] = nbformat.v4.new_markdown_cell("# 01 · Data")
    nbformat.write(nb, smoke_cfg.out / "notebooks" / "01_data_prep.ipynb")
    report.save_table(smoke_cfg, pd.DataFrame({"model": ["teacher"], "dev MCC (%)": [42.0]}), "results")

    path = report.write_html_report(smoke_cfg)
    html = path.read_text()
    assert path == smoke_cfg.out / "report.html"
    i_results, i_01, i_03 = html.index("Results"), html.index("01 · Data"), html.index("03 · Teacher")
    assert i_results < i_01 < i_03  # tables first, then the notebooks in order
    assert "dev MCC: 42.0 %" in html
    assert base64.b64encode(PNG).decode() in html  # the saved figure is embedded
    assert "PROGRESSBAR" not in html and "PARAMCELL" not in html
    assert "<details><summary>code</summary>" in html and "secret_code_line" in html  # folded code


def test_analysis_config_validation():
    cfg = load_config("cola", "smoke")
    assert cfg.analysis.bench_batch_size == 32 and cfg.analysis.bench_bert_large is False
    assert load_config("cola", "cpu").analysis.bench_batch_size == 256
    with pytest.raises(ConfigError, match="analysis.bench_repeats"):
        load_config("cola", "smoke", overrides={"analysis.bench_repeats": 0})
    with pytest.raises(ConfigError, match="analysis.bench_sentences"):
        load_config("cola", "smoke", overrides={"analysis.bench_sentences": "sst2"})
    with pytest.raises(ConfigError, match="unknown key 'analysis.nope'"):
        load_config("cola", "smoke", overrides={"analysis.nope": 1})


def test_html_report_appends_figures_no_cell_showed(smoke_cfg):
    shown = smoke_cfg.figure_path("shown")
    hidden = smoke_cfg.figure_path("hidden")
    shown.parent.mkdir(parents=True, exist_ok=True)
    shown.write_bytes(PNG)
    hidden.write_bytes(PNG + b"\0")  # another file content, to tell them apart
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("x")
    code.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": f"PosixPath('{shown}')"},
                                           execution_count=1)]
    nb.cells = [code]
    (smoke_cfg.out / "notebooks").mkdir(parents=True)
    nbformat.write(nb, smoke_cfg.out / "notebooks" / "06_analysis.ipynb")
    html = report.write_html_report(smoke_cfg).read_text()
    assert html.count(base64.b64encode(PNG).decode()) == 1  # shown once, where the cell showed it
    assert html.count(base64.b64encode(PNG + b"\0").decode()) == 1  # the other one, appended
    assert html.index("Other figures") < html.index("cola_hidden.png")
    assert "cola_shown.png" not in html[html.index("Other figures"):]


def test_optuna_exploration_is_resumable(tmp_path):
    cfg, transfer, dsd = _optuna_stand_in(tmp_path, **{"analysis.optuna_epochs": 1, "bilstm.batch_size": 16})

    study = explore.explore_bilstm(cfg, transfer, dsd, n_trials=1)
    assert explore.study_path(cfg).is_file()
    assert (cfg.out / "optuna" / "trial-000" / "result.json").is_file()
    assert not (cfg.out / "optuna" / "trial-000" / "model.pt").exists()
    assert not (cfg.out / "students" / "bilstm").exists()  # trials stay out of the students' folder
    assert len(explore.explore_bilstm(cfg, transfer, dsd, n_trials=1).trials) == 1  # resumed: nothing to do
    table = explore.study_table(explore.explore_bilstm(cfg, transfer, dsd, n_trials=2))  # one more trial
    assert len(table) == 2 and set(table["trial"]) == {0, 1}
    assert set(table["width"]) <= set(explore.WIDTHS)
    assert table["best dev"].is_monotonic_decreasing
    assert {"learning_rate", "batch_size", "embedding", "embedding_mode", "parameters (M)"} <= set(table.columns)


def test_embedding_type_by_mode_exploration_is_resumable(tmp_path):
    # the thesis' BiLSTM embedding exploration: word2vec (gensim, trained on the transfer set) vs
    # the teacher's WordPiece embeddings × Kim's (2014) modes
    cfg, transfer, dsd = _optuna_stand_in(tmp_path, **{"bilstm.batch_size": 16, "bilstm.word2vec.vector_size": 16,
                                                       "bilstm.word2vec.epochs": 1})
    modes = ("static", "multichannel")
    table = explore.explore_embeddings(cfg, transfer, dsd, modes=modes, epochs=1)
    assert list(zip(table["embedding"], table["mode"])) == [(e, m) for e in explore.EMBEDDINGS for m in modes]
    assert table["best dev"].between(-1, 1).all() and (table["best dev"] >= table["final dev"] - 1e-9).all()
    size = table.set_index(["embedding", "mode"])["parameters"]
    assert size[("word2vec", "static")] < size[("teacher_wordpiece", "static")]  # a word vocabulary, 16-d
    assert size[("word2vec", "multichannel")] > size[("word2vec", "static")]      # the second, trained copy
    for e in explore.EMBEDDINGS:
        assert (cfg.out / "explore" / f"embeddings-{e}-static" / "result.json").is_file()
    assert not (cfg.out / "students" / "bilstm").exists()
    again = explore.explore_embeddings(cfg, transfer, dsd, modes=modes, epochs=1)  # resumed: all reused
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(ConfigError, match="explore_embeddings"):
        explore.explore_embeddings(cfg, transfer, dsd, modes=("frozen",))
    fig = figures.plot_embedding_modes(table.assign(**{"best dev (%)": 100 * table["best dev"]}), "cola")
    assert len(fig.axes[0].patches) >= 4
    explore_cfgs = {t: load_config(t, "explore") for t in ("cola", "sst2")}
    assert all(c.analysis.explore_embeddings and c.analysis.optuna_trials > 0 and c.analysis.optuna_bert_trials > 0
               for c in explore_cfgs.values())
    assert not load_config("cola", "cpu").analysis.explore_embeddings


def test_exploration_trains_on_a_fixed_random_subset_of_the_transfer_set(monkeypatch):
    import datasets

    import kdnb.augment

    transfer = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(100)], "label": [i % 2 for i in range(100)]})
    monkeypatch.setattr(kdnb.augment, "load_transfer_set", lambda cfg, name=None: transfer)
    cfg = load_config("cola", "smoke", overrides={"analysis.explore_rows": 30})
    rows = explore.exploration_set(cfg)
    assert len(rows) == 30 and len(set(rows["sentence"])) == 30
    assert rows["sentence"] != transfer["sentence"][:30]                      # drawn at random, not the first rows
    assert explore.exploration_set(cfg)["sentence"] == rows["sentence"]       # the same rows every time
    assert explore.exploration_set(cfg.with_seed(43))["sentence"] != rows["sentence"]
    assert len(explore.exploration_set(load_config("cola", "smoke"))) == 100  # None: the whole set
    assert len(explore.exploration_set(load_config("cola", "smoke", overrides={"analysis.explore_rows": 500}))) == 100
    with pytest.raises(ConfigError, match="analysis.explore_rows"):
        load_config("cola", "smoke", overrides={"analysis.explore_rows": 0})


def _optuna_stand_in(tmp_path, **overrides):
    """Smoke config under ``tmp_path``, the packaged BERT (untrained head) as the teacher, 64 dev
    sentences and a transfer set of 32 training sentences with random teacher logits."""
    import datasets
    from transformers import AutoModelForSequenceClassification

    from kdnb.data import load_task
    from kdnb.models.teacher import load_tokenizer, resolve_model_path
    from kdnb.utils import write_json

    cfg = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out"),
                                                "figures_dir": str(tmp_path / "figs"), **overrides})
    tdir = cfg.out / "teacher" / "model"
    AutoModelForSequenceClassification.from_pretrained(resolve_model_path(cfg.teacher.model_name_or_path),
                                                       num_labels=2).save_pretrained(tdir)
    load_tokenizer(cfg).save_pretrained(tdir)
    write_json(cfg.out / "teacher" / "result.json", {"config_hash": "test"})
    dsd = load_task("cola", cfg.data_path)
    dsd["dev"] = dsd["dev"].select(range(64))
    rng = np.random.default_rng(0)
    transfer = dsd["train"].select(range(32))
    transfer = transfer.add_column("teacher_logits", rng.normal(size=(32, 2)).astype("float32").tolist(),
                                   feature=datasets.Sequence(datasets.Value("float32")))
    return cfg, transfer, dsd


def test_bert_student_size_rules():
    assert [explore.bert_num_heads(h) for h in (32, 64, 96, 204, 384, 768)] == [1, 1, 2, 3, 6, 12]
    assert explore.bert_intermediate_size(204) == 750 and explore.bert_intermediate_size(96) == 353
    with pytest.raises(ConfigError, match="analysis.optuna_bert_trials"):
        load_config("cola", "smoke", overrides={"analysis.optuna_bert_trials": -1})
    with pytest.raises(ConfigError, match="analysis.optuna_bert_widths"):
        load_config("cola", "smoke", overrides={"analysis.optuna_bert_widths": [64, 0]})


def test_bert_student_size_exploration_is_resumable(tmp_path):
    from kdnb.utils import read_json

    cfg, transfer, dsd = _optuna_stand_in(tmp_path, **{"analysis.optuna_epochs": 1, "bert_student.batch_size": 16})
    assert cfg.analysis.optuna_bert_trials == 2  # the smoke profile's budget, what notebook 06 runs
    assert cfg.analysis.optuna_bert_widths == [32, 64] and cfg.analysis.optuna_bert_max_layers == 2
    study = explore.explore_bert_student(cfg, transfer, dsd)
    assert study.study_name == "bert_student-cola-L2-H32-64"
    assert len(study.trials) == 2
    for t in study.trials:
        tdir = cfg.out / "optuna" / f"bert_student-L2-H32-64-trial-{t.number:03d}"
        sizes = read_json(tdir / "result.json")["sizes"]
        h, heads = t.params["hidden_size"], explore.bert_num_heads(t.params["hidden_size"])
        assert sizes == {"num_layers": t.params["num_layers"], "hidden_size": h, "num_heads": heads,
                         "intermediate_size": explore.bert_intermediate_size(h)}
        assert 1e-4 <= t.params["learning_rate"] <= 2e-3
        assert (tdir / "learning_curve.csv").is_file() and not (tdir / "model.pt").exists()
        assert t.value == pytest.approx(pd.read_csv(tdir / "learning_curve.csv")["dev_score"].max())
    assert not (cfg.out / "students" / "bert_student").exists()  # trials stay out of the students' folder
    again = explore.explore_bert_student(cfg, transfer, dsd, n_trials=2)  # resumed: nothing to do
    assert [t.datetime_start for t in again.trials] == [t.datetime_start for t in study.trials]
    table = explore.study_table(again)
    assert {"num_layers", "hidden_size", "learning_rate", "best dev", "parameters (M)", "non-embedding (M)",
            "seconds"} <= set(table.columns)
    assert set(table["trial"]) == {0, 1} and table["best dev"].is_monotonic_decreasing
    assert set(table["num_layers"]) <= {1, 2} and set(table["hidden_size"]) <= {32, 64}
    rows = table.to_dict("records")
    for a in rows:  # a student at least as deep and as wide has more non-embedding parameters
        for b in rows:
            if a["num_layers"] >= b["num_layers"] and a["hidden_size"] >= b["hidden_size"] and \
                    (a["num_layers"], a["hidden_size"]) != (b["num_layers"], b["hidden_size"]):
                assert a["non-embedding (M)"] > b["non-embedding (M)"]

    table["best dev (%)"] = 100 * table["best dev"]
    fig = figures.plot_size_map(table, "hidden_size", "num_layers", "best dev (%)", "cola", "size map")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(h) for h in sorted(set(table["hidden_size"]))]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(n) for n in sorted(set(table["num_layers"]))]
    cells = {(int(r.num_layers), int(r.hidden_size)) for r in table.itertuples()}
    assert len(ax.texts) == len(cells)  # one annotated cell per explored (layers, width)
    assert ax.get_xlabel() == "hidden_size" and ax.get_ylabel() == "num_layers"


def test_bert_student_exploration_with_teacher_init_samples_depth_only(tmp_path):
    cfg, transfer, dsd = _optuna_stand_in(tmp_path, **{"analysis.optuna_epochs": 1, "bert_student.batch_size": 16,
                                                       "bert_student.init": "teacher"})
    study = explore.explore_bert_student(cfg, transfer, dsd, n_trials=1)
    assert study.study_name == "bert_student-cola-L2-H384-init-teacher"  # the teacher's width, its own study
    (trial,) = study.trials
    assert trial.params["hidden_size"] == 384 and trial.params["num_layers"] in (1, 2)
    assert trial.distributions["hidden_size"].choices == (384,)


def test_size_map_trials_runs_the_study_on_notebook_04s_transfer_set(tmp_path, monkeypatch):
    """Notebook 06's size-map tables: the study of the named student on the saved transfer set,
    with the map's axes and ``best dev (%)``; nothing is loaded or run when its trial budget is 0."""
    from kdnb import augment, data

    cfg, transfer, dsd = _optuna_stand_in(tmp_path, **{"analysis.optuna_epochs": 1, "bilstm.batch_size": 16,
                                                       "analysis.optuna_trials": 1})
    monkeypatch.setattr(augment, "load_transfer_set", lambda c: transfer)
    monkeypatch.setattr(data, "load_task", lambda task, path: dsd)
    table, png = explore.size_map(cfg, "bilstm")  # the trials, saved as a table and drawn
    assert png == cfg.figure_path("bilstm_size_map", "png") and png.is_file()
    assert pd.read_csv(cfg.out / "optuna_trials.csv")["best dev"].tolist() == pytest.approx(table["best dev"].tolist())
    assert len(table) == 1 and table["best dev (%)"].iloc[0] == pytest.approx(100 * table["best dev"].iloc[0])
    assert table["embedding"].iloc[0] in {f"{e}, {m}" for e in ("teacher_wordpiece", "random")
                                          for m in ("non-static", "multichannel")}
    m = explore.SIZE_MAPS["bilstm"]
    assert {m["x"], m["y"]} <= set(table.columns)
    off = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "off"), "analysis.optuna_trials": 0})
    monkeypatch.setattr(augment, "load_transfer_set", lambda c: pytest.fail("loaded with no trials asked"))
    assert explore.size_map_trials(off, "bilstm").empty
    assert explore.size_map(off, "bilstm")[1] is None and not (off.out / "optuna_trials.csv").exists()
    with pytest.raises(ValueError, match="unknown student 'lstm'"):
        explore.size_map_trials(cfg, "lstm")
