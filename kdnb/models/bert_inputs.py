"""The one BERT input adapter — encode, collate, forward — shared by the teacher, the BERT
students and Pea-KD's students (all read the teacher's uncased WordPiece vocabulary).

Single sentences become ``[CLS] a [SEP]``, pairs (``sentence2``) ``[CLS] a [SEP] b [SEP]``
with token types 0/1 (Devlin et al. 2019, §3), truncated to ``max_length``:

* :func:`encode` — the one tokenisation (unpadded lists);
* :func:`pretokenise` — a data set tokenised once with ``datasets.map`` (cached beside a data
  set saved on disk) instead of in every epoch's batches;
* :func:`encode_rows` — rows in memory with their row index (to attach per-row arrays);
* :class:`BertCollate` — rows → a padded batch;
* :func:`model_inputs` / :func:`logits` — a batch through a transformers model or a
  :class:`kdnb.models.bert_student.BertStudent` (both take the three inputs by name).
"""

from __future__ import annotations

from typing import Optional

import datasets
import numpy as np
import torch

from ..errors import DataError

TEXT = ("sentence", "sentence2")
"""The text columns: a sentence and, on pair tasks, its second sentence."""

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")
"""The batch entries a BERT takes as inputs (the others — labels, teacher logits — are targets)."""


def encode(tokenizer, columns: dict, max_length: int) -> dict:
    """WordPiece ``input_ids`` and ``token_type_ids`` (lists, unpadded) of the ``sentence`` (and
    ``sentence2``: pairs) lists in ``columns``, truncated to ``max_length``."""
    enc = tokenizer(*(columns[c] for c in TEXT if c in columns), truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    return {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]}


def pretokenise(ds: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """``ds`` with its sentences replaced by :func:`encode`'s ``input_ids`` and ``token_type_ids``
    and their ``length`` (other columns kept).

    Raises:
        DataError: ``ds`` has no ``sentence`` column.
    """
    if "sentence" not in ds.column_names:
        raise DataError(f"the data set has no 'sentence' column to tokenise; its columns: {ds.column_names}")

    def enc(b):
        out = encode(tokenizer, b, max_length)
        return {**out, "length": [len(x) for x in out["input_ids"]]}

    return ds.map(enc, batched=True, batch_size=4096, desc="tokenising",
                  remove_columns=[c for c in TEXT if c in ds.column_names])


def encode_rows(tokenizer, ds: datasets.Dataset, max_length: int) -> list[dict]:
    """Rows ``{input_ids, token_type_ids, row}`` of ``ds`` in memory; ``row`` is the row's index,
    by which :class:`BertCollate` attaches per-row arrays (its ``extra``)."""
    enc = encode(tokenizer, {c: list(ds[c]) for c in TEXT if c in ds.column_names}, max_length)
    return [{"input_ids": ids, "token_type_ids": types, "row": i}
            for i, (ids, types) in enumerate(zip(enc["input_ids"], enc["token_type_ids"]))]


class BertCollate:
    """Rows → a batch: sentences are encoded (:func:`encode`); rows already encoded
    (:func:`pretokenise`, :func:`encode_rows`) are only padded — the same batch either way.
    Padded on the right to the longest row, rounded up to a multiple of ``pad_to_multiple_of``
    (CUDA graphs: one capture per length).

    Args:
        mask_4d: ``attention_mask`` as ``(B, 1, 1, T)`` bool (True: attend), which transformers
            hands to SDPA as it is — no host-side checks of the mask's values, which a CUDA
            graph capture forbids. The same logits as the 2-D mask (tested); SDPA models only.
        extra: ``{name: array (N, ...)}`` attached to the batch by the rows' ``row`` index.

    Returns:
        dict of ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(B, T)`` long; when the
        rows have them, ``teacher_logits`` ``(B, C)`` float and ``labels`` ``(B,)`` long (``-1``
        for unlabelled rows); each ``extra`` array's rows.
    """

    def __init__(self, tokenizer, max_length: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                 mask_4d: bool = False, extra: Optional[dict] = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_4d = mask_4d
        self.extra = extra or {}

    def __call__(self, rows: list[dict]) -> dict:
        if "input_ids" in rows[0]:
            enc = {k: [r[k] for r in rows] for k in ("input_ids", "token_type_ids")}
        else:
            if self.max_length is None:
                raise ValueError("BertCollate needs max_length to encode sentences")
            enc = encode(self.tokenizer, {c: [r[c] for r in rows] for c in TEXT if c in rows[0]}, self.max_length)
        batch = self._pad(enc["input_ids"], enc["token_type_ids"])
        if self.mask_4d:
            batch["attention_mask"] = batch["attention_mask"].bool()[:, None, None, :]
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows])
        if self.extra:
            idx = np.array([r["row"] for r in rows])
            for name, arr in self.extra.items():
                batch[name] = torch.as_tensor(np.asarray(arr[idx]))
        return batch

    def _pad(self, ids: list[list[int]], types: list[list[int]]) -> dict:
        """Right-pad to the longest (rounded up to ``pad_to_multiple_of``): ``(B, T)`` tensors."""
        width = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = {"input_ids": np.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=np.int64),
               "attention_mask": np.zeros((len(ids), width), dtype=np.int64),
               "token_type_ids": np.zeros((len(ids), width), dtype=np.int64)}
        for i, (x, t) in enumerate(zip(ids, types)):
            out["input_ids"][i, :len(x)], out["token_type_ids"][i, :len(x)], out["attention_mask"][i, :len(x)] = x, t, 1
        return {k: torch.from_numpy(v) for k, v in out.items()}


def model_inputs(batch: dict) -> dict:
    """The entries of ``batch`` a BERT takes as inputs (:data:`MODEL_KEYS`)."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


def logits(model, batch: dict) -> torch.Tensor:
    """``(B, C)`` logits of a transformers classifier or a BERT student on ``batch``."""
    return model(**model_inputs(batch))["logits"]
