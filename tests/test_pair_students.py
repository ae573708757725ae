"""The siamese BiLSTM of Tang et al. (2019, §3.2) for sentence pairs, its collate, and the BiLSTM
distilled end to end on RTE pairs (tiny random teacher; word2vec embeddings trained offline)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kdnb.models.bilstm import (
    BiLSTMStudent,
    PairWordPieceCollate,
    SiameseBiLSTMStudent,
    build_bilstm,
)
from kdnb.training.bilstm import _bilstm_forward


def test_siamese_features_are_tangs_concatenate_compare():
    torch.manual_seed(0)
    m = SiameseBiLSTMStudent(40, 8, num_labels=3, hidden_size=5, fc_size=7).eval()
    assert m.fc.in_features == 8 * 5 and m.fc.out_features == 7  # [h1, h2, h1*h2, |h1-h2|] of 2H each
    ids1, len1 = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    ids2, len2 = torch.tensor([[9, 10], [11, 0]]), torch.tensor([2, 1])
    f = m.pair_features(ids1, len1, ids2, len2)
    assert f.shape == (2, 40)
    h1, h2 = m.encode(ids1, len1), m.encode(ids2, len2)  # the shared encoder, one sentence at a time
    assert torch.allclose(f, torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1), atol=1e-6)
    logits = m(ids1, len1, ids2, len2)
    assert logits.shape == (2, 3)
    assert torch.allclose(logits, m.out(torch.relu(m.fc(f))), atol=1e-6)
    # swapping the sentences changes the logits (the features are ordered), the encoder is shared
    assert not torch.allclose(m(ids2, len2, ids1, len1), logits)
    assert sum(isinstance(x, torch.nn.LSTM) for x in m.modules()) == 1
    with pytest.raises(ValueError, match="batch size"):
        m(ids1, len1, ids2[:1], len2[:1])


def test_pair_collate_and_build():
    from kdnb.config import BiLSTMConfig, load_config
    from kdnb.models.teacher import load_tokenizer

    tok = load_tokenizer(load_config("cola", "smoke"))
    rows = [{"sentence": "A man is playing a guitar.", "sentence2": "Someone plays.", "teacher_logits": [0.1, 0.2],
             "label": 0},
            {"sentence": "Cats.", "sentence2": "Animals are sleeping on the sofa.", "teacher_logits": [0.3, 0.4],
             "label": 1}]
    b = PairWordPieceCollate(tok, max_length=16)(rows)
    assert b["input_ids"].shape[0] == b["input_ids2"].shape[0] == 2
    assert b["lengths"].tolist() == [len(tok.tokenize(r["sentence"])) for r in rows]
    assert b["lengths2"].tolist() == [len(tok.tokenize(r["sentence2"])) for r in rows]
    assert tok.sep_token_id not in b["input_ids2"].flatten().tolist()
    bc = dataclasses.replace(BiLSTMConfig(), embedding="random", hidden_size=4, fc_size=3)
    m = build_bilstm(bc, 2, tok, pair=True)
    assert isinstance(m, SiameseBiLSTMStudent)
    assert _bilstm_forward(m, b).shape == (2, 2)
    assert type(build_bilstm(bc, 2, tok)) is BiLSTMStudent


def test_compacted_siamese_equals_full():
    torch.manual_seed(0)
    import copy

    full = SiameseBiLSTMStudent(50, 6, 2, hidden_size=4, fc_size=3, embedding_weights=torch.randn(50, 6)).eval()
    small = copy.deepcopy(full).compact(torch.tensor([0, 3, 4, 5, 9, 10, 11]))
    args = (torch.tensor([[3, 4, 5]]), torch.tensor([3]), torch.tensor([[9, 10, 11, 0]]), torch.tensor([3]))
    assert torch.allclose(full(*args), small(*args), atol=1e-6)


def test_distill_bilstm_on_rte_pairs_with_word2vec(tmp_path):
    """RTE picks the siamese student automatically; word2vec vectors are trained on the transfer
    set (offline), the word tokenizer saved beside the weights."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification

    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.models.teacher import load_tokenizer, teacher_dir
    from kdnb.training.bilstm import distill_bilstm
    from kdnb.utils import read_json, write_json

    cfg = load_config("rte", "smoke", overrides={
        "output_dir": str(tmp_path / "out"), "probing.enabled": False,
        "bilstm.embedding": "word2vec", "bilstm.embedding_mode": "multichannel",
        "bilstm.hidden_size": 8, "bilstm.fc_size": 6, "bilstm.epochs": 1, "bilstm.batch_size": 8,
        "bilstm.word2vec.vector_size": 10, "bilstm.word2vec.epochs": 1})
    tok = load_tokenizer(cfg)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=2))
    teacher.save_pretrained(teacher_dir(cfg) / "model")
    tok.save_pretrained(teacher_dir(cfg) / "model")
    write_json(teacher_dir(cfg) / "result.json", {"config_hash": "tiny", "dev_score": 0.5})
    dsd = load_task("rte", cfg.data_path)
    dsd = datasets.DatasetDict({"train": dsd["train"].select(range(20)), "dev": dsd["dev"].select(range(10))})
    transfer = dsd["train"].add_column("teacher_logits",
                                       np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32).tolist())
    res = distill_bilstm(cfg, transfer, dsd)
    sdir = cfg.out / "students" / "bilstm"
    saved = read_json(sdir / "result.json")
    assert saved["model"].startswith("siamese BiLSTM") and saved["embedding"]["embedding"] == "word2vec"
    assert saved["embedding"]["dim"] == 10 and saved["embedding"]["coverage"] == 1.0
    state = torch.load(sdir / "model.pt", weights_only=True)
    vocab = len(read_json(sdir / "tokenizer" / "tokenizer.json")["model"]["vocab"])
    assert state["embedding.weight"].shape == (vocab, 10) and state["fc.weight"].shape == (6, 8 * 8)
    assert 0.0 <= res.dev_score <= 1.0 and len(res.curve) == 1
    assert distill_bilstm(cfg, transfer, dsd).reused


def test_benchmark_scores_bert_models_on_sentence_pairs():
    """kdnb.analysis.bench.dev_score reads RTE dev as the teacher does ([CLS] a [SEP] b [SEP]), not premises alone."""
    from types import SimpleNamespace

    from kdnb.analysis.bench import BenchModel, dev_score
    from kdnb.config import load_config
    from kdnb.data import load_task, score
    from kdnb.models.teacher import load_tokenizer

    class SecondSentenceLength(torch.nn.Module):
        """Predicts 'not_entailment' (1) iff the second segment has more than 12 WordPieces."""

        def forward(self, input_ids, attention_mask, token_type_ids):
            n2 = ((token_type_ids == 1) & (attention_mask == 1)).sum(-1).float()
            return SimpleNamespace(logits=torch.stack([torch.full_like(n2, 12.5), n2], -1))

    cfg = load_config("rte", "smoke")
    tok = load_tokenizer(cfg)
    dev = load_task("rte", cfg.data_path)["dev"].select(range(60))
    n2 = np.array([len(tok.tokenize(s)) + 1 for s in dev["sentence2"]])  # + its [SEP]
    want = score("rte", dev["label"], (n2 > 12.5).astype(int))
    got = dev_score(cfg, BenchModel("m", SecondSentenceLength(), "bert", "trained", scored=True), tok, dev,
                    batch_size=16)
    assert got == pytest.approx(want)
    assert 0 < (n2 > 12.5).sum() < len(n2)  # premises alone would give all 0 (no second segment)
