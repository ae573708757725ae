"""kdnb.report: metrics.json from the run store, stage times of reused stages, and `make thesis`'s
collection of every task."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kdnb import report, store  # noqa: E402
from kdnb.config import load_config  # noqa: E402

from .conftest import fake_run  # noqa: E402


def _cfg(task, tmp_path, **over):
    return load_config(task, "smoke", overrides={"output_dir": str(tmp_path / "out" / "{task}"),
                                                 "figures_dir": str(tmp_path / "figs"), **over})


def test_a_reused_stage_keeps_the_time_of_the_run_that_made_it(tmp_path):
    cfg = _cfg("cola", tmp_path)
    store.record_time(cfg, "teacher_logits", 0.01, reused=True)  # nothing recorded yet: stored
    assert report.metrics(cfg)["stages_seconds"]["teacher_logits"] == 0.01
    store.record_time(cfg, "teacher_logits", 30.0)
    store.record_time(cfg, "teacher_logits", 0.02, reused=True)
    assert report.metrics(cfg)["stages_seconds"]["teacher_logits"] == 30.0


def test_timed_stage_functions_log_their_time_only_when_they_return(tmp_path):
    cfg = _cfg("cola", tmp_path)

    @store.timed("my_stage")
    def stage(cfg, fail=False):
        if fail:
            raise RuntimeError("boom")
        return 7

    with pytest.raises(RuntimeError):
        stage(cfg, fail=True)
    assert store.stage_times(cfg) == {}
    assert stage(cfg) == 7 and set(store.stage_times(cfg)) == {"my_stage"}

    from types import SimpleNamespace

    store.record_time(cfg, "loaded", 40.0)

    @store.timed("loaded")
    def reload(cfg):
        return SimpleNamespace(reused=True)  # only loaded what a run before made

    reload(cfg)
    assert store.stage_times(cfg)["loaded"] == 40.0


def test_metrics_are_built_from_the_store(tmp_path):
    """metrics.json holds the study's finished, enabled models from their result.json, the teacher
    first, with the students' labels from the config; nothing is recorded by hand."""
    cfg = _cfg("cola", tmp_path)
    assert report.metrics(cfg)["models"] == {}
    with pytest.raises(FileNotFoundError, match="no fine-tuned teacher; run notebook 03"):
        report.teacher_dev(cfg)
    fake_run(cfg, "bert_student", "bert_student", dev_score=0.2, n_params=9, n_params_non_embedding=4,
             transfer_set_size=123, seconds=5.0)
    fake_run(cfg, "teacher", "teacher", dev_score=0.5, n_params=100, test_score=0.4, dev_last=0.45, best_epoch=2.0)
    fake_run(cfg, "bilstm_rules", "bilstm", dev_score=0.9)  # an ablation's student: not a model of the study
    m = report.write_metrics(cfg)
    assert report.teacher_dev(cfg) == 0.5
    assert list(m["models"]) == ["teacher", "bert_student"]
    t, b = m["models"]["teacher"], m["models"]["bert_student"]
    assert (t["dev"], t["test"], t["dev_last"], t["best_epoch"], t["retention"]) == (0.5, 0.4, 0.45, 2.0, 1.0)
    assert t["model"] == cfg.teacher.model_name_or_path
    assert b["retention"] == pytest.approx(0.4) and b["n_params_non_embedding"] == 4 and b["transfer_rows"] == 123
    assert b["seeds"]["seeds"] == [cfg.seed] and b["loss"].endswith(f"T={cfg.bert_student.temperature:g}")
    assert m["stages_seconds"]["bert_student_training"] == 5.0
    assert report.metrics(_cfg("cola", tmp_path, **{"bert_student.enabled": False}))["models"].keys() == {"teacher"}


def test_collect_thesis_writes_every_task_and_its_figures(tmp_path, monkeypatch):
    import kdnb.config as kc

    monkeypatch.setattr(kc, "load_config", lambda task, profile, overrides=None: _cfg(task, tmp_path))
    with pytest.raises(FileNotFoundError, match=r"sara .*metrics.json.*make report TASK=sara"):
        report.collect_thesis(["cola", "sara"], "smoke")
    for task, dev in (("cola", 0.3), ("sara", 0.8)):
        cfg = _cfg(task, tmp_path)
        fake_run(cfg, "teacher", "teacher", n_params=2_000_000, dev_score=dev, seconds=60.0)
        fake_run(cfg, "bilstm", "bilstm", n_params=1_000_000, dev_score=dev / 2)
        report.write_metrics(cfg)
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        report.save_figure(cfg, fig, "learning_curve")
        plt.close(fig)
    index = report.collect_thesis(["cola", "sara"], "smoke")
    text = index.read_text()
    assert "## cola" in text and "## sara" in text and "[learning_curve](sara_learning_curve.png)" in text
    assert "| teacher | 2.0 | 80.0 |" in text  # Sara's row: parameters (M), dev micro-F1 (%)
    res = pd.read_csv(index.parent / "results.csv")
    assert res.groupby("task").size().to_dict() == {"cola": 2, "sara": 2}
    assert res.loc[(res.task == "sara") & (res.model == "bilstm"), "retention (%)"].item() == 50.0


def test_seed_runs_are_recorded_with_mean_std_and_retention(tmp_path):
    from types import SimpleNamespace

    from kdnb.training.runs import SeedRuns

    cfg = _cfg("cola", tmp_path, seeds=[42, 43, 44], seed=42)
    fake_run(cfg, "teacher", "teacher", n_params=10, dev_score=0.40)
    runs = {s: SimpleNamespace(dev_score=d, dev_last=d - 0.05, test_score=None, best_epoch=2.0)
            for s, d in ((42, 0.30), (43, 0.20), (44, 0.25))}
    sr = SeedRuns(name="bilstm", runs=runs, main=runs[42])
    for s, r in runs.items():
        fake_run(cfg, "bilstm" if s == 42 else f"bilstm-seed{s}", "bilstm", n_params=5, **vars(r))
    e = report.metrics(cfg)["models"]["bilstm"]
    assert e["dev_last"] == pytest.approx(0.25) and e["best_epoch"] == 2.0
    assert e["seeds"]["seeds"] == [42, 43, 44] and e["seeds"]["dev_mean"] == pytest.approx(0.25)
    assert e["seeds"]["dev_std"] == pytest.approx(0.05)  # sample std of 0.30, 0.20, 0.25
    assert e["seeds"]["retention_mean"] == pytest.approx(0.625) and e["seeds"]["test_mean"] is None
    row = report.results_table(cfg).set_index("model").loc["bilstm"]
    assert (row["seeds"], row["dev MCC mean (%)"], row["dev MCC std (%)"]) == (3, 25.0, 5.0)
    assert (row["retention mean (%)"], row["retention (%)"], row["dev MCC, last epoch (%)"]) == (62.5, 75.0, 25.0)
    assert "3 seeds (42: 30.0, 43: 20.0, 44: 25.0): dev 25.0 ± 5.0 %; retention 62.5 ± 12.5 %" == \
        report.seed_line(sr, 0.40)
    one = SeedRuns(name="bilstm", runs={42: runs[42]}, main=runs[42])
    assert report.seed_line(one, 0.4).startswith("one seed (42)") and one.summary()["dev_std"] == 0.0
