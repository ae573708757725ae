"""Student models and their distillation from the teacher's logits.

* :class:`BiLSTMStudent`: Tang et al. (2019), "Distilling task-specific knowledge from BERT
  into simple neural networks", §3.1 — one bidirectional LSTM layer, the concatenated final
  forward/backward states, a ReLU fully-connected layer and a linear layer to the logits.
  Embeddings are initialised from the teacher's WordPiece embedding matrix (the thesis'
  better choice, Sučík 2020 §4.3) and the input is WordPiece-tokenised by the teacher's
  tokenizer, so the two vocabularies coincide.
* :class:`SiameseBiLSTMStudent`: the sentence-pair variant of Tang et al. (2019), §3.2, chosen
  automatically on pair tasks (RTE): one shared BiLSTM encodes both sentences, and the
  features ``[h1, h2, h1 ⊙ h2, |h1 − h2|]`` feed the ReLU layer and the logits.
* ``bilstm.embedding: word2vec``: word-level word2vec vectors and a word tokenizer instead of
  WordPiece (:mod:`kdnb.models.embeddings`), in any of Kim's (2014) three modes.
"""

from __future__ import annotations

import typing
from typing import Optional

import datasets
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..config import BiLSTMConfig, EmbeddingMode


class BiLSTMStudent(nn.Module):
    """BiLSTM classifier of Tang et al. (2019).

    Args:
        vocab_size, embedding_dim: size of the embedding matrix ``(V, E)``.
        num_labels: number of classes ``C``.
        hidden_size: LSTM hidden units per direction ``H`` (paper: 300).
        fc_size: units of the ReLU layer (paper: 400).
        embedding_weights: optional ``(V, E)`` tensor to initialise the embeddings with.
        embedding_mode: ``non-static`` (trained), ``static`` (frozen) or ``multichannel``
            (Kim 2014: a frozen and a trained copy, concatenated to ``2E`` features).
        dropout: dropout on the embeddings and before the output layer.
        padding_idx: id of the padding token (its embedding gets no gradient).

    Raises:
        ValueError: unknown ``embedding_mode`` or embedding weights of the wrong shape.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        num_labels: int,
        hidden_size: int = 300,
        fc_size: int = 400,
        embedding_weights: Optional[torch.Tensor] = None,
        embedding_mode: str = "non-static",
        dropout: float = 0.0,
        padding_idx: int = 0,
    ):
        super().__init__()
        if embedding_mode not in typing.get_args(EmbeddingMode):
            raise ValueError(f"embedding_mode must be one of {', '.join(typing.get_args(EmbeddingMode))}, "
                             f"got {embedding_mode!r}")
        if embedding_weights is not None and tuple(embedding_weights.shape) != (vocab_size, embedding_dim):
            raise ValueError(
                f"embedding_weights has shape {tuple(embedding_weights.shape)}, expected {(vocab_size, embedding_dim)}"
            )
        self.embedding_mode = embedding_mode
        # False: final states without pack_padded_sequence (no host sync; for CUDA graphs)
        self.packed = True
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        if embedding_weights is not None:
            self.embedding.weight.data.copy_(embedding_weights)
        self.embedding.weight.requires_grad_(embedding_mode != "static")
        in_dim = embedding_dim
        self.static_embedding = None
        if embedding_mode == "multichannel":
            self.static_embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
            self.static_embedding.weight.data.copy_(self.embedding.weight.data)
            self.static_embedding.weight.requires_grad_(False)
            in_dim = 2 * embedding_dim
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(in_dim, hidden_size, num_layers=1, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden_size, fc_size)
        self.out = nn.Linear(fc_size, num_labels)

        self.register_buffer("id_map", None)  # set by compact(): full vocabulary id → kept row
        self._full_weights: Optional[tuple] = None

    def compact(self, keep_ids: torch.Tensor) -> "BiLSTMStudent":
        """Keep only the embedding rows ``keep_ids`` (1-D long tensor of vocabulary ids), in place.

        A speed-up for training, not a different model: a row whose token never occurs in the
        training batches gets a zero gradient, and Adadelta (Zeiler 2012, Alg. 1) leaves a
        parameter with zero gradient exactly where it was, so dropping the rows of tokens absent
        from every text the student sees changes no result — but the optimiser then updates
        ``len(keep_ids)`` rows instead of the whole vocabulary (≈ 6k instead of 30.5k WordPieces on
        CoLA; one Adadelta step over the full 30522 × 384 matrix costs more than the LSTM's forward
        and backward). Ids outside ``keep_ids`` map to the padding row. Undo with :meth:`expand`
        before saving or using the model on other text.

        Raises:
            ValueError: ``keep_ids`` misses the padding id or holds ids outside the vocabulary.
        """
        if self.id_map is not None:
            raise ValueError("the embeddings are already compacted; call expand() first")
        keep_ids = torch.unique(keep_ids.long())
        vocab = self.embedding.num_embeddings
        pad = self.embedding.padding_idx if self.embedding.padding_idx is not None else 0
        if keep_ids.numel() == 0 or int(keep_ids.min()) < 0 or int(keep_ids.max()) >= vocab:
            raise ValueError(f"keep_ids must be vocabulary ids in [0, {vocab}), got {keep_ids.tolist()[:5]}...")
        if not bool((keep_ids == pad).any()):
            raise ValueError(f"keep_ids must contain the padding id {pad}")
        id_map = torch.full((vocab,), int((keep_ids == pad).nonzero()), dtype=torch.long)
        id_map[keep_ids] = torch.arange(len(keep_ids))
        self._full_weights = (keep_ids, self.embedding.weight.detach().clone(),
                              None if self.static_embedding is None else self.static_embedding.weight.detach().clone())
        self.embedding = _rows(self.embedding, keep_ids, int(id_map[pad]))
        if self.static_embedding is not None:
            self.static_embedding = _rows(self.static_embedding, keep_ids, int(id_map[pad]))
        self.id_map = id_map
        return self

    def expand(self) -> "BiLSTMStudent":
        """Undo :meth:`compact`: scatter the trained rows back into the full ``(V, E)`` matrix."""
        if self.id_map is None:
            return self
        keep_ids, full, full_static = self._full_weights
        for name, base in (("embedding", full), ("static_embedding", full_static)):
            small = getattr(self, name)
            if small is None:
                continue
            weight = base.to(small.weight.device, small.weight.dtype)
            weight[keep_ids.to(weight.device)] = small.weight.detach()
            emb = nn.Embedding.from_pretrained(weight, freeze=not small.weight.requires_grad,
                                               padding_idx=int(keep_ids[int(small.padding_idx)]))
            setattr(self, name, emb)
        self.id_map, self._full_weights = None, None
        return self

    def encode(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sentence representation: concatenated final LSTM states, ``(B, T)`` → ``(B, 2H)``."""
        if self.id_map is not None:
            input_ids = self.id_map[input_ids]
        x = self.embedding(input_ids)
        if self.static_embedding is not None:
            x = torch.cat([x, self.static_embedding(input_ids)], dim=-1)
        x = self.dropout(x)
        if not self.packed:
            return self._final_states_unpacked(x, lengths)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (2, B, H)
        return torch.cat([h_n[0], h_n[1]], dim=-1)

    def _final_states_unpacked(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed BiLSTM's final states without packing, so without a host sync (what a CUDA
        graph needs; :class:`kdnb.training.fit.CUDAGraphStep`): the forward direction runs over the
        right-padded ``x`` ``(B, T, E)`` and is read at position ``length − 1``; the backward
        direction runs forwards over each sequence reversed in place (its first ``length``
        positions flipped, padding kept behind) and is read at the same position. Padding comes
        after the read positions in both scans, so they equal the packed ones. ``(B, 2H)``."""
        B, T, _ = x.shape
        last = (lengths.clamp(min=1, max=T) - 1).unsqueeze(1)  # (B, 1)
        pos = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
        rev = torch.where(pos <= last, last - pos, pos)  # (B, T)
        x_rev = x.gather(1, rev.unsqueeze(-1).expand_as(x))
        H = self.lstm.hidden_size
        read = last.unsqueeze(-1).expand(B, 1, H)
        zeros = x.new_zeros(1, B, H)
        states = []
        for sfx, inp in (("", x), ("_reverse", x_rev)):
            weights = [getattr(self.lstm, n + sfx) for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                               "bias_hh_l0")]
            # one direction with this direction's weights; unlike a module call this never
            # re-flattens (re-allocates) the parameters, which a captured graph points into
            out, _, _ = torch._VF.lstm(inp, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)
            states.append(out.gather(1, read).squeeze(1))
        return torch.cat(states, dim=-1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for token ids ``(B, T)`` (right-padded) with true lengths ``(B,)``."""
        h = torch.relu(self.fc(self.encode(input_ids, lengths)))
        return self.out(self.dropout(h))


def _rows(emb: nn.Embedding, keep_ids: torch.Tensor, padding_idx: int) -> nn.Embedding:
    """A new embedding holding the rows ``keep_ids`` of ``emb`` (same ``requires_grad``)."""
    return nn.Embedding.from_pretrained(emb.weight.detach()[keep_ids].clone(), freeze=not emb.weight.requires_grad,
                                        padding_idx=padding_idx)


class WordPieceCollate:
    """Batch rows for the BiLSTM: WordPiece ids without [CLS]/[SEP], right-padded.

    Returns a dict with ``input_ids`` ``(B, T)`` long, ``lengths`` ``(B,)`` long and, where the
    rows have them, ``teacher_logits`` ``(B, C)`` float and ``labels`` ``(B,)`` long. ``T`` is
    the longest length rounded up to ``pad_to_multiple_of`` (1: no rounding; 8 with CUDA graphs).
    """

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: int = 1):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id or 0
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        enc = self.tokenizer([r["sentence"] for r in rows], add_special_tokens=False, truncation=True,
                             max_length=self.max_length)["input_ids"]
        enc = [ids or [self.tokenizer.unk_token_id] for ids in enc]
        lengths = torch.tensor([len(ids) for ids in enc])
        width = -(-int(lengths.max()) // self.multiple) * self.multiple  # few shapes: one CUDA graph each
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        for i, seq in enumerate(enc):
            ids[i, : len(seq)] = torch.tensor(seq)
        batch = {"input_ids": ids, "lengths": lengths}
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows])
        return batch


class SiameseBiLSTMStudent(BiLSTMStudent):
    """Siamese BiLSTM for sentence pairs, Tang et al. (2019), §3.2.

    Both sentences go through the same embeddings and BiLSTM (:meth:`BiLSTMStudent.encode`,
    shared weights); with ``h1, h2`` the two ``(B, 2H)`` sentence vectors, the pair features are
    the concatenate-compare ``f = [h1, h2, h1 ⊙ h2, |h1 − h2|]`` ``(B, 8H)`` (Tang et al. 2019,
    §3.2, after Wang et al. 2018), then ``ReLU(W f + b)`` (``fc_size`` units) and a linear layer
    to the logits. Arguments as :class:`BiLSTMStudent`; :meth:`encode` still embeds one sentence.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fc = nn.Linear(4 * 2 * self.lstm.hidden_size, self.fc.out_features)

    def pair_features(self, input_ids: torch.Tensor, lengths: torch.Tensor, input_ids2: torch.Tensor,
                      lengths2: torch.Tensor) -> torch.Tensor:
        """``[h1, h2, h1 ⊙ h2, |h1 − h2|]`` ``(B, 8H)`` for right-padded ids ``(B, T1)``, ``(B, T2)``
        with true lengths ``(B,)`` each; both sentences run through the BiLSTM in one call.

        Raises:
            ValueError: the two batches differ in size.
        """
        if input_ids.shape[0] != input_ids2.shape[0]:
            raise ValueError(f"first and second sentences differ in batch size: {input_ids.shape[0]} vs "
                             f"{input_ids2.shape[0]}")
        width = max(input_ids.shape[1], input_ids2.shape[1])
        # id 0 pads (a valid id; positions past a sequence's length are never read: packed LSTM)
        both = input_ids.new_zeros((2 * input_ids.shape[0], width))
        both[: input_ids.shape[0], : input_ids.shape[1]] = input_ids
        both[input_ids.shape[0]:, : input_ids2.shape[1]] = input_ids2
        h1, h2 = self.encode(both, torch.cat([lengths, lengths2])).chunk(2)
        return torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], dim=-1)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor, input_ids2: torch.Tensor,
                lengths2: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for the pairs (ids ``(B, T1)``, ``(B, T2)``; lengths ``(B,)`` each)."""
        h = torch.relu(self.fc(self.pair_features(input_ids, lengths, input_ids2, lengths2)))
        return self.out(self.dropout(h))


class PairWordPieceCollate(WordPieceCollate):
    """:class:`WordPieceCollate` for sentence pairs: ``input_ids``/``lengths`` hold the first
    sentences (``sentence``) and ``input_ids2`` ``(B, T2)`` / ``lengths2`` ``(B,)`` the second
    (``sentence2``), each tokenised on its own (no [SEP]); plus ``teacher_logits`` and ``labels``
    where the rows have them."""

    def __call__(self, rows: list[dict]) -> dict:
        batch = super().__call__(rows)
        second = super().__call__([{"sentence": r["sentence2"]} for r in rows])
        batch["input_ids2"], batch["lengths2"] = second["input_ids"], second["lengths"]
        return batch


def vocabulary_ids(tokenizer, parts: list, max_length: int, batch_size: int = 10_000) -> torch.Tensor:
    """Sorted WordPiece ids ``(K,)`` that occur in the ``sentence``/``sentence2`` columns of the
    datasets ``parts`` (as :class:`WordPieceCollate` tokenises them), plus padding and [UNK]."""
    seen = {tokenizer.pad_token_id or 0}
    if tokenizer.unk_token_id is not None:
        seen.add(tokenizer.unk_token_id)
    for ds in parts:
        for col in ("sentence", "sentence2"):
            if col not in ds.column_names:
                continue
            for start in range(0, len(ds), batch_size):
                texts = list(ds[start:start + batch_size][col])
                for ids in tokenizer(texts, add_special_tokens=False, truncation=True,
                                     max_length=max_length)["input_ids"]:
                    seen.update(ids)
    return torch.tensor(sorted(seen), dtype=torch.long)


def token_lengths(tokenizer, ds: datasets.Dataset, max_length: int, batch_size: int = 10_000) -> list[int]:
    """Tokens per row as :class:`WordPieceCollate` (or the word tokenizer) reads it, truncated to
    ``max_length``; for sentence pairs the two sentences' lengths added. What ``fit`` groups
    batches by (``bilstm.length_grouped``)."""
    out: list[int] = []
    cols = [c for c in ("sentence", "sentence2") if c in ds.column_names]
    for start in range(0, len(ds), batch_size):
        chunk = ds[start:start + batch_size]
        per_col = [[max(1, len(ids)) for ids in tokenizer(list(chunk[c]), add_special_tokens=False, truncation=True,
                                                           max_length=max_length)["input_ids"]] for c in cols]
        out += [sum(x) for x in zip(*per_col)]
    return out


def teacher_embeddings(teacher_model) -> torch.Tensor:
    """The teacher's WordPiece embedding matrix ``(V, E)`` (a detached copy)."""
    return teacher_model.get_input_embeddings().weight.detach().clone()


def build_bilstm(bc: BiLSTMConfig, num_labels: int, tokenizer, teacher_model=None, *, pair: bool = False,
                 embedding_weights: Optional[torch.Tensor] = None) -> BiLSTMStudent:
    """Build the BiLSTM from params: :class:`SiameseBiLSTMStudent` if ``pair`` (a sentence-pair
    task), else :class:`BiLSTMStudent`.

    ``embedding: teacher_wordpiece`` needs ``teacher_model``; ``embedding: word2vec`` needs
    ``embedding_weights`` ``(V, E)`` (:func:`kdnb.models.embeddings.word2vec_embeddings`, whose word
    tokenizer is then ``tokenizer``); ``random`` draws ``(len(tokenizer), 300)``.

    Raises:
        ValueError: the teacher or the word2vec weights are missing for the chosen embedding.
    """
    weights = None
    if bc.embedding == "teacher_wordpiece":
        if teacher_model is None:
            raise ValueError("bilstm.embedding=teacher_wordpiece needs the teacher model")
        weights = teacher_embeddings(teacher_model)
        vocab, dim = weights.shape
    elif bc.embedding == "word2vec":
        if embedding_weights is None:
            raise ValueError("bilstm.embedding=word2vec needs embedding_weights (kdnb.models.embeddings.word2vec_embeddings)")
        weights = embedding_weights
        vocab, dim = weights.shape
    else:
        vocab, dim = len(tokenizer), 300
    cls = SiameseBiLSTMStudent if pair else BiLSTMStudent
    return cls(vocab, dim, num_labels, bc.hidden_size, bc.fc_size, weights, bc.embedding_mode,
               bc.dropout, padding_idx=tokenizer.pad_token_id or 0)
