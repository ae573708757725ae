"""kdnb.analysis.bench: parameter counts against the thesis' sizes, inputs, quantisation, speed-ups and
one small end-to-end efficiency table (smoke profile, tiny batch, no BERT-large)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kdnb import store
from kdnb.analysis import bench
from kdnb.config import load_config
from kdnb.models import common
from kdnb.models.bilstm import BiLSTMStudent
from kdnb.models.teacher import load_tokenizer


def test_thesis_student_sizes():
    # Sučík (2020): BERT student L=5, d_h=204, d_I=750, A=3 → 2.42M non-embedding parameters;
    # BiLSTM (300 units, FC 400, multichannel word2vec, 300-d) → 2.41M.
    bert_non_emb = common.count_parameters(bench.thesis_bert_student(num_labels=2), embeddings=False)
    assert bert_non_emb / 1e6 == pytest.approx(2.42, abs=0.01)
    lstm = BiLSTMStudent(1000, 300, 2, 300, 400, embedding_mode="multichannel")
    total, non_emb = common.count_parameters(lstm), common.count_parameters(lstm, embeddings=False)
    assert non_emb / 1e6 == pytest.approx(2.41, abs=0.01)
    assert total - non_emb == 2 * 1000 * 300  # both embedding channels
    with torch.device("meta"):
        large = bench.bert_large(num_labels=2)
    total = common.count_parameters(large)
    assert 330e6 < total < 340e6  # BERT-large, ~335M


def test_make_inputs_shapes():
    tok = load_tokenizer(load_config("cola", "smoke"))
    sents = ["the cat sat .", "a much longer sentence about the dog that barked at the moon all night ."]
    inp = bench.make_inputs(tok, sents, max_length=32)
    padded, real = inp["padded to 32"], inp["real lengths"]
    assert padded["bert"]["input_ids"].shape == (2, 32)
    assert padded["bilstm"]["lengths"].tolist() == [32, 32]
    n_pieces = [len(tok(s, add_special_tokens=False)["input_ids"]) for s in sents]
    assert real["bilstm"]["lengths"].tolist() == n_pieces
    assert real["bilstm"]["input_ids"].shape == (2, max(n_pieces))
    assert real["bert"]["input_ids"].shape == (2, max(n_pieces) + 2)  # [CLS] ... [SEP]


def test_quantise_keeps_predictions_and_shrinks():
    torch.manual_seed(0)
    model = BiLSTMStudent(500, 64, 3, 128, 128).eval()
    q = bench.quantise(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any("quantized" in type(m).__module__ for m in q.modules())
    ids = torch.randint(1, 500, (64, 12))
    lengths = torch.randint(1, 13, (64,))
    with torch.inference_mode():
        a, b = model(ids, lengths), q(ids, lengths)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert torch.allclose(a, b, atol=0.05)
    assert bench.serialized_mb(q) < bench.serialized_mb(model)
    assert isinstance(model.fc, nn.Linear)  # the original is left as it was


def test_add_speedups():
    df = pd.DataFrame({"model": ["BERT-large (24 layers)", "teacher (6 layers)", "BiLSTM", "BiLSTM"],
                       "device": ["cpu"] * 4, "input": ["padded to 64"] * 3 + ["real lengths"],
                       "ms/example": [300.0, 10.0, 1.5, 0.5]})
    out = bench.add_speedups(df)
    assert out["speed-up vs BERT-large"].iloc[:3].tolist() == [1.0, 30.0, 200.0]
    assert out["speed-up vs teacher"].iloc[2] == pytest.approx(10.0 / 1.5)
    assert np.isnan(out["speed-up vs BERT-large"].iloc[3])  # no BERT-large at real lengths
    assert out["speed-up vs BERT-large padded"].tolist() == [1.0, 30.0, 200.0, 600.0]


def test_efficiency_table_end_to_end(tmp_path, monkeypatch, capsys):
    cfg = load_config("cola", "smoke", overrides={
        "output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "fig"),
        "analysis.bench_batch_size": 8, "analysis.bench_repeats": 2, "analysis.bench_bert_large": False,
        "analysis.bench_gpu": False})
    tok = load_tokenizer(cfg)
    torch.manual_seed(0)
    student = BiLSTMStudent(len(tok), 32, 2, 16, 16)
    (cfg.out / "students" / "bilstm").mkdir(parents=True)
    torch.save(student.state_dict(), cfg.out / "students" / "bilstm" / "model.pt")
    store.Run("bilstm", "bilstm", cfg.out / "students" / "bilstm", "k").finish({"model": "BiLSTM"})  # its manifest
    (cfg.out / "students" / "peakd-1L-kd-s42").mkdir()  # a folder without a manifest is not guessed at
    torch.save(student.state_dict(), cfg.out / "students" / "peakd-1L-kd-s42" / "model.pt")
    threads_before = torch.get_num_threads()

    df = bench.efficiency_table(cfg, threads=1)
    assert torch.get_num_threads() == threads_before
    rows = df.set_index(["model", "input"])
    models = list(dict.fromkeys(df["model"]))
    assert models[0].startswith("teacher (6 layers")
    assert models[1:] == ["BiLSTM", "BiLSTM int8", "BERT student (thesis size, 5 layers)",
                          "BERT student (thesis size, 5 layers) int8"]
    assert set(df["input"]) == {"padded to 64", "real lengths"}
    assert (df["batch"] == 8).all() and (df["threads"] == 1).all() and (df["device"] == "cpu").all()
    assert (df["ms/example"] > 0).all()
    teacher = models[0]
    assert rows.loc[(teacher, "real lengths"), "speed-up vs teacher"] == 1.0
    assert rows.loc[(teacher, "real lengths"), "weights"].startswith("pre-trained")  # no teacher trained here
    assert rows.loc[("BiLSTM", "real lengths"), "weights"] == "trained"
    assert rows.loc[("BiLSTM", "padded to 64"), "non-embedding parameters (M)"] == pytest.approx(
        common.count_parameters(student, embeddings=False) / 1e6)
    assert -100 <= rows.loc[("BiLSTM", "real lengths"), "dev score (%)"] <= 100  # MCC, in %
    assert pd.isna(rows.loc[("BERT student (thesis size, 5 layers)", "real lengths"), "dev score (%)"])
    assert rows.loc[("BiLSTM int8", "real lengths"), "size (MB)"] <= rows.loc[("BiLSTM", "real lengths"), "size (MB)"]
    assert (cfg.out / "efficiency.csv").is_file()

    # a second call reuses the saved table without timing anything
    monkeypatch.setattr(bench, "time_batches", lambda *a, **k: pytest.fail("re-measured"))
    again = bench.efficiency_table(cfg, threads=1)
    pd.testing.assert_frame_equal(again, pd.read_csv(cfg.out / "efficiency.csv"))

    # the standalone script prints the saved table (still no timing: same parameters, same models)
    import importlib.util

    from kdnb.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bench_efficiency",
                                                  PROJECT_ROOT / "benchmarks" / "bench_efficiency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sets = ["analysis.bench_batch_size=8", "analysis.bench_repeats=2", "analysis.bench_bert_large=false",
            "analysis.bench_gpu=false", f"figures_dir={tmp_path / 'fig'}"]
    argv = ["--task", "cola", "--profile", "smoke", "--output-dir", str(cfg.out), "--threads", "1"]
    assert script.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    assert "BiLSTM int8" in printed and "torch_threads': 1" in printed


def test_the_trained_bert_student_is_benchmarked_and_quantised(tmp_path):
    """Notebook 04's BERT student (kdnb.training.bert_student: model.pt + result.json sizes, a run of the
    store) enters the efficiency table as itself, scored, with an int8 copy — not the random thesis-size stand-in."""
    from transformers import AutoModelForSequenceClassification

    from kdnb.models.bert_student import build_bert_student
    from kdnb.models.teacher import resolve_model_path

    cfg = load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out")})
    teacher = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(cfg.teacher.model_name_or_path),
                                                                 num_labels=2)  # no fine-tuned one here
    tok = load_tokenizer(cfg)
    bc = cfg.bert_student
    torch.manual_seed(0)
    student = build_bert_student(bc, 2, teacher)
    sdir = cfg.out / "students" / "bert_student"
    sdir.mkdir(parents=True)
    torch.save(student.state_dict(), sdir / "model.pt")
    store.Run("bert_student", "bert_student", sdir, "k").finish({"sizes": {k: getattr(bc, k) for k in (
        "num_layers", "hidden_size", "intermediate_size", "num_heads")}})
    models = bench.collect_models(cfg, tok, 2, bert_large_too=False, quantised=True)
    names = [m.name for m in models]
    label = f"BERT student (L={bc.num_layers}, H={bc.hidden_size})"
    assert label in names and f"{label} int8" in names
    assert not any("thesis size" in n for n in names)
    got = next(m for m in models if m.name == label)
    assert got.weights == "trained" and got.scored and got.n_params == sum(p.numel() for p in student.parameters())
    ids = torch.tensor([[101, 2023, 2003, 102]])
    with torch.no_grad():
        assert torch.allclose(got.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits,
                              student.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
