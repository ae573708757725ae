"""The run store (kdnb.store): keys, reuse, records and manifests of trained models."""

from __future__ import annotations

import pandas as pd
import pytest

from kdnb import store
from kdnb.config import load_config
from kdnb.utils import read_json


@pytest.fixture
def cfg(tmp_path):
    return load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out")})


def _train(run: store.Run, dev: float) -> store.RunResult:
    """What a stage does after training: model, curve, then the record last."""
    run.dir.mkdir(parents=True, exist_ok=True)
    (run.dir / "model.pt").write_bytes(b"weights")
    pd.DataFrame({"epoch": [1.0, 2.0], "dev_score": [dev / 2, dev]}).to_csv(run.dir / "learning_curve.csv", index=False)
    return run.finish({"dev_score": dev, "test_score": None, "n_params": 10, "seconds": 1.5})


def test_a_finished_run_is_reused_only_under_its_key(cfg):
    run = store.Run("bilstm", "bilstm", store.run_dir(cfg, "bilstm"), key="k1")
    assert run.saved() is None                                        # nothing on disk yet
    fresh = _train(run, 0.4)
    assert not fresh.reused and fresh.dev_score == 0.4 and list(fresh.curve["dev_score"]) == [0.2, 0.4]
    again = run.saved()
    assert again.reused and again.record == fresh.record and again.record["config_hash"] == "k1"
    assert run.saved(force=True) is None                              # force redoes it
    assert store.Run("bilstm", "bilstm", run.dir, key="k2").saved() is None  # other parameters
    (run.dir / "model.pt").unlink()
    assert run.saved() is None                                        # a record without its model


def test_the_manifest_names_kind_key_and_loader_and_bench_finds_students_by_it(cfg):
    _train(store.Run("bilstm", "bilstm", store.run_dir(cfg, "bilstm"), "a"), 0.3)
    _train(store.Run("peakd", "peakd-3L-kd-s42", store.run_dir(cfg, "peakd-3L-kd-s42"), "b"), 0.5)
    _train(store.Run("bilstm", "trial-000", store.run_dir(cfg, "trial-000", "optuna"), "c"), 0.1)
    m = store.manifest(cfg.out / "students" / "bilstm")
    assert m == {"kind": "bilstm", "name": "bilstm", "key": "a", "model": "model.pt",
                 "loader": "kdnb.analysis.bench:load_bilstm"}
    assert [r["name"] for r in store.runs(cfg)] == ["bilstm", "peakd-3L-kd-s42"]   # the optuna trial is apart
    assert [r["name"] for r in store.runs(cfg, kind="peakd")] == ["peakd-3L-kd-s42"]
    assert [r["name"] for r in store.runs(cfg, "optuna")] == ["trial-000"]


def test_a_run_saved_before_manifests_gets_one_when_reused(cfg):
    run = store.Run("bert_student", "bert_student", store.run_dir(cfg, "bert_student"), "k")
    _train(run, 0.3)
    (run.dir / "manifest.json").unlink()
    assert run.saved().reused and read_json(run.dir / "manifest.json")["kind"] == "bert_student"


def test_a_record_reads_as_attributes_and_names_what_it_lacks(cfg):
    res = _train(store.Run("bert_student", "bert_student", store.run_dir(cfg, "bert_student"), "k"), 0.3)
    assert res.n_params == 10 and res.seconds == 1.5 and res.model_dir == res.dir / "model.pt"
    assert res.dev_last is None and res.assistant_seconds == 0.0      # keys older records lack
    with pytest.raises(AttributeError, match="records no 'colour'.*dev_score"):
        res.colour
    assert store.record(cfg, "bert_student")["dev_score"] == 0.3 and store.record(cfg, "teacher") == {}


def test_run_names_are_one_folder_and_kinds_and_groups_are_known(cfg):
    assert store.run_dir(cfg, "teacher") == cfg.out / "teacher"
    assert store.run_dir(cfg, "trial-001", "optuna") == cfg.out / "optuna" / "trial-001"
    for bad in ("../optuna/trial-000", "a/b", "..", ""):
        with pytest.raises(ValueError, match="one folder name"):
            store.run_dir(cfg, bad)
    with pytest.raises(ValueError, match="group must be one of"):
        store.run_dir(cfg, "x", "elsewhere")
    with pytest.raises(ValueError, match="kind must be one of"):
        store.Run("lstm", "x", cfg.out, "k")


def test_a_computed_artefact_is_reused_only_with_its_record_and_under_its_meta(tmp_path):
    from kdnb.utils import write_json

    art, rec = tmp_path / "logits", tmp_path / "logits.json"
    meta = {"teacher": "k", "rows": 3}
    assert store.saved_meta(art, rec, meta) is None                   # nothing yet
    write_json(rec, meta)
    assert store.saved_meta(art, rec, meta) is None                   # a record without its artefact
    art.mkdir()
    assert store.saved_meta(art, rec, meta) == meta
    assert store.saved_meta(art, rec, {**meta, "rows": 4}) is None    # other rows: recompute
    assert store.saved_meta(art, rec, meta, force=True) is None
    write_json(rec, {"key": "k1", "stats": {"n": 1}})
    assert store.saved_meta(art, rec, "k1", field="key")["stats"] == {"n": 1}
    assert store.saved_meta(art, rec, "k2", field="key") is None


def test_a_resumable_computation_keeps_its_partial_results_only_under_the_same_meta(tmp_path):
    root = tmp_path / "shards"
    store.open_dir(root, {"k": 1})
    (root / "shard-00000").write_text("done")
    store.open_dir(root, {"k": 1})
    assert (root / "shard-00000").is_file()                           # resumed: kept
    store.open_dir(root, {"k": 1}, force=True)
    assert not (root / "shard-00000").exists()
    (root / "shard-00000").write_text("done")
    store.open_dir(root, {"k": 2})
    assert not (root / "shard-00000").exists() and read_json(root / "meta.json") == {"k": 2}
