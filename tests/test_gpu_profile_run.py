"""benchmarks/gpu_profile_run.py (issue 16): the fp16 teacher loaded into fp32, the table, and the
prepared gpu_prepare.sh folder layout it reads. The whole run is tried by hand at tiny scale on a
CPU (benchmarks/README.md); on a GPU it is the one device call."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def runner():
    return load_benchmark("gpu_profile_run")


def _tiny_fp16_bert(path):
    """A 1-layer BERT saved as fp16 safetensors whose config says float32 (as gpu_prepare.sh does)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "."]
    (path).mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32)).half()
    model.save_pretrained(str(path))
    conf = json.loads((path / "config.json").read_text())
    conf["dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(conf))
    return model


def test_fp16_teacher_is_loaded_into_fp32_with_the_same_values(runner, tmp_path):
    from transformers import AutoModelForSequenceClassification

    fp16 = _tiny_fp16_bert(tmp_path / "t16")
    info = runner.fp32_teacher(tmp_path / "t16", tmp_path / "t32")
    assert info["source_dtype"] == ["F16"] and info["encoder_params"] == sum(p.numel() for p in fp16.parameters())
    teacher = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "t32"), num_labels=2)
    assert teacher.dtype == torch.float32  # what fine_tune_teacher loads: fp32, not the file's fp16
    w16 = fp16.embeddings.word_embeddings.weight
    assert torch.equal(teacher.bert.embeddings.word_embeddings.weight, w16.float())
    assert (tmp_path / "t32" / "tokenizer_config.json").is_file()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        runner.fp32_teacher(tmp_path / "missing", tmp_path / "x")


def test_markdown_table_shows_scores_retention_and_stages(runner):
    res = {"task": "cola", "profile": "gpu", "device": "cpu", "mixed_precision": "no", "cuda_graphs": False,
           "num_workers": 0, "torch": "2", "date": "2026-12-01 03:00", "commit": "abc1234", "overrides": {},
           "metric": "mcc", "errors": [], "elapsed_s": 12.0,
           "teacher": {"dev": 29.9, "dev_last": 28.8, "best_epoch": 3.0, "epochs": 3, "rows": 8551},
           "gpt2": {"description": "scratch", "n_params": 1000, "dev_perplexity": 146.1, "kept": 200, "generated": 230},
           "students": [{"model": "BiLSTM", "transfer_set": "gpt2", "rows": 208551, "epochs": 6, "dev": 30.35,
                         "dev_last": 30.35, "best_epoch": 6.0, "retention": 101.5, "retention_last": 101.5,
                         "cuda_graphs": None}],
           "stages": [{"stage": "teacher fine-tuning", "wall_s": 22.4, "peak_gpu_mb": None}]}
    md = runner.markdown(res)
    assert "| BiLSTM | gpt2 | 208,551 | 6 | 30.35 | 6.0 | 30.35 | 101.5 % / 101.5 % | – |" in md
    assert "| teacher | training set | 8,551 | 3 | 29.9 |" in md
    assert "dev perplexity 146.1" in md and "| teacher fine-tuning | 22.4 | – |" in md and "| **total** | 12.0 |" in md
