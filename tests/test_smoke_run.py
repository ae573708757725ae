"""A small smoke-profile pipeline run (notebooks 03, 04, 06; no augmentation) in fresh processes: every
reported score equals the metric recomputed with scikit-learn from the model's saved
predictions; the same seed writes the same metrics.json; another seed trains other students."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdnb.config import PROJECT_ROOT
from kdnb.data import task_spec
from kdnb.stages import select
from kdnb.store_notebooks import QUIET, smoke_task

TASK = smoke_task()  # the task of the stored notebooks (their parameters cell)
SMALL = ["train_limit=64", "augment.transfer_set=none", "augment.ablation=false", "kd_ablation.enabled=false", "probing.enabled=false",
         "analysis.optuna_trials=0", "analysis.optuna_bert_trials=0", "analysis.bench=false", "bilstm.epochs=1",
         "bert_student.epochs=1"]
SKLEARN = {"mcc": matthews_corrcoef, "accuracy": accuracy_score,
           "micro_f1": lambda y, p: f1_score(y, p, average="micro")}


def _start(out: Path, *sets: str, only=("03", "04", "06")) -> subprocess.Popen:
    """The smoke pipeline into ``out`` in a fresh process with one torch thread (identical floats
    need the same thread count; two such runs share the 2 cores of the CI machine)."""
    env = {**os.environ, **QUIET, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(out.parent / f"{out.name}.stderr", "w")  # a file, not a pipe: neither run waits on the other's reader
    proc = subprocess.Popen([sys.executable, "-m", "kdnb.pipeline", "--task", TASK, "--profile", "smoke",
                             "--only", *only, "--set", f"output_dir={out}", f"figures_dir={out / 'fig'}", *SMALL, *sets],
                            env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen) -> None:
    proc.wait(timeout=1200)
    proc.log.close()
    assert proc.returncode == 0, open(proc.log.name).read()[-3000:]


def _pipeline(out: Path, *sets: str, only=("03", "04", "06")) -> None:
    _finish(_start(out, *sets, only=only))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    procs = [_start(root / "a"), _start(root / "b")]  # side by side: the same seed in two fresh processes
    for proc in procs:
        _finish(proc)
    return root


def test_executed_notebooks_carry_no_progress_bars(runs):
    executed = (runs / "a" / "notebooks" / "04_students.ipynb").read_text()
    assert "it/s]" not in executed and "IProgress not found" not in executed  # no progress-bar streams kept


def test_every_notebook_of_a_run_reads_the_runs_saved_config(runs):
    import nbformat

    for path in sorted((runs / "a" / "notebooks").glob("*.ipynb")):
        injected = next(c for c in nbformat.read(path, as_version=4).cells
                        if "injected-parameters" in c.metadata.get("tags", []))
        assert f'config = "{runs / "a" / "config.yaml"}"' in injected.source, path.name


def _model_dir(out: Path, name: str) -> Path:
    return out / "teacher" if name == "teacher" else out / "students" / name


def _without_times(m):
    if isinstance(m, dict):
        return {k: _without_times(v) for k, v in m.items() if "seconds" not in k}
    return m


def test_reported_scores_equal_sklearn_on_the_saved_predictions(runs):
    out = runs / "a"
    metrics = json.loads((out / "metrics.json").read_text())
    results = pd.read_csv(out / "results.csv").set_index("model")
    metric = SKLEARN[task_spec(TASK).metric]
    label = task_spec(TASK).metric_label
    assert {"teacher", "bilstm", "bert_student"} <= set(metrics["models"]), metrics["models"].keys()
    checked = 0
    for name, entry in metrics["models"].items():
        for split in ("dev", "test"):
            preds = _model_dir(out, name) / f"{split}_predictions.csv"
            if entry[split] is None:
                continue
            assert preds.is_file(), f"{name}: a {split} score without {preds}"
            df = pd.read_csv(preds)
            logits = df.filter(like="logit_").to_numpy()
            assert (df["prediction"].to_numpy() == logits.argmax(-1)).all()
            recomputed = float(metric(df["label"], df["prediction"]))
            assert entry[split] == pytest.approx(recomputed, abs=1e-12), (name, split)
            assert results.loc[name, f"{split} {label} (%)"] == round(100 * recomputed, 1), (name, split)
            checked += 1
    assert checked >= 3


def test_the_stages_run_write_their_declared_products(runs):
    for stage in select(["03", "04", "06"]):
        for product in stage.products:
            assert (runs / "a" / product).exists(), f"stage {stage.name}: {product}"


def test_the_same_seed_in_fresh_processes_writes_identical_metrics(runs):
    a, b = (json.loads((runs / r / "metrics.json").read_text()) for r in ("a", "b"))
    assert _without_times(a) == _without_times(b)
    for name in a["models"]:
        for f in ("dev_predictions.csv", "learning_curve.csv"):
            if (_model_dir(runs / "a", name) / f).exists():
                assert (_model_dir(runs / "a", name) / f).read_text() == (_model_dir(runs / "b", name) / f).read_text()


def test_another_seed_trains_other_student_weights(runs):
    c = runs / "c"
    shutil.copytree(runs / "a", c)  # the same teacher and transfer set; the students retrain with seed 43
    _pipeline(c, "seed=43", only=("04",))
    for f in ("students/bilstm/model.pt", "students/bert_student/model.pt"):
        wa = torch.load(runs / "a" / f, map_location="cpu", weights_only=True)
        wc = torch.load(c / f, map_location="cpu", weights_only=True)
        assert wa.keys() == wc.keys() and any(not torch.equal(wa[k], wc[k]) for k in wa), f
    ma, mc = (json.loads((r / "metrics.json").read_text())["models"] for r in (runs / "a", c))
    assert mc["teacher"] == ma["teacher"] and np.isfinite(mc["bilstm"]["dev"])
