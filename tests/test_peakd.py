"""Pea-KD (kdnb.training.peakd): SPS weight sharing and Q/K shuffling, PTP labels, the KD loss, and one
tiny end-to-end student (random 2-layer teacher, 24 RTE pairs) trained, saved, reused, reloaded."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdnb import experiments
from kdnb.models import bert_inputs, common
from kdnb.models import peakd as peakd_model
from kdnb.training import losses, peakd


def tiny_bert(layers: int = 2, num_labels: int = 2, seed: int = 0, vocab: int = 60):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    conf = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(conf).eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1, 60, (3, 7), generator=g), "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def test_truncated_student_copies_the_teachers_bottom_layers():
    teacher = tiny_bert(layers=4)
    student = peakd_model.truncated_student(teacher, 2)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t, s = teacher.state_dict(), student.state_dict()
    assert set(s) < set(t)
    assert all(torch.equal(s[k], t[k]) for k in s)
    assert s["bert.encoder.layer.1.output.dense.weight"].data_ptr() != t["bert.encoder.layer.1.output.dense.weight"].data_ptr()
    with pytest.raises(Exception, match="peakd.layers"):
        peakd_model.truncated_student(teacher, 5)


def test_sps_shares_storage_and_swaps_query_and_key():
    teacher = tiny_bert(layers=2)
    plain = peakd_model.build_student(teacher, 2, sps=False)
    sps = peakd_model.build_student(teacher, 2, sps=True)
    layers = sps.bert.encoder.layer
    assert len(layers) == 4 and sps.config.num_hidden_layers == 4 and sps.config.sps_source_layers == [0, 1]
    for i in range(2):
        src, shared = layers[i], layers[2 + i]
        sa, ssa = src.attention.self, shared.attention.self
        # Q/K really swapped: the shared layer's query weight IS the source's key weight, and vice versa
        assert ssa.query.weight is sa.key.weight and ssa.key.weight is sa.query.weight
        assert ssa.query.weight.data_ptr() == sa.key.weight.data_ptr()
        assert ssa.key.bias.data_ptr() == sa.query.bias.data_ptr()
        assert not torch.equal(sa.query.weight, sa.key.weight)  # so the swap is observable
        # everything else shared as is (same storage, no copies)
        for a, b in ((ssa.value, sa.value), (shared.attention.output.dense, src.attention.output.dense),
                     (shared.attention.output.LayerNorm, src.attention.output.LayerNorm),
                     (shared.intermediate.dense, src.intermediate.dense), (shared.output.dense, src.output.dense)):
            assert a.weight.data_ptr() == b.weight.data_ptr()
    # no new parameters: exactly those of the plain 2-layer student
    assert peakd_model.count_unique_parameters(sps) == peakd_model.count_unique_parameters(plain)
    emb = sum(p.numel() for p in plain.bert.embeddings.parameters())
    assert peakd_model.count_unique_parameters(sps, embeddings=False) == peakd_model.count_unique_parameters(plain) - emb
    assert peakd_model.count_unique_parameters(sps) < sum(p.numel() for p in peakd_model.build_student(tiny_bert(4), 4, False).parameters())
    # the hidden states of all 2k effective layers come out (embeddings + 4)
    assert len(sps(**_inputs(), output_hidden_states=True).hidden_states) == 5


def _untied_reference(sps_model):
    """A 4-layer BERT with separate weights equal to the SPS model's: upper layer i has query =
    lower layer i's key and key = its query (what SPS should compute)."""
    ref = copy.deepcopy(peakd_model.truncated_student(sps_model, 2))  # copies embeddings, layers 0-1, head
    from transformers.models.bert.modeling_bert import BertLayer

    for i in range(2):
        upper = BertLayer(ref.config, layer_idx=2 + i)
        upper.load_state_dict(ref.bert.encoder.layer[i].state_dict())
        sa, src = upper.attention.self, ref.bert.encoder.layer[i].attention.self
        with torch.no_grad():
            sa.query.weight.copy_(src.key.weight), sa.query.bias.copy_(src.key.bias)
            sa.key.weight.copy_(src.query.weight), sa.key.bias.copy_(src.query.bias)
        ref.bert.encoder.layer.append(upper)
    ref.config.num_hidden_layers = 4
    return ref.eval()


def test_sps_forward_and_gradients_equal_an_untied_swapped_copy():
    sps = peakd_model.build_student(tiny_bert(layers=2), 2, sps=True).eval()
    ref = _untied_reference(sps)
    x = _inputs()
    assert torch.allclose(sps(**x).logits, ref(**x).logits, atol=1e-5)
    # a shared weight's gradient is the sum over both of its uses
    sps(**x).logits.sum().backward()
    ref(**x).logits.sum().backward()
    lo, up = ref.bert.encoder.layer[0].attention.self, ref.bert.encoder.layer[2].attention.self
    key_grad = sps.bert.encoder.layer[0].attention.self.key.weight.grad
    assert torch.allclose(key_grad, lo.key.weight.grad + up.query.weight.grad, atol=1e-5)
    assert not torch.allclose(key_grad, lo.key.weight.grad, atol=1e-6)  # the upper use contributes
    # one optimiser step moves the shared tensor once, for both layers
    before = sps.bert.encoder.layer[0].attention.self.key.weight.detach().clone()
    torch.optim.SGD(sps.parameters(), lr=0.1).step()
    lower_key = sps.bert.encoder.layer[0].attention.self.key.weight
    upper_query = sps.bert.encoder.layer[2].attention.self.query.weight
    assert not torch.equal(lower_key, before) and torch.equal(lower_key, upper_query)
    assert torch.allclose(lower_key, before - 0.1 * key_grad)


def test_sps_six_layer_student_shares_its_top_three_layers():
    assert peakd_model.sps_source_layers(1) == [0] and peakd_model.sps_source_layers(3) == [0, 1, 2]
    assert peakd_model.sps_source_layers(6) == [3, 4, 5]
    sps = peakd_model.build_student(tiny_bert(layers=6), 6, sps=True)
    layers = sps.bert.encoder.layer
    assert len(layers) == 9
    for j, i in enumerate([3, 4, 5]):
        assert layers[6 + j].attention.self.query.weight is layers[i].attention.self.key.weight
    assert peakd_model.count_unique_parameters(sps) == peakd_model.count_unique_parameters(peakd_model.build_student(tiny_bert(6), 6, False))
    with pytest.raises(ValueError, match="already"):
        peakd_model.apply_sps(sps)


def test_ptp_labels_on_hand_made_teacher_logits():
    # softmax confidences: [2, 0] → 0.881; [0.5, 0] → 0.622; [0, 3] → 0.953; [0, 0.2] → 0.550
    logits = torch.tensor([[2.0, 0.0], [0.5, 0.0], [0.0, 3.0], [0.0, 0.2], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 0, 1, -1])
    got = peakd.ptp_labels(logits, labels, threshold=0.8)
    # correct & 0.881 > 0.8 → CC(0); correct & 0.622 → UC(1); wrong & 0.953 → CW(2); wrong & 0.550 → UW(3)
    assert got.tolist() == [0, 1, 2, 3, 0, -1]
    # one threshold t for correct and wrong predictions (the paper): at 0.5 the wrong 0.550 is confident
    assert peakd.ptp_labels(logits, labels, 0.5).tolist() == [0, 0, 2, 2, 0, -1]
    assert peakd.ptp_labels(logits, labels, 0.9).tolist() == [1, 1, 2, 3, 0, -1]
    # 3 classes: the correctness is argmax == gold
    three = peakd.ptp_labels(torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([2]), 0.5)
    assert three.tolist() == [2]
    with pytest.raises(ValueError):
        peakd.ptp_labels(logits, labels[:3], 0.8)


def test_peakd_loss_against_hand_computed_values():
    s = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, -1])  # the second row has no gold label
    T, alpha, beta = 2.0, 0.7, 10.0
    ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean() * T * T
    ce = -F.log_softmax(s[0], -1)[0]
    s_cls = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])   # (L=1, B=2, H=2)
    t_cls = torch.tensor([[[4.0, 3.0], [0.0, 2.0]]])
    # normalised: (.6,.8) vs (.8,.6) → diffs (−.2, .2); (1,0) vs (0,1) → (1, −1): mean of squares
    pt_loss = torch.tensor((0.04 + 0.04 + 1 + 1) / 4)
    want = (1 - alpha) * ce + alpha * kl + beta * pt_loss
    got = losses.pkd_loss(s, t, y, s_cls, t_cls, alpha=alpha, beta=beta, temperature=T, reduction="mean")
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(losses.patient_loss(s_cls, t_cls, reduction="mean"), pt_loss)
    # no intermediate layers (a 1-layer plain student) or beta 0: KD + CE only
    no_pt = losses.pkd_loss(s, t, y, None, None, alpha=alpha, beta=beta, temperature=T, reduction="mean")
    assert torch.allclose(no_pt, (1 - alpha) * ce + alpha * kl, atol=1e-6)
    # an all-unlabelled batch: KD only
    only_kd = losses.pkd_loss(s, t, torch.tensor([-1, -1]), None, None, alpha=alpha, beta=0.0, temperature=T, reduction="mean")
    assert torch.allclose(only_kd, alpha * kl, atol=1e-6)


def test_layer_map_matches_intermediate_layers_many_to_one():
    assert common.layer_map(1, 6, include_last=False) == []
    assert common.layer_map(2, 6, include_last=False) == [3]
    assert common.layer_map(3, 6, include_last=False) == [2, 4]
    assert common.layer_map(6, 6, include_last=False) == [1, 2, 3, 4, 5]
    got = common.layer_map(9, 6, include_last=False)
    assert len(got) == 8 and got == sorted(got) and 1 <= min(got) and max(got) <= 6


# ---- end to end on a tiny random teacher ----------------------------------------------------

@pytest.fixture
def tiny_rte(tmp_path):
    """An RTE config writing under tmp_path, a random 2-layer 'teacher' saved where notebook 03
    would put it, and a 24-pair transfer set with (made-up) teacher logits."""
    import datasets

    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.models.teacher import load_tokenizer, teacher_dir
    from kdnb.utils import write_json

    cfg = load_config("rte", "smoke", overrides={
        "output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "fig"),
        "peakd.layers": [1], "peakd.variants": ["kd", "sps+ptp"], "peakd.epochs": 1, "peakd.ptp_epochs": 4,
        "peakd.ptp_patience": 1, "peakd.seeds": [],
        "peakd.batch_size": 8, "peakd.max_length": 32, "peakd.learning_rate": 1e-3, "peakd.ptp_threshold": 0.51})
    tok = load_tokenizer(cfg)
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2))
    # the 'pre-trained' model the teacher was fine-tuned from (other weights, same sizes and vocabulary)
    import dataclasses

    torch.manual_seed(1)
    pre = BertForSequenceClassification(teacher.config)
    pre.save_pretrained(tmp_path / "pretrained")
    tok.save_pretrained(tmp_path / "pretrained")
    cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher,
                                                               model_name_or_path=str(tmp_path / "pretrained")))
    tdir = teacher_dir(cfg)
    teacher.save_pretrained(tdir / "model")
    tok.save_pretrained(tdir / "model")
    write_json(tdir / "result.json", {"config_hash": "tiny", "dev_score": 0.5})
    dsd = load_task("rte", cfg.data_path)
    dsd = datasets.DatasetDict({"train": dsd["train"].select(range(24)), "dev": dsd["dev"].select(range(16))})
    rng = np.random.default_rng(0)
    transfer = dsd["train"].add_column("teacher_logits", rng.normal(size=(24, 2)).astype(np.float32).tolist())
    return cfg, dsd, transfer


def test_peakd_comparison_trains_saves_reuses_and_reloads(tiny_rte):
    cfg, dsd, transfer = tiny_rte
    comp = experiments.peakd_comparison(cfg, transfer, dsd)
    assert [r.name for r in comp.runs] == [f"peakd-1L-kd-s{cfg.seed}", f"peakd-1L-sps-ptp-s{cfg.seed}"]
    kd, pea = comp.runs
    assert (kd.effective_layers, pea.effective_layers) == (1, 2)
    assert kd.n_params == pea.n_params  # SPS adds depth, not parameters
    assert pea.ptp_counts is not None and sum(pea.ptp_counts.values()) == 24 and pea.ptp_seconds > 0
    t = comp.table
    assert list(t["SPS"]) == ["no", "yes"] and list(t["PTP"]) == ["no", "yes"]
    assert {"parameters", "dev accuracy (%)", "retention (%)", "train time (s)"} <= set(t.columns)
    assert t["retention (%)"].tolist() == pytest.approx([100 * r.dev_score / 0.5 for r in comp.runs], abs=0.11)
    sdir = cfg.out / "students" / pea.name
    for f in ("model.pt", "student.json", "learning_curve.csv", "ptp_curve.csv", "dev_predictions.csv", "result.json"):
        assert (sdir / f).is_file(), f
    assert json.loads((sdir / "result.json").read_text())["init"] == "pretrained" and list(t["init"]) == ["pretrained"] * 2
    # PTP until convergence: stopped when the dev PTP accuracy stalled ptp_patience epochs, or at the cap
    import pandas as pd

    curve = pd.read_csv(sdir / "ptp_curve.csv")
    info = json.loads((sdir / "ptp.json").read_text())
    acc = curve["dev_ptp_accuracy"].tolist()
    assert info["epochs"] == len(acc) == pea.ptp_epochs and 1 <= len(acc) <= cfg.peakd.ptp_epochs
    assert info["best_epoch"] == 1 + int(np.argmax(acc))                     # the best (earliest) epoch is kept
    p = cfg.peakd.ptp_patience
    assert len(acc) == cfg.peakd.ptp_epochs or max(acc[-p:]) <= max(acc[:-p])
    assert t["PTP epochs (mean)"].iloc[1] == len(acc) and t["dev mean ± std"].iloc[0] == f"{t['dev accuracy (%)'].iloc[0]:.1f}"
    assert not (sdir / "checkpoint").exists()
    # a second call reuses every student
    again = experiments.peakd_comparison(cfg, transfer, dsd)
    assert all(r.reused for r in again.runs) and again.table.equals(t)
    # the saved student rebuilds with its sharing and gives the saved dev predictions
    model, tok = peakd.load_student(cfg, pea.name)
    layers = model.bert.encoder.layer
    assert layers[1].attention.self.query.weight is layers[0].attention.self.key.weight
    import pandas as pd

    saved = pd.read_csv(sdir / "dev_predictions.csv")
    rows = bert_inputs.encode_rows(tok, dsd["dev"], cfg.peakd.max_length)
    batch = bert_inputs.BertCollate(tok)(rows)
    with torch.no_grad():
        logits = model(**bert_inputs.model_inputs(batch)).logits
    assert np.allclose(logits.numpy(), saved[["logit_0", "logit_1"]].to_numpy(), atol=1e-4)
    # changing a training key retrains (not reused)
    import dataclasses

    cfg2 = dataclasses.replace(cfg, peakd=dataclasses.replace(cfg.peakd, alpha=0.3, variants=["kd"]))
    assert not experiments.peakd_comparison(cfg2, transfer, dsd).runs[0].reused


def test_students_start_from_the_pretrained_model_not_the_teacher(tiny_rte):
    # Pea-KD / PKD: "initialized with the first k layers of the pre-trained BERT"
    cfg, _, _ = tiny_rte
    from kdnb.models.teacher import load_teacher

    teacher, _ = load_teacher(cfg)
    source = peakd_model.pretrained_source(cfg, teacher.config.num_labels)
    student = peakd_model.build_student(source, 1, sps=False)
    s_q = student.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(s_q, source.bert.encoder.layer[0].attention.self.query.weight)
    assert not torch.allclose(s_q, teacher.bert.encoder.layer[0].attention.self.query.weight)
    from kdnb.config import load_config
    from kdnb.errors import ConfigError

    big = load_config("rte", "smoke")  # the packaged 384-wide model is not this 16-wide teacher's source
    with pytest.raises(ConfigError, match="peakd.init"):
        peakd._check_source(peakd_model.pretrained_source(big, 2), teacher)


def test_peakd_config_keys_are_validated():
    from kdnb.config import load_config
    from kdnb.errors import ConfigError

    cfg = load_config("rte", "peakd")
    assert cfg.peakd.enabled and not load_config("rte", "cpu").peakd.enabled
    # as the paper: pre-trained init, PTP to convergence with one threshold, 3 seeds
    assert cfg.peakd.init == "pretrained" and cfg.peakd.ptp_threshold_wrong is None
    assert cfg.peakd.ptp_patience >= 1 and cfg.peakd.ptp_epochs > cfg.peakd.ptp_patience
    assert len(cfg.peakd.seeds) == 3 and load_config("rte", "thesis").peakd.init == "pretrained"
    assert load_config("rte", "cpu").teacher.max_length == 128  # per_task: pairs need the length
    for key, value, msg in (("peakd.variants", ["kd", "pea"], "peakd.variants"),
                            ("peakd.layers", [0], "peakd.layers"), ("peakd.layers", [2, 2], "peakd.layers"),
                            ("peakd.alpha", 1.5, "peakd.alpha"), ("peakd.seeds", [1, 1], "peakd.seeds"),
                            ("peakd.ptp_threshold_wrong", 0.6, "deprecated.*one threshold"),
                            ("peakd.init", "finetuned", "peakd.init"), ("peakd.ptp_patience", 0, "peakd.ptp_patience"),
                            ("peakd.beta", -1.0, "peakd.beta"), ("peakd.depth", 3, "unknown key 'peakd.depth'")):
        with pytest.raises(ConfigError, match=msg):
            load_config("rte", "peakd", overrides={key: value})
