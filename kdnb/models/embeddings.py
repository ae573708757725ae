"""Word-level word2vec embeddings for the BiLSTM student (the thesis' embedding exploration).

Sučík (2020, §4.3) compares the BiLSTM student of Tang et al. (2019) with word-level word2vec
vectors (Mikolov et al. 2013; Tang et al. use the 300-d GoogleNews vectors) against the
teacher's WordPiece embeddings, each in the modes of Kim (2014), "Convolutional neural
networks for sentence classification", §2.1: *static* (frozen), *non-static* (fine-tuned) and
*multichannel* (a frozen and a fine-tuned copy; :class:`kdnb.models.bilstm.BiLSTMStudent`).

This module builds, with well-kept libraries only:

* the word vocabulary of the transfer set and a word-level tokenizer for it
  (🤗 ``tokenizers`` ``WordLevel`` model behind ``PreTrainedTokenizerFast``, with BERT's
  normaliser and pre-tokeniser, so words are split exactly as the uncased teacher splits them
  before WordPiece): id 0 is ``[PAD]``, id 1 is ``[UNK]``; the rule augmentation's ``[MASK]``
  (``augment.rules.mask_token``) is one word, the unknown word ``[UNK]`` — Tang et al. (2019),
  §3.3: "we replace the word with [MASK], which corresponds to an unknown token in our models"
  (BERT's pre-tokeniser alone would split it into ``[``, ``mask``, ``]``);
* the vectors: loaded with gensim's ``KeyedVectors`` from the file named by
  ``bilstm.word2vec.path`` (word2vec text or binary format, or gensim's own ``.kv``), or, when
  no file is named (the offline profiles), trained with gensim's ``Word2Vec`` on the transfer
  set's sentences;
* the ``(V, E)`` embedding matrix: the word's vector where the vectors have it, otherwise
  ``U[−a, a]`` with ``a`` chosen so these rows have the variance of the known ones (Kim 2014,
  §3.1 "CNN-rand"/"CNN-static" set-up); the ``[PAD]`` row is zero.

:func:`word2vec_embeddings` does all three and caches the result under
``<out>/word2vec/`` (reused while the transfer set and ``bilstm.word2vec`` are unchanged).
"""

from __future__ import annotations

import collections
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from ..config import Config, Word2VecConfig
from ..errors import ConfigError
from ..store import Artefact
from ..utils import atomic_path

PAD, UNK = "[PAD]", "[UNK]"
"""Special words: ids 0 and 1 of every word vocabulary built here."""

MASK = "[MASK]"
"""The rule augmentation's mask token (``augment.rules.mask_token``'s default)."""

_MASK_WORD = "kdnbmaskedword"
"""What the normaliser turns the mask token into: one lowercase ASCII word that BERT's
pre-tokeniser keeps whole and that no vocabulary built here holds, so the tokenizer maps it to
``[UNK]`` (and :func:`split_words` returns it as ``[UNK]``)."""


def _normaliser(lowercase: bool, mask_token: Optional[str] = MASK):
    from tokenizers import normalizers

    bert = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    if not mask_token:
        return bert
    return normalizers.Sequence([normalizers.Replace(mask_token, f" {_MASK_WORD} "), bert])


def split_words(texts: Iterable[str], lowercase: bool = True, mask_token: Optional[str] = MASK) -> list[list[str]]:
    """Split texts into words as BERT does before WordPiece (``BertNormalizer`` then
    ``BertPreTokenizer``: whitespace, and every punctuation character is a word).

    Args:
        texts: sentences.
        lowercase: lowercase and strip accents (the uncased teacher's normalisation).
        mask_token: the augmentation's mask token; each occurrence becomes the one word
            ``[UNK]`` (Tang et al. 2019, §3.3: [MASK] "corresponds to an unknown token"), not
            the three words ``[``, ``mask``, ``]``. ``None`` or ``""``: no special treatment.

    Returns:
        One list of words per text.
    """
    from tokenizers import pre_tokenizers

    norm, pre = _normaliser(lowercase, mask_token), pre_tokenizers.BertPreTokenizer()
    return [[UNK if w == _MASK_WORD else w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))]
            for t in texts]


def build_vocab(token_lists: Iterable[Sequence[str]], min_count: int = 1,
                max_size: Optional[int] = None) -> list[str]:
    """The word vocabulary: ``[PAD]``, ``[UNK]``, then the words seen at least ``min_count``
    times, most frequent first (ties alphabetical, so the order is reproducible), at most
    ``max_size`` words in all (specials included).

    Raises:
        ValueError: ``min_count < 1`` or ``max_size < 3``.
    """
    if min_count < 1 or (max_size is not None and max_size < 3):
        raise ValueError(f"need min_count >= 1 and max_size >= 3 (or None), got {min_count}, {max_size}")
    counts = collections.Counter(w for words in token_lists for w in words)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK)),
                   key=lambda w: (-counts[w], w))
    vocab = [PAD, UNK] + words
    return vocab[:max_size] if max_size is not None else vocab


def word_tokenizer(vocab: Sequence[str], lowercase: bool = True, mask_token: Optional[str] = MASK):
    """A word-level tokenizer for ``vocab`` (``transformers.PreTrainedTokenizerFast`` around a
    🤗 ``tokenizers`` ``WordLevel`` model; unknown words → ``[UNK]``; ``mask_token`` → one
    ``[UNK]``, as in :func:`split_words`). It is called like the
    teacher's tokenizer (``tok(texts, add_special_tokens=False, truncation=True,
    max_length=...)["input_ids"]``), so :class:`kdnb.models.bilstm.WordPieceCollate` batches with it;
    ``save_pretrained``/``from_pretrained`` store and reload it.

    Raises:
        ValueError: ``vocab`` does not start with ``[PAD]``, ``[UNK]`` or repeats a word.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if list(vocab[:2]) != [PAD, UNK] or len(set(vocab)) != len(vocab):
        raise ValueError("vocab must start with [PAD], [UNK] and hold distinct words")
    if _MASK_WORD in vocab:
        raise ValueError(f"vocab must not hold the internal mask word {_MASK_WORD!r}")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = _normaliser(lowercase, mask_token)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK)


def _stable_hash(s: str) -> int:
    """A process-independent string hash for gensim's per-word vector seeding (gensim's default,
    Python's ``hash``, changes with ``PYTHONHASHSEED``, so trained vectors would too)."""
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")


def train_word2vec(token_lists: Sequence[Sequence[str]], *, vector_size: int = 300, window: int = 5,
                   min_count: int = 1, sg: bool = True, negative: int = 5, epochs: int = 5, seed: int = 0):
    """Train word2vec (Mikolov et al. 2013; skip-gram with negative sampling by default) with
    gensim's ``Word2Vec`` on ``token_lists`` — one worker thread and a stable hash, so the same
    input and seed give the same vectors in every process.

    Returns:
        gensim ``KeyedVectors`` (``vector_size``-dimensional).

    Raises:
        ValueError: no sentence holds a word seen ``min_count`` times.
    """
    from gensim.models import Word2Vec

    sentences = [list(s) for s in token_lists if len(s)]
    counts = collections.Counter(w for s in sentences for w in s)
    if not any(c >= min_count for c in counts.values()):
        raise ValueError(f"word2vec: no word occurs {min_count} times in the {len(sentences)} training sentences")
    model = Word2Vec(sentences, vector_size=vector_size, window=window, min_count=min_count, sg=int(sg),
                     negative=negative, epochs=epochs, seed=seed, workers=1, hashfxn=_stable_hash)
    return model.wv


def load_keyed_vectors(path: str | os.PathLike, fmt: str = "auto", limit: Optional[int] = None):
    """Load word vectors with gensim's ``KeyedVectors``.

    Args:
        path: the vectors file.
        fmt: ``text`` / ``binary`` (the original word2vec formats: ``KeyedVectors.
            load_word2vec_format``), ``gensim`` (``KeyedVectors.save`` output, memory-mapped), or
            ``auto``: ``gensim`` for ``.kv``/``.model``, ``binary`` for ``.bin``/``.bin.gz``,
            else ``text``.
        limit: read at most this many vectors (word2vec formats; files list frequent words first).

    Returns:
        gensim ``KeyedVectors``.

    Raises:
        ConfigError: missing or unreadable file, naming the key ``bilstm.word2vec.path``.
    """
    from gensim.models import KeyedVectors

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"key 'bilstm.word2vec.path': no file {p} (expected word vectors: word2vec text or "
                          "binary format, or a gensim KeyedVectors .kv file; null trains word2vec instead).")
    if fmt == "auto":
        name = p.name.lower()
        fmt = ("gensim" if name.endswith((".kv", ".model")) else
               "binary" if name.endswith((".bin", ".bin.gz")) else "text")
    try:
        if fmt == "gensim":
            return KeyedVectors.load(str(p), mmap="r")
        return KeyedVectors.load_word2vec_format(str(p), binary=fmt == "binary", limit=limit)
    except (ValueError, UnicodeDecodeError, EOFError, OSError, KeyError, AttributeError) as e:
        raise ConfigError(f"key 'bilstm.word2vec.path': {p} is not a readable {fmt} word-vectors file "
                          f"({type(e).__name__}: {e}); set bilstm.word2vec.format if the extension misleads.") from None


def embedding_matrix(kv, vocab: Sequence[str], seed: int = 0, lowercase: bool = True) -> tuple[torch.Tensor, int]:
    """The ``(V, E)`` embedding matrix for ``vocab`` from the vectors ``kv``.

    A word takes its vector from ``kv``; with ``lowercase`` vocabularies the capitalised and
    upper-case forms are tried too (cased files such as GoogleNews). Other words are drawn from
    ``U[−a, a]`` with ``a = √3·σ`` (σ: the standard deviation of the found vectors' entries), so
    they have the known vectors' variance — Kim (2014), §3.1; the ``[PAD]`` row is zero.

    Returns:
        ``(weights, n_found)``: float32 ``(len(vocab), kv.vector_size)`` and how many words
        (specials excluded) had a vector.
    """
    dim = int(kv.vector_size)
    weights = np.zeros((len(vocab), dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    for i, w in enumerate(vocab):
        if w in (PAD, UNK):
            continue
        for form in ((w, w.capitalize(), w.upper()) if lowercase else (w,)):
            if form in kv.key_to_index:
                weights[i] = kv[form]
                found[i] = True
                break
    sigma = float(weights[found].std()) if found.any() else 0.25 / np.sqrt(3)
    rng = np.random.default_rng(seed)
    fill = ~found
    fill[0] = False  # [PAD] stays zero
    a = np.sqrt(3.0) * sigma
    weights[fill] = rng.uniform(-a, a, size=(int(fill.sum()), dim)).astype(np.float32)
    return torch.from_numpy(weights), int(found.sum())


@dataclass
class Word2VecEmbeddings:
    """What :func:`word2vec_embeddings` returns.

    Attributes:
        weights: float32 ``(V, E)`` embedding matrix (row 0 ``[PAD]``, row 1 ``[UNK]``).
        tokenizer: the word-level tokenizer of the ``V`` words (:func:`word_tokenizer`).
        stats: ``source`` (the file, or ``trained on the transfer set``), ``vocab_size``,
            ``found`` (words with a vector), ``coverage`` (found / words), ``dim``, ``seconds``.
        reused: loaded from ``<out>/word2vec/`` instead of computed.
    """

    weights: torch.Tensor
    tokenizer: object
    stats: dict
    reused: bool


def word2vec_dir(cfg: Config) -> Path:
    return cfg.out / "word2vec"


def _texts(ds) -> list[str]:
    out: list[str] = []
    for col in ("sentence", "sentence2"):
        if col in ds.column_names:
            out += list(ds[col])
    return out


def word2vec_embeddings(cfg: Config, transfer_set, force: bool = False) -> Word2VecEmbeddings:
    """Word vocabulary, tokenizer and embedding matrix of the BiLSTM for ``bilstm.embedding:
    word2vec``, from the transfer set's ``sentence`` (and ``sentence2``) texts.

    The vocabulary is the transfer set's words (``bilstm.word2vec.min_count``,
    ``vocab_size``); vectors come from ``bilstm.word2vec.path`` (:func:`load_keyed_vectors`)
    or, with no path, from :func:`train_word2vec` on the transfer set (seed ``cfg.seed``). The
    result (``embedding.pt``, ``tokenizer/``, ``word2vec.json``) is cached in ``<out>/word2vec/``
    and reused while the texts and ``bilstm.word2vec`` are the same (and, for a file, its size
    and modification time); ``force`` recomputes.

    Raises:
        ConfigError: the vectors file is missing or unreadable, or its vectors cover no word.
    """
    import time

    from transformers import PreTrainedTokenizerFast

    from ..data import content_hash

    wc: Word2VecConfig = cfg.bilstm.word2vec
    out = word2vec_dir(cfg)
    src = None
    if wc.path is not None:
        p = Path(wc.path).expanduser()
        src = {"path": str(p.resolve()), "size": p.stat().st_size if p.is_file() else None,
               "mtime": p.stat().st_mtime if p.is_file() else None}
    meta = {"word2vec": repr(sorted(vars(wc).items())), "seed": cfg.seed, "mask": cfg.augment.rules.mask_token,
            "texts": content_hash(transfer_set), "rows": len(transfer_set), "file": src}
    art = Artefact("word_vectors", out, meta, cfg.out, record=out / "word2vec.json", field="meta")
    saved = art.saved(force)
    if saved:
        tok = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
        return Word2VecEmbeddings(torch.load(out / "embedding.pt", weights_only=True), tok, saved["stats"], True)

    t0 = time.perf_counter()
    mask = cfg.augment.rules.mask_token
    words = split_words(_texts(transfer_set), wc.lowercase, mask)
    vocab = build_vocab(words, wc.min_count, wc.vocab_size)
    if wc.path is not None:
        kv = load_keyed_vectors(wc.path, wc.format, wc.limit)
        source = str(wc.path)
    else:
        kv = train_word2vec(words, vector_size=wc.vector_size, window=wc.window, min_count=wc.min_count,
                            sg=wc.sg, negative=wc.negative, epochs=wc.epochs, seed=cfg.seed)
        source = "trained on the transfer set (gensim Word2Vec)"
    weights, found = embedding_matrix(kv, vocab, seed=cfg.seed, lowercase=wc.lowercase)
    n_words = len(vocab) - 2
    if n_words and not found:
        raise ConfigError(f"key 'bilstm.word2vec.path': {wc.path} has a vector for none of the transfer set's "
                          f"{n_words} words (is it the right file, and bilstm.word2vec.lowercase right for it?).")
    stats = {"source": source, "vocab_size": len(vocab), "found": found,
             "coverage": round(found / max(n_words, 1), 4), "dim": int(weights.shape[1]),
             "seconds": round(time.perf_counter() - t0, 2)}
    tok = word_tokenizer(vocab, wc.lowercase, mask)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        torch.save(weights, tmp / "embedding.pt")
        tok.save_pretrained(tmp / "tokenizer")
    art.finish({"stats": stats})
    return Word2VecEmbeddings(weights, tok, stats, False)
