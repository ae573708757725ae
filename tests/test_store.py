"""The run store (kdnb.store): keys, reuse, records and manifests of trained models and computed artefacts."""

from __future__ import annotations

import importlib
import shutil

import datasets
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


def test_a_computed_artefact_is_reused_only_with_its_record_and_under_its_key(cfg):
    path = cfg.out / "transfer" / "none"
    meta = {"teacher": "k", "rows": 3}
    art = store.Artefact("teacher_logits", path, meta, cfg.out)
    assert art.record == cfg.out / "transfer" / "none.json"
    assert art.saved() is None                                        # nothing yet
    art.finish()
    assert art.saved() is None                                        # a record without its artefact
    path.mkdir(parents=True)
    assert art.saved() == meta
    assert store.Artefact("teacher_logits", path, {**meta, "rows": 4}, cfg.out).saved() is None  # other rows
    assert art.saved(force=True) is None
    keyed = store.Artefact("probes", cfg.out / "p.json", "k1", cfg.out, record=cfg.out / "p.json", field="key")
    assert keyed.finish({"layers": {"E": 1}}) == {"key": "k1", "layers": {"E": 1}}
    assert keyed.saved()["layers"] == {"E": 1}
    assert store.Artefact("probes", keyed.path, "k2", cfg.out, record=keyed.record, field="key").saved() is None
    with pytest.raises(ValueError, match="kind must be one of"):
        store.Artefact("logits", path, meta, cfg.out)


def test_the_output_folder_manifest_lists_each_artefact_with_its_kind_and_loader(cfg):
    ds = store.Artefact("transfer_set", cfg.out / "transfer" / "rules", {"none": 1}, cfg.out).save_dataset(
        datasets.Dataset.from_dict({"sentence": ["a", "b"]}))
    assert ds["sentence"] == ["a", "b"]
    listed = store.artefacts(cfg)
    assert listed == {"transfer/rules": {"kind": "transfer_set", "record": "transfer/rules.json",
                                          "loader": "kdnb.augment.transfer:load_transfer_set",
                                          "key": listed["transfer/rules"]["key"]}}
    mod, fn = listed["transfer/rules"]["loader"].split(":")
    assert callable(getattr(importlib.import_module(mod), fn))
    # an artefact saved before manifests existed is listed when it is next reused
    (cfg.out / "manifest.json").unlink()
    assert store.Artefact("transfer_set", cfg.out / "transfer" / "rules", {"none": 1}, cfg.out).saved()
    assert list(store.artefacts(cfg, kind="transfer_set")) == ["transfer/rules"]
    assert store.artefacts(cfg, kind="probes") == {}
    shutil.rmtree(cfg.out / "transfer")                              # gone from disk: not listed
    assert store.artefacts(cfg) == {}


def test_every_loader_the_store_names_exists():
    for loader in [v for _, v in store.KINDS.values()] + list(store.ARTEFACTS.values()):
        mod, fn = loader.split(":")
        assert callable(getattr(importlib.import_module(mod), fn)), loader


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


def test_the_inventory_lists_a_runs_models_and_artefacts(cfg, monkeypatch, capsys):
    _train(store.Run("bilstm", "bilstm", store.run_dir(cfg, "bilstm"), key="k1"), 0.4)
    art = store.Artefact("efficiency", cfg.out / "efficiency.csv", {"threads": 1}, cfg.out, field="key")
    art.path.write_text("model\n")
    art.finish({"raw": []})
    inv = store.inventory(cfg)
    assert inv[["what", "kind", "path"]].values.tolist() == [["model", "bilstm", "students/bilstm"],
                                                             ["artefact", "efficiency", "efficiency.csv"]]
    assert inv["dev_score"].iloc[0] == 0.4 and inv["loader"].iloc[1] == "pandas:read_csv"
    import kdnb.config

    monkeypatch.setattr(kdnb.config, "load_config", lambda task, profile, data_dir=None: cfg)
    assert store.main(["--task", "cola", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("models 1, artefacts 1") and "40.0" in out
