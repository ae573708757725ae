import pytest
import torch

from kdnb.models.bilstm import BiLSTMStudent, WordPieceCollate
from kdnb.models.common import count_parameters


def test_bilstm_shapes_and_tang_architecture():
    torch.manual_seed(0)
    m = BiLSTMStudent(vocab_size=100, embedding_dim=16, num_labels=3, hidden_size=300, fc_size=400)
    ids = torch.randint(1, 100, (4, 7))
    lengths = torch.tensor([7, 3, 1, 5])
    assert m(ids, lengths).shape == (4, 3)
    assert m.encode(ids, lengths).shape == (4, 600)  # concatenated final fw/bw states
    assert m.lstm.bidirectional and m.lstm.num_layers == 1 and m.fc.out_features == 400
    # padding after a sentence's length does not change its logits
    padded = ids.clone()
    padded[1, 3:] = 0
    assert torch.allclose(m(ids, lengths)[1], m(padded, lengths)[1], atol=1e-6)


def test_embedding_modes():
    w = torch.randn(50, 8)
    static = BiLSTMStudent(50, 8, 2, 4, 4, embedding_weights=w, embedding_mode="static")
    assert torch.equal(static.embedding.weight, w) and not static.embedding.weight.requires_grad
    multi = BiLSTMStudent(50, 8, 2, 4, 4, embedding_weights=w, embedding_mode="multichannel")
    assert multi.lstm.input_size == 16 and multi.embedding.weight.requires_grad
    assert not multi.static_embedding.weight.requires_grad
    assert count_parameters(multi, trainable_only=True) == count_parameters(multi) - 50 * 8
    with pytest.raises(ValueError, match="expected \\(50, 9\\)"):
        BiLSTMStudent(50, 9, 2, embedding_weights=w)
    with pytest.raises(ValueError, match="embedding_mode"):
        BiLSTMStudent(50, 8, 2, embedding_mode="dynamic")


def test_wordpiece_collate():
    from kdnb.config import load_config
    from kdnb.models.teacher import load_tokenizer

    tok = load_tokenizer(load_config("cola", "smoke"))
    rows = [{"sentence": "The cat sat.", "teacher_logits": [0.1, 0.2], "label": 1},
            {"sentence": "Unbelievably long words appear.", "teacher_logits": [0.3, 0.4], "label": 0}]
    b = WordPieceCollate(tok, max_length=4)(rows)
    assert b["input_ids"].shape == (2, 4) and b["lengths"].tolist() == [4, 4]
    assert tok.cls_token_id not in b["input_ids"].tolist()[0]  # no [CLS]/[SEP]
    assert b["teacher_logits"].shape == (2, 2) and b["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("mode", ["non-static", "multichannel"])
def test_compact_embeddings_train_exactly_like_the_full_matrix(mode):
    """Adadelta on the kept rows only gives the same model as on the whole vocabulary."""
    import copy

    torch.manual_seed(0)
    full = BiLSTMStudent(200, 8, 2, 6, 5, embedding_weights=torch.randn(200, 8), embedding_mode=mode)
    compact = copy.deepcopy(full)
    before = full.embedding.weight.detach().clone()
    keep = torch.tensor([0, 3, 5, 7, 11, 13, 17, 100])
    compact.compact(keep)
    assert compact.embedding.weight.shape == (8, 8)
    opts = [torch.optim.Adadelta([p for p in m.parameters() if p.requires_grad]) for m in (full, compact)]
    for _ in range(5):
        ids, lengths = keep[torch.randint(1, 8, (4, 6))], torch.tensor([6, 5, 3, 1])
        for m, opt in zip((full, compact), opts):
            opt.zero_grad()
            m(ids, lengths).pow(2).sum().backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
    moved = (full.embedding.weight.detach() != before).any(-1)
    assert moved[keep[1:]].all() and not moved[[1, 2, 50, 199]].any()  # only seen rows train
    compact.expand()
    a, b = full.state_dict(), compact.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match="padding id"):
        BiLSTMStudent(20, 4, 2).compact(torch.tensor([3, 4]))


@pytest.mark.parametrize("cls", ["single", "siamese"])
def test_unpacked_final_states_equal_the_packed_ones(cls):
    """The sync-free path for CUDA graphs (no pack_padded_sequence) gives the packed BiLSTM's
    logits and gradients, whatever the padding."""
    from kdnb.models.bilstm import SiameseBiLSTMStudent

    torch.manual_seed(0)
    ids = torch.randint(1, 50, (5, 9))
    lengths = torch.tensor([9, 3, 1, 6, 2])
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    if cls == "single":
        model, args = BiLSTMStudent(50, 8, 3, hidden_size=6, fc_size=5), (ids, lengths)
    else:
        model = SiameseBiLSTMStudent(50, 8, 3, hidden_size=6, fc_size=5)
        args = (ids, lengths, ids.flip(0)[:, :7], lengths.flip(0).clamp(max=7))
    out, grads = {}, {}
    for packed in (True, False):
        model.packed = packed
        model.zero_grad()
        out[packed] = model(*args)
        out[packed].pow(2).sum().backward()
        grads[packed] = [p.grad.clone() for p in model.parameters()]
    assert torch.allclose(out[True], out[False], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[True], grads[False]))
    # more padding changes nothing on the unpacked path either
    wide = torch.cat([ids, torch.zeros(5, 7, dtype=torch.long)], 1)
    if cls == "single":
        assert torch.allclose(model(wide, lengths), out[False], atol=1e-6)


def test_wordpiece_collate_pads_to_a_multiple():
    from kdnb.config import load_config
    from kdnb.models.teacher import load_tokenizer

    tok = load_tokenizer(load_config("cola", "smoke"))
    rows = [{"sentence": "The cat sat on the mat."}, {"sentence": "Dogs bark."}]
    plain = WordPieceCollate(tok, max_length=64)(rows)
    b = WordPieceCollate(tok, max_length=64, pad_to_multiple_of=8)(rows)
    assert b["input_ids"].shape == (2, 8) and plain["input_ids"].shape[1] == int(plain["lengths"].max()) < 8
    assert torch.equal(b["input_ids"][:, : plain["input_ids"].shape[1]], plain["input_ids"])
    assert (b["input_ids"][:, plain["input_ids"].shape[1]:] == (tok.pad_token_id or 0)).all()


def test_distill_seeds_runs_each_seed_under_its_own_name():
    from kdnb.config import load_config
    from kdnb.training.runs import distill_seeds, seed_name

    cfg = load_config("cola", "smoke", overrides={"seeds": [7, 42, 9]})
    calls = []

    def fake(c, transfer, dsd, name, force=False):
        calls.append((c.seed, name, transfer, force))
        return f"result {c.seed}"

    runs = distill_seeds(cfg, fake, "T", "D", name="bilstm", force=True)
    assert calls == [(7, "bilstm-seed7", "T", True), (42, "bilstm", "T", True), (9, "bilstm-seed9", "T", True)]
    assert runs.main == "result 42" and list(runs.runs) == [7, 42, 9]
    assert seed_name("bert_student", 42, cfg) == "bert_student"
    no_main = distill_seeds(cfg.with_seed(1), fake, "T", "D", name="x")  # the run's seed not among seeds
    assert no_main.main == "result 7"
