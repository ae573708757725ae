"""benchmarks/thesis_gpu.py in its --tiny mode: every stage runs kdnb's code and the timing json
adds up (the GPU run itself is the same code at thesis scale)."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from .conftest import SHARED_DATA, load_benchmark


@pytest.fixture(scope="module")
def thesis_gpu():
    return load_benchmark("thesis_gpu")


def test_gpt2_tokenizer_is_padded_to_the_asked_vocabulary(thesis_gpu):
    tok = thesis_gpu.gpt2_tokenizer(["the cat sat on the mat .", "a dog barked ."] * 20, 1000)
    assert len(tok) == 1000 and tok.eos_token == "<|endoftext|>"
    assert isinstance(tok.decode([999, 998, 5]), str)  # padded ids decode (a random LM samples them)
    ids = tok("the cat sat on the mat .")["input_ids"]
    assert 0 < len(ids) < len("the cat sat on the mat .")  # learned merges still apply


def test_tiny_run_times_every_stage_through_kdnb(thesis_gpu, tmp_path, capsys):
    out = tmp_path / "out"
    work = tmp_path / "work"
    assert thesis_gpu.main(["--tiny", "--out", str(out), "--work", str(work), "--keep",
                            "--data-dir", str(SHARED_DATA)]) == 0
    res = json.loads((out / "gpu_timing.json").read_text())
    assert res["failed"] == []
    names = [r["stage"] for r in res["stages"]]
    assert names == ["teacher fine-tuning", "GPT-2 fine-tuning", "GPT-2 sampling", "teacher logits",
                     "BiLSTM student", "BERT student"]
    for r in res["stages"]:
        assert 0 < r["fraction"] <= 1 and r["throughput"] > 0 and r["wall_s"] > 0
        rounding = 0.006 / r["fraction"] + 0.1  # loop_s and one_off_s are rounded to 0.01 s
        extra = r.get("tokenising_extra_s", 0.0)  # BERT student: tokenising once scales with rows, not epochs
        assert r["scaled_s"] == pytest.approx(r["loop_s"] / r["fraction"] + r["one_off_s"] + extra, abs=rounding)
        assert r["scaled_s"] >= r["wall_s"] - 0.1 and r["thesis_range"]
    assert res["total_scaled_s"] == pytest.approx(sum(r["scaled_s"] for r in res["stages"]), abs=0.5)
    by = {r["stage"]: r for r in res["stages"]}
    n_train = 8551
    assert by["teacher fine-tuning"]["fraction"] == pytest.approx(32 / (3 * n_train))
    assert by["BiLSTM student"]["fraction"] == pytest.approx(256 / (30 * (n_train + 800_000)))
    assert by["BERT student"]["fraction"] == pytest.approx(256 / (60 * (n_train + 800_000)))
    assert by["teacher fine-tuning"]["thesis_cola"] == "~30 min" and by["GPT-2 sampling"]["tokens_per_s"] > 0
    assert "random weights" in res["note"] and "random weights" in res["models"]["teacher"]

    # the stages ran kdnb's code: a fine-tuned teacher with its curve, a labelled transfer set, a BiLSTM
    run = work / "run"
    assert (run / "teacher" / "learning_curve.csv").exists()
    transfer = datasets.load_from_disk(str(run / "transfer" / "bench"))
    assert len(transfer) == 256 and np.asarray(transfer["teacher_logits"]).shape == (256, 2)
    assert json.loads((run / "students" / "bilstm_bench" / "result.json").read_text())["transfer_set_size"] == 256
    bert = json.loads((run / "students" / "bert_student_bench" / "result.json").read_text())  # the pipeline's
    assert bert["transfer_set_size"] == 256 and len(bert["epoch_seconds"]) == 2 and "BERT student" in bert["model"]
    assert by["BERT student"]["objective"] == bert["objective"] == "ce at T=3"  # the thesis' soft cross-entropy

    table = (out / "gpu_timing.md").read_text()
    assert table.count("\n| ") == 8 and "| **total** |" in table and "| BERT student | 2 epochs × 256 rows" in table
    for name in ("BiLSTM student", "BERT student"):  # two epochs, the second (steady state) scaled
        assert len(by[name]["epoch_seconds"]) == 2 and by[name]["loop_s"] == pytest.approx(
            by[name]["epoch_seconds"][1], abs=0.01)
