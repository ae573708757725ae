"""kdnb.report: stage times of reused stages, and `make thesis`'s collection of every task."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kdnb import report  # noqa: E402
from kdnb.config import load_config  # noqa: E402


def _cfg(task, tmp_path):
    return load_config(task, "smoke", overrides={"output_dir": str(tmp_path / "out" / "{task}"),
                                                 "figures_dir": str(tmp_path / "figs")})


def test_a_reused_stage_keeps_the_time_of_the_run_that_made_it(tmp_path):
    cfg = _cfg("cola", tmp_path)
    report.record_stage(cfg, "teacher_logits", 0.01, reused=True)  # nothing recorded yet: stored
    assert report.load_metrics(cfg)["stages_seconds"]["teacher_logits"] == 0.01
    report.record_stage(cfg, "teacher_logits", 30.0)
    report.record_stage(cfg, "teacher_logits", 0.02, reused=True)
    assert report.load_metrics(cfg)["stages_seconds"]["teacher_logits"] == 30.0


def test_collect_thesis_writes_every_task_and_its_figures(tmp_path, monkeypatch):
    import kdnb.config as kc

    monkeypatch.setattr(kc, "load_config", lambda task, profile, overrides=None: _cfg(task, tmp_path))
    with pytest.raises(FileNotFoundError, match=r"sara .*metrics.json.*make report TASK=sara"):
        report.collect_thesis(["cola", "sara"], "smoke")
    for task, dev in (("cola", 0.3), ("sara", 0.8)):
        cfg = _cfg(task, tmp_path)
        report.record_model(cfg, "teacher", n_params=2_000_000, dev=dev)
        report.record_model(cfg, "bilstm", n_params=1_000_000, dev=dev / 2)
        report.record_stage(cfg, "teacher_fine_tuning", 60.0)
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
