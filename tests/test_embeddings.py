"""Word-level word2vec embeddings (kdnb.models.embeddings) and Kim's (2014) embedding modes with them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kdnb.errors import ConfigError
from kdnb.models import embeddings

SENTS = ["The cat sat on the mat.", "A dog sat on the log!", "The cat saw the dog.", "Dogs and cats sat."]


def test_words_vocab_and_word_tokenizer():
    words = embeddings.split_words(["Héllo, World!  it's"])
    assert words == [["hello", ",", "world", "!", "it", "'", "s"]]  # BERT's uncased normaliser + pre-tokeniser
    vocab = embeddings.build_vocab(embeddings.split_words(SENTS))
    assert vocab[:5] == ["[PAD]", "[UNK]", "the", ".", "sat"]  # by frequency (the 5, "." 3, sat 3), ties alphabetical
    assert embeddings.build_vocab(embeddings.split_words(SENTS), min_count=3) == ["[PAD]", "[UNK]", "the", ".", "sat"]
    assert len(embeddings.build_vocab(embeddings.split_words(SENTS), max_size=5)) == 5
    tok = embeddings.word_tokenizer(vocab)
    ids = tok(["the cat sat", "the zebra"], add_special_tokens=False)["input_ids"]
    assert ids[0] == [vocab.index("the"), vocab.index("cat"), vocab.index("sat")]
    assert ids[1] == [vocab.index("the"), 1]  # unknown word → [UNK] = 1
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and len(tok) == len(vocab)
    # it batches in the BiLSTM's collate like the teacher's tokenizer
    from kdnb.models.bilstm import WordPieceCollate

    b = WordPieceCollate(tok, max_length=8)([{"sentence": "The cat."}, {"sentence": "A dog sat on the mat!"}])
    assert b["lengths"].tolist() == [3, 7] and b["input_ids"][0, 3:].tolist() == [0] * 4
    with pytest.raises(ValueError):
        embeddings.word_tokenizer(["cat", "[PAD]", "[UNK]"])


def test_mask_token_is_the_unknown_word(tmp_path):
    # Tang et al. (2019, §3.3): the augmentation's [MASK] is an unknown token for the word-level
    # model — one [UNK], not "[", "mask", "]".
    masked = ["The [MASK] sat on the mat.", "[MASK] dog[MASK] sat"]
    words = embeddings.split_words(masked)
    assert words == [["the", "[UNK]", "sat", "on", "the", "mat", "."], ["[UNK]", "dog", "[UNK]", "sat"]]
    assert embeddings.split_words(["a [MASK]"], mask_token=None) == [["a", "[", "mask", "]"]]
    vocab = embeddings.build_vocab(embeddings.split_words(SENTS + masked))
    assert "mask" not in vocab and "[" not in vocab and vocab.count("[UNK]") == 1
    tok = embeddings.word_tokenizer(vocab)
    ids = tok(masked, add_special_tokens=False)["input_ids"]
    assert ids[0] == [vocab.index("the"), 1, vocab.index("sat"), vocab.index("on"), vocab.index("the"),
                      vocab.index("mat"), vocab.index(".")]
    assert ids[1] == [1, vocab.index("dog"), 1, vocab.index("sat")]
    # the saved tokenizer keeps the rule
    from transformers import PreTrainedTokenizerFast

    tok.save_pretrained(tmp_path / "tok")
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    assert again(masked, add_special_tokens=False)["input_ids"] == ids


def test_train_word2vec_is_reproducible():
    words = embeddings.split_words(SENTS * 5)
    a = embeddings.train_word2vec(words, vector_size=12, epochs=3, seed=3)
    b = embeddings.train_word2vec(words, vector_size=12, epochs=3, seed=3)
    c = embeddings.train_word2vec(words, vector_size=12, epochs=3, seed=4)
    assert a.vector_size == 12 and "cat" in a.key_to_index
    assert np.array_equal(a["cat"], b["cat"]) and not np.array_equal(a["cat"], c["cat"])
    with pytest.raises(ValueError, match="no word"):
        embeddings.train_word2vec([["a"], ["b"]], min_count=2)


@pytest.fixture
def vectors_file(tmp_path):
    """A tiny word2vec text file with a capitalised word (as in the cased GoogleNews vectors)."""
    p = tmp_path / "tiny.txt"
    p.write_text("3 4\nthe 0.1 0.2 0.3 0.4\nParis 1 2 3 4\ncat -1 0 1 0.5\n")
    return p


def test_load_keyed_vectors_formats_and_errors(tmp_path, vectors_file):
    kv = embeddings.load_keyed_vectors(vectors_file)
    assert kv.vector_size == 4 and list(kv.key_to_index) == ["the", "Paris", "cat"]
    assert embeddings.load_keyed_vectors(vectors_file, limit=2).index_to_key == ["the", "Paris"]
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    kv.save(str(tmp_path / "v.kv"))
    for name in ("v.bin", "v.kv"):  # format chosen by the extension
        assert np.allclose(embeddings.load_keyed_vectors(tmp_path / name)["cat"], [-1, 0, 1, 0.5])
    with pytest.raises(ConfigError, match="bilstm.word2vec.path.*no file"):
        embeddings.load_keyed_vectors(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not\na vectors file\n")
    with pytest.raises(ConfigError, match="bilstm.word2vec.path.*not a readable text"):
        embeddings.load_keyed_vectors(bad)


def test_embedding_matrix(vectors_file):
    kv = embeddings.load_keyed_vectors(vectors_file)
    vocab = ["[PAD]", "[UNK]", "the", "paris", "cat", "zebra", "mat"]
    w, found = embeddings.embedding_matrix(kv, vocab, seed=0)
    assert w.shape == (7, 4) and w.dtype == torch.float32 and found == 3
    assert torch.equal(w[0], torch.zeros(4))                         # [PAD]
    assert torch.allclose(w[3], torch.tensor([1.0, 2, 3, 4]))         # "paris" found as "Paris"
    assert torch.allclose(w[4], torch.tensor([-1.0, 0, 1, 0.5]))
    known = np.stack([kv["the"], kv["Paris"], kv["cat"]])
    a = np.sqrt(3) * known.std()
    oov = w[[1, 5, 6]]
    assert (oov.abs() <= a + 1e-6).all() and oov.abs().sum() > 0     # U[-a, a] (Kim 2014), not zero
    assert torch.equal(embeddings.embedding_matrix(kv, vocab, seed=0)[0], w)  # seeded
    assert embeddings.embedding_matrix(kv, vocab, seed=0, lowercase=False)[1] == 2  # no "Paris" for "paris"


def _w2v_cfg(tmp_path, **w2v):
    from kdnb.config import load_config

    over = {"output_dir": str(tmp_path / "out"), "bilstm.embedding": "word2vec", "probing.enabled": False}
    over.update({f"bilstm.word2vec.{k}": v for k, v in w2v.items()})
    return load_config("cola", "smoke", overrides=over)


def test_word2vec_embeddings_from_a_file_and_trained(tmp_path, vectors_file):
    import datasets

    ds = datasets.Dataset.from_dict({"sentence": SENTS + ["Paris!"]})
    got = embeddings.word2vec_embeddings(_w2v_cfg(tmp_path, path=str(vectors_file)), ds)
    vocab = got.tokenizer.convert_ids_to_tokens(list(range(len(got.tokenizer))))
    assert not got.reused and got.stats["found"] == 3 and got.stats["dim"] == 4
    assert got.stats["coverage"] == pytest.approx(3 / (len(vocab) - 2), abs=1e-4)
    assert torch.allclose(got.weights[vocab.index("paris")], torch.tensor([1.0, 2, 3, 4]))
    again = embeddings.word2vec_embeddings(_w2v_cfg(tmp_path, path=str(vectors_file)), ds)
    assert again.reused and torch.equal(again.weights, got.weights)
    trained = embeddings.word2vec_embeddings(_w2v_cfg(tmp_path, vector_size=8, epochs=2), ds)  # no path: trained here
    assert not trained.reused and trained.weights.shape == (len(vocab), 8) and trained.stats["coverage"] == 1.0
    with pytest.raises(ConfigError, match="bilstm.word2vec.path"):
        embeddings.word2vec_embeddings(_w2v_cfg(tmp_path, path=str(tmp_path / "nope.bin")), ds)


def test_word2vec_config_keys_are_validated():
    from kdnb.config import load_config

    w2v = {"bilstm.embedding": "word2vec", "probing.enabled": False}
    assert load_config("cola", "smoke", overrides=w2v).bilstm.word2vec.vector_size == 300
    with pytest.raises(ConfigError, match="bilstm.embedding.*probing"):  # no WordPiece probing of word vectors
        load_config("cola", "smoke", overrides={"bilstm.embedding": "word2vec"})
    with pytest.raises(ConfigError, match="bilstm.word2vec.format"):
        load_config("cola", "smoke", overrides={"bilstm.word2vec.format": "glove"})
    with pytest.raises(ConfigError, match="bilstm.word2vec.window"):
        load_config("cola", "smoke", overrides={"bilstm.word2vec.window": 0})
    with pytest.raises(ConfigError, match="unknown key 'bilstm.word2vec.dims'"):
        load_config("cola", "smoke", overrides={"bilstm.word2vec.dims": 3})
    # the word2vec keys do not change the BiLSTM's saved-output hash unless word2vec is used
    base = load_config("cola", "smoke")
    other = load_config("cola", "smoke", overrides={"bilstm.word2vec.epochs": 9})
    assert base.section_hash("bilstm") == other.section_hash("bilstm")
    on = load_config("cola", "smoke", overrides=w2v)
    on9 = load_config("cola", "smoke", overrides={**w2v, "bilstm.word2vec.epochs": 9})
    assert on.section_hash("bilstm") != on9.section_hash("bilstm")


@pytest.mark.parametrize("mode", ["static", "non-static", "multichannel"])
def test_embedding_modes_with_word2vec_weights(mode):
    """Kim (2014): static keeps the word2vec vectors, non-static tunes them, multichannel keeps a
    frozen copy beside a tuned one."""
    from kdnb.config import BiLSTMConfig
    from kdnb.models.bilstm import build_bilstm

    weights = torch.randn(12, 6)
    tok = embeddings.word_tokenizer(["[PAD]", "[UNK]"] + [f"w{i}" for i in range(10)])
    bc = dataclasses.replace(BiLSTMConfig(), embedding="word2vec", embedding_mode=mode, hidden_size=5, fc_size=4)
    m = build_bilstm(bc, 2, tok, embedding_weights=weights)
    assert torch.equal(m.embedding.weight, weights)
    with pytest.raises(ValueError, match="word2vec"):
        build_bilstm(bc, 2, tok)
    ids, lengths = torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2])
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    m(ids, lengths).pow(2).sum().backward()
    opt.step()
    moved = not torch.equal(m.embedding.weight, weights)
    assert moved == (mode != "static")
    if mode == "multichannel":
        assert torch.equal(m.static_embedding.weight, weights) and m.lstm.input_size == 12
