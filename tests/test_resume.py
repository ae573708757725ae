"""Kill and resume for every trained stage: teacher fine-tuning, the BERT student, Pea-KD (its PTP
phase and its KD phase) and the GPT-2 LM are killed with SIGKILL mid-epoch in a subprocess,
resumed, and give the weights and learning curve of an uninterrupted run (the BiLSTM's test is in
test_distill.py). Tiny random models on 48 CoLA sentences."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from kdnb.config import PROJECT_ROOT, load_config
from kdnb.data import load_task, subsample

from .conftest import SHARED_DATA

PEAKD = "peakd-1L-ptp-s42"
_OVER = {
    "teacher": {"teacher.epochs": 2, "teacher.batch_size": 8, "teacher.evals_per_epoch": 2, "teacher.save_steps": 2,
                "teacher.max_length": 32},
    "bert_student": {"bert_student.num_layers": 1, "bert_student.hidden_size": 16, "bert_student.intermediate_size": 32,
                     "bert_student.num_heads": 2, "bert_student.epochs": 2, "bert_student.warmup_epochs": 0.5,
                     "bert_student.batch_size": 8, "bert_student.max_length": 32},
    "peakd": {"peakd.epochs": 2, "peakd.ptp_epochs": 2, "peakd.batch_size": 8, "peakd.max_length": 32,
              "peakd.learning_rate": 1e-3, "peakd.ptp_threshold": 0.51,
              "peakd.init": "teacher"},  # the tiny random teacher is no cut of the packaged pre-trained model
    "gpt2": {"augment.gpt2.epochs": 2, "augment.gpt2.batch_size": 8, "augment.gpt2.save_steps": 2,
             "augment.gpt2.scratch_n_embd": 16, "augment.gpt2.scratch_vocab_size": 300},
}
_OVER["peakd_ptp"] = _OVER["peakd"]
# (checkpoint folder under the output dir, the state a kill must follow: mid-epoch)
_CKPT = {"teacher": ("teacher/checkpoint", lambda s: s["batches_done"] > 0),
         "bert_student": ("students/bert_student/checkpoint", lambda s: s["epochs_done"] == 1),
         "peakd_ptp": (f"students/{PEAKD}/ptp_checkpoint", lambda s: s["epochs_done"] == 1),
         "peakd": (f"students/{PEAKD}/checkpoint", lambda s: s["epochs_done"] == 1),
         "gpt2": ("augmented/gpt2_model.checkpoint", lambda s: s["batches_done"] > 0)}


def _data():
    dsd = load_task("cola", SHARED_DATA)
    return datasets.DatasetDict({"train": subsample(dsd["train"], 48, 42), "dev": dsd["dev"].select(range(32)),
                                 "test": dsd["test"].select(range(16))})


def _cfg(stage: str, out: Path, root: Path):
    over = {"output_dir": str(out), "figures_dir": str(out / "fig"), "train_limit": 48, **_OVER[stage]}
    if stage == "teacher":
        over["teacher.model_name_or_path"] = str(root / "tiny_teacher")
    return load_config("cola", "smoke", overrides=over)


def run_stage(stage: str, out: Path, root: Path):
    """Run one stage into ``out`` (the child and the parent call this)."""
    cfg, dsd = _cfg(stage, out, root), _data()
    if stage == "teacher":
        from kdnb.training.teacher import fine_tune_teacher
        return fine_tune_teacher(cfg, dsd)
    if stage == "gpt2":
        from kdnb.augment import train_gpt2
        return train_gpt2(cfg, dsd)
    transfer = datasets.load_from_disk(str(root / "transfer"))
    if stage == "bert_student":
        from kdnb.training.bert_student import distill_bert_student
        return distill_bert_student(cfg, transfer, dsd)
    from kdnb.training.peakd import distill_peakd
    return distill_peakd(cfg, transfer, dsd, k=1, sps=False, ptp=True, seed=cfg.seed)


_CHILD = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    torch.set_num_threads(1)
    import kdnb.training.fit, kdnb.training.teacher, kdnb.training.bert_student, kdnb.training.peakd
    real = kdnb.training.fit.fit
    def slow_fit(*a, loss_fn, **k):     # slow steps, so that the kill lands mid-epoch
        return real(*a, loss_fn=lambda m, b: time.sleep(0.25) or loss_fn(m, b), **k)
    for mod in (kdnb.training.fit, kdnb.training.teacher, kdnb.training.bert_student, kdnb.training.peakd):
        mod.fit = slow_fit
    from tests.test_resume import run_stage
    run_stage(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
""")


def _tiny_teacher(path: Path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdnb.models.teacher import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(load_config("cola", "smoke").teacher.model_name_or_path))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2))
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _prepare(root: Path, out: Path):
    """A tiny teacher where notebook 03 puts it (students need one), and a transfer set."""
    import shutil

    shutil.copytree(root / "tiny_teacher", out / "teacher" / "model")
    (out / "teacher" / "result.json").write_text(json.dumps({"config_hash": "tiny", "dev_score": 0.25}))


def _weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


_RESULT = {"teacher": ["teacher/model/model.safetensors", "teacher/learning_curve.csv"],
           "bert_student": ["students/bert_student/model.pt", "students/bert_student/learning_curve.csv"],
           "peakd": [f"students/{PEAKD}/model.pt", f"students/{PEAKD}/learning_curve.csv",
                     f"students/{PEAKD}/ptp_curve.csv"],
           "gpt2": ["augmented/gpt2_model/model.safetensors", "augmented/gpt2_model.json"]}
_RESULT["peakd_ptp"] = _RESULT["peakd"]


@pytest.mark.parametrize("stage", ["teacher", "bert_student", "peakd_ptp", "peakd", "gpt2"])
def test_a_stage_killed_mid_epoch_resumes_to_identical_weights_and_curve(stage, tmp_path, one_thread, capsys):
    _tiny_teacher(tmp_path / "tiny_teacher")
    train = _data()["train"]
    logits = np.random.default_rng(0).normal(size=(len(train), 2)).astype(np.float32)
    train.add_column("teacher_logits", logits.tolist(),
                     feature=datasets.Sequence(datasets.Value("float32"))).save_to_disk(str(tmp_path / "transfer"))
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    if stage != "teacher":  # the students distil a tiny teacher where notebook 03 puts it
        for out in (killed, whole):
            _prepare(tmp_path, out)

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, stage, str(killed), str(tmp_path)], env=env,
                             cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, ready = _CKPT[stage]
    state_file = killed / ckpt / "trainer_state.json"
    deadline = time.time() + 600
    while time.time() < deadline and child.poll() is None:
        try:
            if ready(json.loads(state_file.read_text())):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-3000:]
    state = json.loads(state_file.read_text())
    assert ready(state) and not (killed / _RESULT[stage][0]).exists(), "killed mid-epoch, before the end"

    capsys.readouterr()
    run_stage(stage, killed, tmp_path)
    assert "resumed from checkpoint after epoch" in capsys.readouterr().out
    run_stage(stage, whole, tmp_path)
    wfile, *curves = _RESULT[stage]
    a, b = _weights(killed / wfile), _weights(whole / wfile)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for c in curves:
        ra, rb = (killed / c).read_text(), (whole / c).read_text()
        if c.endswith(".json"):  # GPT-2's record: its curve and dev perplexity, not its wall time
            ra, rb = ({k: v for k, v in json.loads(r).items() if "seconds" not in k} for r in (ra, rb))
        assert ra == rb, c
