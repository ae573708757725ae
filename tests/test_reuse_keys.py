"""Reuse keys that see the data and the code: a changed data file, another data folder or a new
STAGE_VERSION gives the teacher another key, so it is retrained (and, through its key, every
stage downstream); the same inputs reuse it."""

from __future__ import annotations

import json

import pytest

from kdnb.config import load_config
from kdnb.data import data_fingerprint, load_task
from kdnb.errors import DataError
from kdnb.models import teacher as teacher_model
from kdnb.training import teacher as T

from .conftest import SHARED_DATA


def _cfg(tmp_path, data_dir):
    return load_config("cola", "smoke", data_dir=str(data_dir),
                       overrides={"output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "fig")})


def test_the_teacher_key_sees_data_content_folder_and_stage_version(tmp_path, data_copy, monkeypatch):
    shared, copy = _cfg(tmp_path, SHARED_DATA), _cfg(tmp_path, data_copy)
    assert T.teacher_key(shared) == T.teacher_key(_cfg(tmp_path, SHARED_DATA))
    assert T.teacher_key(copy) != T.teacher_key(shared)            # same bytes, another folder
    before = T.teacher_key(copy)
    dev = data_copy / "cola" / "dev.tsv"
    dev.write_bytes(dev.read_bytes().replace(b"\t1\t\t", b"\t0\t\t", 1))  # one label flipped
    assert T.teacher_key(copy) != before
    assert data_fingerprint("sst2", data_copy) != data_fingerprint("cola", data_copy)
    key = T.teacher_key(copy)
    monkeypatch.setattr(T, "STAGE_VERSION", T.STAGE_VERSION + 1)
    assert T.teacher_key(copy) != key


def test_a_missing_data_file_is_named(tmp_path, data_copy):
    (data_copy / "sara" / "int_to_intent.tsv").unlink()
    with pytest.raises(DataError, match=r"sara/int_to_intent.tsv: file not found"):
        data_fingerprint("sara", data_copy)


class _Retrained(Exception):
    pass


def test_the_saved_teacher_is_reused_only_for_the_same_data(tmp_path, data_copy, monkeypatch):
    cfg = _cfg(tmp_path, data_copy)
    tdir = teacher_model.teacher_dir(cfg)
    (tdir / "model").mkdir(parents=True)
    (tdir / "learning_curve.csv").write_text("step,epoch,train_loss,dev_score\n1,1.0,0.5,0.1\n")
    saved = {"config_hash": T.teacher_key(cfg), "dev_score": 0.1, "test_score": None, "n_params": 1, "seconds": 1.0}
    (tdir / "result.json").write_text(json.dumps(saved))

    def fit(*a, **k):
        raise _Retrained(k.get("resume_key"))

    monkeypatch.setattr(T, "fit", fit)
    dsd = load_task("cola", data_copy)
    assert T.fine_tune_teacher(cfg, dsd).reused
    train = data_copy / "cola" / "train.tsv"
    train.write_text(train.read_text().replace("\t1\t\t", "\t0\t\t", 1))
    with pytest.raises(_Retrained) as e:
        T.fine_tune_teacher(cfg, load_task("cola", data_copy))
    assert e.value.args[0] == T.teacher_key(cfg) != saved["config_hash"]  # also the resume key: no stale checkpoint
