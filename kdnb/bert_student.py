"""The small BERT student of the thesis and the KD-method zoo that trains it.

* :class:`BertStudent`: Sučík (2020), "Learning small sentence classifiers from BERT using
  teacher-student knowledge distillation" (MInf Project (Part 2) Report, Edinburgh), §4.3 — a
  BERT with ``L`` layers, hidden size ``H``, intermediate size ``I`` and ``A`` heads (thesis:
  5, 204, 750, 3; 2.42M non-embedding parameters) built from a transformers ``BertConfig``.
  Its input embeddings are the teacher's WordPiece matrix ``V × E`` followed by a linear map
  ``E → H`` (:class:`ProjectedEmbedding`); BERT's position and token-type embeddings and its
  embedding LayerNorm still apply. Sentence pairs are encoded as ``[CLS] a [SEP] b [SEP]``
  with token types, as for the teacher.
* :func:`init_from_teacher`: the PKD / Pea-KD initialisation from the teacher's first ``k``
  layers (Sun et al. 2019, §3; Cho & Kang 2020), where the widths match.
* :func:`distill_bert_student`: trains a student through :func:`kdnb.distill.fit` with one of
  the KD methods of :mod:`kdnb.losses` (``method``; see :data:`METHODS`), including the
  teacher-assistant chain teacher → TA → student (Mirzadeh et al. 2020).
* :func:`kd_ablation`: one student per method of ``kd_ablation.methods`` and one table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import datasets
import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from . import losses
from .config import BertStudentConfig, Config
from .data import score, task_spec
from .distill import fit, make_accelerator, predict_logits, selection_record, tensor_learning_rates
from .errors import ConfigError, DataError
from .students import StudentResult, count_parameters
from .utils import atomic_path, read_json, set_seed, write_json

METHODS: dict[Optional[str], str] = {
    None: "BERT student loss (bert_student.loss)",
    "mse": "logit MSE (Tang et al. 2019)",
    "kl": "KL at T, ×T² (Hinton et al. 2015)",
    "alpha_mix": "α·KL·T² + (1−α)·gold CE (Hinton et al. 2015)",
    "pkd": "PKD: CE + KL + β·patient [CLS] loss (Sun et al. 2019)",
    "aguilar": "attention KL + [CLS] cosine, layer schedule (Aguilar et al. 2020)",
    "noisy": "noisy teacher logits z(1+ξ) (Sau & Balasubramanian 2016)",
    "ta": "teacher → assistant → student (Mirzadeh et al. 2020)",
}
"""The values of ``method`` accepted by :func:`distill_bert_student` and what each trains with."""

AGUILAR_SCHEDULES = {"progressive": "progressive (PID)", "stacked": "stacked (SID)"}
"""Aguilar et al. (2020), §3.2: progressive internal distillation (one layer per stage) and
stacked internal distillation (layers 1…k together at stage k); ``kd_ablation.aguilar_schedule``."""


def method_label(method: Optional[str], cfg: Optional[Config] = None) -> str:
    """What ``method`` trains with, as the tables print it (:data:`METHODS`), with Aguilar's
    layer schedule named as it ran (``cfg.kd_ablation.aguilar_schedule``; both are available).

    Raises:
        KeyError: unknown ``method``.
    """
    label = METHODS[method]
    if method == "aguilar" and cfg is not None:
        label = label.replace("layer schedule",
                              f"{AGUILAR_SCHEDULES[cfg.kd_ablation.aguilar_schedule]} layer schedule")
    return label
GRAPH_METHODS = (None, "mse", "kl", "alpha_mix")
"""Objectives on the logits alone, whose steps run as CUDA graphs under ``cuda_graphs`` (the
others run the teacher in the loss or change with training progress on the host)."""


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class ProjectedEmbedding(nn.Module):
    """WordPiece embeddings taken from the teacher, projected linearly to the student's width.

    Sučík (2020), §4.3: the student reuses the teacher's embedding matrix ``W ∈ R^{V×E}`` and
    learns ``P ∈ R^{E×H}`` (with bias): ``e(token) = W[token] · P + b``.

    Args:
        weights: ``(V, E)`` float tensor (copied).
        hidden_size: ``H``.
        trainable: whether ``W`` is trained (``non-static``) or frozen (``static``).
        padding_idx: id of the padding token.
    """

    def __init__(self, weights: torch.Tensor, hidden_size: int, trainable: bool = True, padding_idx: int = 0):
        super().__init__()
        vocab, dim = weights.shape
        self.word = nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.word.weight.data.copy_(weights)
        self.word.weight.requires_grad_(trainable)
        self.projection = nn.Linear(dim, hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token ids → ``(B, T, H)`` input embeddings."""
        return self.projection(self.word(input_ids))


class BertStudent(nn.Module):
    """A transformers ``BertForSequenceClassification`` fed with :class:`ProjectedEmbedding`.

    The BERT's own word-embedding table is replaced by the projected teacher embeddings
    (``set_input_embeddings``), so the model holds one ``V × E`` matrix; the student computes
    ``inputs_embeds`` with it and passes them to BERT, whose embedding layer adds position and
    token-type embeddings and applies LayerNorm and dropout.

    Args:
        embedding_weights: the teacher's WordPiece matrix ``(V, E)``.
        num_labels: classes ``C``.
        num_layers, hidden_size, intermediate_size, num_heads: ``L``, ``H``, ``I``, ``A``.
        dropout: hidden and attention-probability dropout.
        trainable_embeddings: train ``W`` (``non-static``) or freeze it (``static``).
        max_position_embeddings, type_vocab_size: as the teacher's (512, 2 for BERT).
        padding_idx: padding token id.
        attn_implementation: ``sdpa`` (fast) or ``eager`` (needed to return attentions).

    Raises:
        ValueError: ``hidden_size`` is not a multiple of ``num_heads``.
    """

    def __init__(
        self,
        embedding_weights: torch.Tensor,
        num_labels: int,
        num_layers: int = 5,
        hidden_size: int = 204,
        intermediate_size: int = 750,
        num_heads: int = 3,
        dropout: float = 0.1,
        trainable_embeddings: bool = True,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        padding_idx: int = 0,
        attn_implementation: str = "sdpa",
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        config = BertConfig(
            vocab_size=1, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
            intermediate_size=intermediate_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            max_position_embeddings=max_position_embeddings, type_vocab_size=type_vocab_size, num_labels=num_labels,
            pad_token_id=0,
        )
        config._attn_implementation = attn_implementation
        self.bert = BertForSequenceClassification(config)
        self.bert.set_input_embeddings(ProjectedEmbedding(embedding_weights, hidden_size, trainable_embeddings,
                                                          padding_idx))

    @property
    def config(self) -> BertConfig:
        return self.bert.config

    @property
    def embeddings(self) -> ProjectedEmbedding:
        return self.bert.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, output_hidden_states: bool = False,
                output_attentions: bool = False):
        """Logits (and, on request, hidden states and attentions) for a batch.

        Args:
            input_ids, attention_mask, token_type_ids: ``(B, T)``.

        Returns:
            transformers' ``SequenceClassifierOutput``: ``logits`` ``(B, C)``; ``hidden_states``
            ``L + 1`` tensors ``(B, T, H)`` (embeddings first); ``attentions`` ``L`` tensors
            ``(B, A, T, T)`` (only with ``attn_implementation='eager'``).
        """
        return self.bert(inputs_embeds=self.embeddings(input_ids), attention_mask=attention_mask,
                         token_type_ids=token_type_ids, output_hidden_states=output_hidden_states,
                         output_attentions=output_attentions)

    def non_embedding_parameters(self) -> int:
        """Parameters outside the embedding layer (word, projection, position, token type,
        LayerNorm): encoder, pooler and classifier — the count the thesis reports (2.42M)."""
        emb = {id(p) for p in self.bert.bert.embeddings.parameters()} | {id(p) for p in self.embeddings.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in emb)


def init_from_teacher(student: BertStudent, teacher) -> BertStudent:
    """Initialise ``student`` from the teacher's embeddings, first ``L`` layers and pooler.

    The PKD setting (Sun et al. 2019, §4.1: the student is initialised with the first ``k``
    layers of the teacher's BERT) also used by Pea-KD (Cho & Kang 2020). The WordPiece matrix
    is the teacher's already; the projection ``E → H`` is set to the identity, so the student's
    hidden states start equal to the teacher's first ``L`` layers. The classifier stays random.

    Args:
        student: a :class:`BertStudent` with the teacher's ``H``, ``I``, ``A`` and ``L ≤`` the
            teacher's layers.
        teacher: a transformers BERT classifier (``.bert`` with ``embeddings``, ``encoder``,
            ``pooler``).

    Returns:
        ``student`` (modified in place).

    Raises:
        ConfigError: the sizes differ (naming ``bert_student.init``).
    """
    tc, sc = teacher.config, student.config
    want = {"hidden_size": tc.hidden_size, "intermediate_size": tc.intermediate_size,
            "num_attention_heads": tc.num_attention_heads}
    have = {k: getattr(sc, k) for k in want}
    emb_dim = student.embeddings.word.weight.shape[1]
    if have != want or sc.num_hidden_layers > tc.num_hidden_layers or emb_dim != tc.hidden_size:
        raise ConfigError(
            f"key 'bert_student.init': 'teacher' needs the teacher's sizes (hidden {tc.hidden_size}, intermediate "
            f"{tc.intermediate_size}, heads {tc.num_attention_heads}, at most {tc.num_hidden_layers} layers), got "
            f"hidden {sc.hidden_size}, intermediate {sc.intermediate_size}, heads {sc.num_attention_heads}, "
            f"{sc.num_hidden_layers} layers; use init: random for other sizes.")
    t, s = teacher.bert, student.bert.bert
    with torch.no_grad():
        for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
            getattr(s.embeddings, name).load_state_dict(getattr(t.embeddings, name).state_dict())
        student.embeddings.word.weight.copy_(t.embeddings.word_embeddings.weight)
        student.embeddings.projection.weight.copy_(torch.eye(tc.hidden_size))
        student.embeddings.projection.bias.zero_()
        for k in range(sc.num_hidden_layers):
            s.encoder.layer[k].load_state_dict(t.encoder.layer[k].state_dict())
        if t.pooler is not None and s.pooler is not None:
            s.pooler.load_state_dict(t.pooler.state_dict())
    return student


def build_bert_student(bc: BertStudentConfig, num_labels: int, teacher, attn_implementation: str = "sdpa"
                       ) -> BertStudent:
    """A :class:`BertStudent` with the sizes of ``bc``, the teacher's WordPiece matrix and, with
    ``bc.init == 'teacher'``, :func:`init_from_teacher`.

    Raises:
        ConfigError: ``init: teacher`` with sizes other than the teacher's.
    """
    tc = teacher.config
    model = BertStudent(
        teacher.get_input_embeddings().weight.detach().clone(), num_labels, bc.num_layers, bc.hidden_size,
        bc.intermediate_size, bc.num_heads, bc.dropout, bc.embedding_mode != "static",
        getattr(tc, "max_position_embeddings", 512), getattr(tc, "type_vocab_size", 2),
        tc.pad_token_id or 0, attn_implementation)
    if bc.init == "teacher":
        init_from_teacher(model, teacher)
    return model


def layer_map(student_layers: int, teacher_layers: int, include_last: bool = True) -> list[int]:
    """The teacher layer ``g(j)`` each student layer ``j = 1..L`` learns from (1-based).

    ``g(j) = round(j · N / L)`` (halves up): the uniform "skip" mapping of PKD (Sun et al.
    2019, §3.1, PKD-Skip: every ``N/L``-th layer) for any ``N ≥ L``, e.g. 5 → 6 layers gives
    1, 2, 4, 5, 6. ``include_last=False`` drops ``j = L``, whose output the logits already
    distil (PKD).

    Raises:
        ValueError: ``student_layers < 1`` or more student than teacher layers.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"need 1 <= student layers ({student_layers}) <= teacher layers ({teacher_layers})")
    last = student_layers if include_last else student_layers - 1
    return [math.floor(j * teacher_layers / student_layers + 0.5) for j in range(1, last + 1)]


class DistillationModel(nn.Module):
    """The student plus what the intermediate losses train with it: where the student's width
    ``H_s`` differs from the teacher's ``H_t``, one learned linear map ``H_s → H_t`` per matched
    layer for the [CLS] states (PKD, Aguilar et al.). The papers' students have the teacher's
    width and compare the states directly; with ``H_s == H_t`` no map is made here either.

    Args:
        student: the :class:`BertStudent`.
        cls_layers: student layers (1-based) whose [CLS] state is matched; ``[]``: none.
        teacher_hidden: ``H_t``.
    """

    def __init__(self, student: BertStudent, cls_layers: list[int], teacher_hidden: int):
        super().__init__()
        self.student = student
        self.cls_layers = list(cls_layers)
        hs = student.config.hidden_size
        self.maps = nn.ModuleList(
            [nn.Linear(hs, teacher_hidden) for _ in cls_layers] if hs != teacher_hidden else [])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, hidden: bool = False,
                attentions: bool = False) -> dict:
        """Returns ``logits`` ``(B, C)``; with ``hidden``, ``cls`` ``(len(cls_layers), B, H_t)``
        (mapped [CLS] states); with ``attentions``, ``attentions`` ``(L, B, A, T, T)``."""
        out = self.student(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden,
                           output_attentions=attentions)
        res = {"logits": out.logits}
        if hidden and self.cls_layers:
            cls = [out.hidden_states[j][:, 0] for j in self.cls_layers]
            if len(self.maps):
                cls = [m(h) for m, h in zip(self.maps, cls)]
            res["cls"] = torch.stack(cls)
        if attentions:
            res["attentions"] = torch.stack(out.attentions)
        return res


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
class BertStudentCollate:
    """Tokenise a list of rows for a BERT student (and the teacher: same WordPiece vocabulary).

    Single sentences become ``[CLS] a [SEP]``, pairs (``sentence2``) ``[CLS] a [SEP] b [SEP]``
    with token types 0/1, truncated to ``max_length`` and padded to the longest in the batch,
    rounded up to a multiple of ``pad_to_multiple_of`` (CUDA graphs: one capture per length).
    Rows already tokenised by :func:`pretokenise` (``input_ids``, ``token_type_ids``) are only
    padded: the same batch as from their sentences.

    Args:
        mask_4d: ``attention_mask`` as ``(B, 1, 1, T)`` bool (True: attend), which transformers
            hands to SDPA as it is — no host-side checks of the mask's values, which a CUDA
            graph capture forbids. The same logits as the 2-D mask (tested); SDPA models only.

    Returns:
        dict of ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(B, T)`` long and, when
        the rows have them, ``teacher_logits`` ``(B, C)`` float and ``labels`` ``(B,)`` long
        (``-1`` for unlabelled rows).
    """

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: Optional[int] = None, mask_4d: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_4d = mask_4d

    def __call__(self, rows: list[dict]) -> dict:
        if "input_ids" in rows[0]:  # pretokenise's rows
            enc = {k: [r[k] for r in rows] for k in ("input_ids", "token_type_ids")}
        else:
            enc = _encode(self.tokenizer, {c: [r[c] for r in rows] for c in _TEXT if c in rows[0]}, self.max_length)
        batch = self._pad(enc["input_ids"], enc["token_type_ids"])
        if self.mask_4d:
            batch["attention_mask"] = batch["attention_mask"].bool()[:, None, None, :]
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows])
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


def pretokenise(ds: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """``ds`` with its sentences replaced by WordPiece ``input_ids`` and ``token_type_ids`` (as
    :class:`BertStudentCollate` encodes them) and their ``length``: tokenised once with
    ``datasets.map`` — cached beside a data set saved on disk (a rerun reads the cache) —
    instead of in every epoch's batches.

    Raises:
        DataError: ``ds`` has no ``sentence`` column.
    """
    if "sentence" not in ds.column_names:
        raise DataError(f"the transfer set has no 'sentence' column to tokenise; its columns: {ds.column_names}")

    def encode(b):
        enc = _encode(tokenizer, b, max_length)
        return {**enc, "length": [len(x) for x in enc["input_ids"]]}

    return ds.map(encode, batched=True, batch_size=4096, desc="tokenising",
                  remove_columns=[c for c in _TEXT if c in ds.column_names])


_TEXT = ("sentence", "sentence2")


def _encode(tokenizer, columns: dict, max_length: int) -> dict:
    """WordPiece ``input_ids`` and ``token_type_ids`` (lists, unpadded) of the ``sentence`` (and
    ``sentence2``: pairs) lists in ``columns``, truncated to ``max_length``: the one encoding of
    the collate and :func:`pretokenise`."""
    enc = tokenizer(*(columns[c] for c in _TEXT if c in columns), truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    return {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]}


def _logits(model, batch: dict) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["logits"]


# ---------------------------------------------------------------------------------------------
# The objectives
# ---------------------------------------------------------------------------------------------
def method_params(cfg: Config, method: Optional[str]) -> dict:
    """The ``kd_ablation`` keys a method depends on (they enter its reuse/resume key).

    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown KD method {method!r}; known: {', '.join(str(m) for m in METHODS)}")
    a = cfg.kd_ablation
    keys = {"alpha_mix": ("alpha",), "pkd": ("alpha", "pkd_beta"),
            "aguilar": ("aguilar_schedule", "aguilar_internal_fraction"), "noisy": ("noise_sigma", "noise_fraction"),
            "ta": ("ta_num_layers", "ta_hidden_size", "ta_intermediate_size", "ta_num_heads")}.get(method, ())
    return {k: getattr(a, k) for k in keys}


def make_objective(cfg: Config, method: Optional[str], teacher=None, progress: Callable[[], float] = lambda: 1.0,
                   student_layers: int = 0) -> Callable[[nn.Module, dict], torch.Tensor]:
    """``loss_fn(model, batch)`` for :func:`kdnb.distill.fit` (``model``: a
    :class:`DistillationModel`; ``batch`` from :class:`BertStudentCollate`).

    * ``None``: ``bert_student.loss`` on the logits (``ce``: Hinton et al. 2015 soft
      cross-entropy at ``T``; ``kl``; ``mse``: Tang et al. 2019 eq. 2); ``mse``, ``kl``: those.
    * ``alpha_mix``: :func:`kdnb.losses.alpha_mix`; ``noisy``: the ``None`` loss on
      :func:`kdnb.losses.noisy_logits`.
    * ``pkd``: :func:`kdnb.losses.pkd_loss` — the frozen teacher runs forward in the loss for
      its [CLS] states at layers :func:`layer_map` (last layer excluded).
    * ``aguilar``: :func:`kdnb.losses.attention_kl` + :func:`kdnb.losses.cls_cosine` on the
      layers :func:`kdnb.losses.aguilar_weights` switches on at ``progress()`` (fraction of the
      training steps done), plus the ``None`` loss once the internal stages are over; the
      teacher runs forward in the loss for its attentions and [CLS] states.

    Args:
        teacher: the frozen teacher (eval mode, on the training device; eager attention for
            ``aguilar``); needed for ``pkd`` and ``aguilar``.
        progress: returns the fraction of training steps done (``aguilar``).
        student_layers: ``L`` of the student (``pkd``, ``aguilar``).

    Raises:
        ValueError: unknown method, or ``pkd``/``aguilar`` without a teacher.
    """
    bc, a = cfg.bert_student, cfg.kd_ablation
    temperature = bc.temperature
    if method not in METHODS or method == "ta":
        raise ValueError(f"no single objective for method {method!r} (ta chains two runs of the None objective)")
    base = losses.logit_loss(method if method in ("mse", "kl") else bc.loss, temperature)

    if method in (None, "mse", "kl"):
        return lambda m, b: base(_logits(m, b), b["teacher_logits"])
    if method == "noisy":
        return lambda m, b: base(_logits(m, b), losses.noisy_logits(b["teacher_logits"], a.noise_sigma,
                                                                    a.noise_fraction))
    if method == "alpha_mix":
        return lambda m, b: losses.alpha_mix(_logits(m, b), b["teacher_logits"], b["labels"], a.alpha, temperature)
    if teacher is None:
        raise ValueError(f"method {method!r} needs the teacher (its hidden states / attentions)")
    n_teacher = teacher.config.num_hidden_layers
    inputs = ("input_ids", "attention_mask", "token_type_ids")

    if method == "pkd":
        t_layers = layer_map(student_layers, n_teacher, include_last=False)

        def pkd(m, b):
            out = m(*(b[k] for k in inputs), hidden=True)
            with torch.no_grad():
                th = teacher(**{k: b[k] for k in inputs}, output_hidden_states=True).hidden_states
            t_cls = torch.stack([th[g][:, 0] for g in t_layers])
            return losses.pkd_loss(out["logits"], b["teacher_logits"], b["labels"], out["cls"], t_cls, a.alpha,
                                   a.pkd_beta, temperature)
        return pkd

    t_layers = layer_map(student_layers, n_teacher, include_last=True)

    def aguilar(m, b):
        layer_w, logit_w = losses.aguilar_weights(a.aguilar_schedule, len(t_layers), progress(),
                                                  a.aguilar_internal_fraction)
        if not layer_w.any():  # progressive, after the layer stages: soft targets only, no teacher pass
            return logit_w * base(_logits(m, b), b["teacher_logits"])
        out = m(*(b[k] for k in inputs), hidden=True, attentions=True)
        with torch.no_grad():
            t = teacher(**{k: b[k] for k in inputs}, output_hidden_states=True, output_attentions=True)
        t_att = torch.stack([t.attentions[g - 1] for g in t_layers])
        t_cls = torch.stack([t.hidden_states[g][:, 0] for g in t_layers])
        total = (losses.attention_kl(out["attentions"], t_att, b["attention_mask"], layer_w)
                 + losses.cls_cosine(out["cls"], t_cls, layer_w))
        if logit_w:
            total = total + logit_w * base(out["logits"], b["teacher_logits"])
        return total
    return aguilar


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@dataclass
class BertStudentResult(StudentResult):
    """:class:`kdnb.students.StudentResult` plus the BERT student's details.

    Attributes:
        method: the KD method (``None``: ``bert_student.loss``).
        n_params_non_embedding: encoder + pooler + classifier (the thesis' count).
        assistant_seconds: training time of the teacher assistant (``ta``; else 0).
    """

    method: Optional[str] = None
    n_params_non_embedding: int = 0
    assistant_seconds: float = 0.0


def student_dir(cfg: Config, name: str) -> Path:
    """``<out>/students/<name>``."""
    return cfg.out / "students" / name


def _key(cfg: Config, method: Optional[str], transfer_fp: str, extra: str = "") -> str:
    from .teacher import teacher_dir

    teacher_key = (read_json(teacher_dir(cfg) / "result.json") or {}).get("config_hash")
    blob = json.dumps({"seed": cfg.seed, "bert_student": dataclasses.asdict(cfg.bert_student), "method": method,
                       "params": method_params(cfg, method), "teacher": teacher_key, "transfer": transfer_fp,
                       "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def distill_bert_student(
    cfg: Config,
    transfer_set: datasets.Dataset,
    dsd: datasets.DatasetDict,
    name: str = "bert_student",
    method: Optional[str] = None,
    force: bool = False,
) -> BertStudentResult:
    """Distil the teacher into a :class:`BertStudent` on ``transfer_set`` with a KD ``method``.

    The student has the sizes of ``bert_student``; the objective is :func:`make_objective`
    (``method`` one of :data:`METHODS`); ``ta`` first distils a teacher assistant of the
    ``kd_ablation.ta_*`` sizes (``<name>_assistant``), labels the transfer set with the
    assistant's logits and distils the student from those (Mirzadeh et al. 2020). Training
    runs through :func:`kdnb.distill.fit` (accelerate; length-grouped batches; Adam(W) with
    linear warm-up over ``bert_student.warmup_epochs`` then linear decay; a checkpoint per
    epoch, resumed after a kill only under the same parameters).

    Writes ``model.pt`` (the student's ``state_dict``), ``learning_curve.csv``,
    ``dev_predictions.csv`` (``test_predictions.csv`` for labelled test sets) and
    ``result.json`` under ``<out>/students/<name>/``; a finished run with the same parameters,
    teacher and transfer set is reused (``force`` redoes it).

    Args:
        transfer_set: rows with ``sentence`` (``sentence2``), ``teacher_logits`` ``(C,)`` and
            ``label`` (``-1``: none; used by ``alpha_mix`` and ``pkd``).
        dsd: the task's splits (``dev`` is scored).

    Returns:
        :class:`BertStudentResult` (scores are fractions).

    Raises:
        ValueError: unknown method.
        ConfigError: ``bert_student.init: teacher`` with sizes other than the teacher's.
        StageInputError: no fine-tuned teacher (notebook 03).
    """
    if method not in METHODS:
        raise ValueError(f"unknown KD method {method!r}; known: {', '.join(str(m) for m in METHODS)}")
    extra, assistant_seconds = "", 0.0
    if method == "ta":
        assistant, transfer_set = teacher_assistant(cfg, transfer_set, dsd, name, force)
        extra, assistant_seconds = f"assistant {assistant.name}", assistant.seconds
    key = _key(cfg, method, transfer_set._fingerprint, extra)
    sdir = student_dir(cfg, name)
    saved = read_json(sdir / "result.json")
    if saved and saved.get("config_hash") == key and not force and (sdir / "model.pt").is_file():
        return _result_from_disk(name, sdir, saved, reused=True)
    return _train(cfg, transfer_set, dsd, name, method, key, assistant_seconds)


def _train(cfg: Config, transfer_set, dsd, name: str, method: Optional[str], key: str,
           assistant_seconds: float) -> BertStudentResult:
    from .teacher import load_teacher, write_csv, write_predictions

    bc = cfg.bert_student
    sdir = student_dir(cfg, name)
    set_seed(cfg.seed)
    teacher, tokenizer = load_teacher(cfg)
    num_labels = teacher.config.num_labels
    objective_method = None if method == "ta" else method
    student = build_bert_student(bc, num_labels, teacher, "eager" if method == "aguilar" else "sdpa")
    cls_layers = {"pkd": list(range(1, bc.num_layers)), "aguilar": list(range(1, bc.num_layers + 1))}.get(method, [])
    if method == "pkd" and not cls_layers:
        raise ConfigError("key 'kd_ablation.methods': pkd needs a student of at least 2 layers "
                          "(bert_student.num_layers), its last layer being distilled through the logits.")
    model = DistillationModel(student, cls_layers, teacher.config.hidden_size)
    accelerator = make_accelerator(cfg.mixed_precision)
    if method in ("pkd", "aguilar"):
        if method == "aguilar":
            teacher.set_attn_implementation("eager")
        teacher = teacher.eval().requires_grad_(False).to(accelerator.device)
    else:
        teacher = None
    # CUDA graphs (thesis profile on a GPU) for the objectives on logits alone: a capturable fused
    # AdamW whose tensor learning rate the schedule updates in place, lengths padded to multiples
    # of 8 (few graph shapes), a 4-D attention mask (no host-side mask checks)
    graphs = (cfg.cuda_graphs and torch.cuda.is_available() and objective_method in GRAPH_METHODS
              and accelerator.num_processes == 1 and accelerator.mixed_precision != "fp16")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=bc.learning_rate,
                                  weight_decay=bc.weight_decay, capturable=graphs, fused=graphs or None)
    if graphs:
        tensor_learning_rates(optimizer, accelerator.device)
    steps_per_epoch = -(-len(transfer_set) // bc.batch_size)
    total = bc.epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, round(bc.warmup_epochs * steps_per_epoch), total)
    loss_fn = make_objective(cfg, objective_method, teacher, progress=lambda: scheduler.last_epoch / total,
                             student_layers=bc.num_layers)
    collate = BertStudentCollate(tokenizer, bc.max_length)
    train_collate = BertStudentCollate(tokenizer, bc.max_length, 8, mask_4d=True) if graphs else collate
    dev = dsd["dev"]
    dev_labels = np.array(dev["label"])

    def evaluate(m) -> float:
        logits = predict_logits(m, dev, collate, bc.eval_batch_size, _logits, accelerator)
        return score(cfg.task, dev_labels, logits.argmax(-1).numpy())

    sdir.mkdir(parents=True, exist_ok=True)
    train_rows = pretokenise(transfer_set, tokenizer, bc.max_length)
    keep = [c for c in ("input_ids", "token_type_ids", "teacher_logits", "label") if c in train_rows.column_names]
    fr = fit(model, train_set=train_rows.select_columns(keep), collate_fn=train_collate, batch_size=bc.batch_size,
             loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, epochs=bc.epochs, evaluate=evaluate,
             seed=cfg.seed, ckpt_dir=sdir / "checkpoint", accelerator=accelerator,
             evals_per_epoch=bc.evals_per_epoch, grad_clip=bc.grad_clip, lengths=train_rows["length"],
             resume_key=key, desc=name, num_workers=cfg.num_workers, cuda_graphs=graphs)
    if fr.cuda_graphs:
        print(f"[kdnb] {name}: CUDA graphs {fr.cuda_graphs}", flush=True)
    student = accelerator.unwrap_model(model).student
    with atomic_path(sdir / "model.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    write_csv(pd.DataFrame(fr.curve), sdir / "learning_curve.csv")
    dev_logits = predict_logits(student, dev, collate, bc.eval_batch_size, _logits, accelerator).numpy()
    write_predictions(dev, dev_logits, sdir / "dev_predictions.csv")
    test_score = None
    if "test" in dsd and len(dsd["test"]) and min(dsd["test"]["label"]) >= 0:
        test_logits = predict_logits(student, dsd["test"], collate, bc.eval_batch_size, _logits, accelerator).numpy()
        write_predictions(dsd["test"], test_logits, sdir / "test_predictions.csv")
        test_score = score(cfg.task, dsd["test"]["label"], test_logits.argmax(-1))
    res = {
        "config_hash": key,
        "model": (f"BERT student (Sučík 2020) L={bc.num_layers} H={bc.hidden_size} I={bc.intermediate_size} "
                  f"A={bc.num_heads}, init {bc.init}"),
        "method": method,
        "objective": method_label(method, cfg) if method else f"{bc.loss} at T={bc.temperature:g}",
        "sizes": {k: getattr(bc, k) for k in ("num_layers", "hidden_size", "intermediate_size", "num_heads")},
        "dev_score": score(cfg.task, dev_labels, dev_logits.argmax(-1)),
        "test_score": test_score,
        "n_params": count_parameters(student),
        "n_params_non_embedding": student.non_embedding_parameters(),
        "seconds": fr.seconds,
        "epoch_seconds": fr.epoch_seconds,
        "cuda_graphs": fr.cuda_graphs,
        "assistant_seconds": assistant_seconds,
        "transfer_set_size": len(transfer_set),
        **selection_record(fr),
    }
    write_json(sdir / "result.json", res)
    return _result_from_disk(name, sdir, res, reused=False)


def _result_from_disk(name: str, sdir: Path, res: dict, reused: bool) -> BertStudentResult:
    return BertStudentResult(
        name=name, curve=pd.read_csv(sdir / "learning_curve.csv"), dev_score=res["dev_score"],
        test_score=res["test_score"], n_params=res["n_params"], seconds=res["seconds"], reused=reused,
        method=res.get("method"), n_params_non_embedding=res.get("n_params_non_embedding", 0),
        assistant_seconds=res.get("assistant_seconds", 0.0), epoch_seconds=res.get("epoch_seconds"),
        dev_last=res.get("dev_last"), best_epoch=res.get("best_epoch"))


def load_bert_student(cfg: Config, name: str, teacher=None) -> BertStudent:
    """The trained student ``<out>/students/<name>/model.pt`` (eval mode, CPU).

    Args:
        teacher: the fine-tuned teacher (for the embedding shapes); loaded if None.

    Raises:
        StageInputError: the student has not been trained.
    """
    from .errors import StageInputError
    from .teacher import load_teacher

    sdir = student_dir(cfg, name)
    res = read_json(sdir / "result.json")
    if not res or not (sdir / "model.pt").is_file():
        raise StageInputError(f"{sdir}: no trained BERT student '{name}'; run notebooks/04_students first.")
    if teacher is None:
        teacher, _ = load_teacher(cfg)
    sizes = dataclasses.replace(cfg.bert_student, init="random", **res["sizes"])
    model = build_bert_student(sizes, teacher.config.num_labels, teacher)
    model.load_state_dict(torch.load(sdir / "model.pt", map_location="cpu"))
    return model.eval()


def teacher_assistant(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict, name: str,
                      force: bool = False) -> tuple[BertStudentResult, datasets.Dataset]:
    """Teacher assistant (Mirzadeh et al. 2020, "Improved knowledge distillation via teacher
    assistant", §3): a BERT student of intermediate size (``kd_ablation.ta_*``) distilled from
    the teacher first (with ``bert_student.loss``), whose logits then replace the teacher's as
    the soft targets of the final student.

    The assistant is ``<out>/students/<name>_assistant/``; its logits on the transfer set are
    cached there (``transfer_logits.npy``) under its parameters and the transfer set.

    Returns:
        ``(assistant result, transfer_set with teacher_logits = the assistant's logits)``.
    """
    a, bc = cfg.kd_ablation, cfg.bert_student
    ta_cfg = dataclasses.replace(cfg, bert_student=dataclasses.replace(
        bc, num_layers=a.ta_num_layers, hidden_size=a.ta_hidden_size, intermediate_size=a.ta_intermediate_size,
        num_heads=a.ta_num_heads))
    ta_name = f"{name}_assistant"
    ta = distill_bert_student(ta_cfg, transfer_set, dsd, name=ta_name, method=None, force=force)
    sdir = student_dir(cfg, ta_name)
    ta_key = read_json(sdir / "result.json")["config_hash"]
    meta = {"assistant": ta_key, "transfer": transfer_set._fingerprint, "rows": len(transfer_set)}
    cache, cache_meta = sdir / "transfer_logits.npy", sdir / "transfer_logits.json"
    if cache.is_file() and read_json(cache_meta) == meta and not force:
        logits = np.load(cache)
    else:
        from .teacher import load_tokenizer

        accelerator = make_accelerator(cfg.mixed_precision)
        model = accelerator.prepare_model(load_bert_student(ta_cfg, ta_name), evaluation_mode=True)
        collate = BertStudentCollate(load_tokenizer(cfg), bc.max_length)
        logits = predict_logits(model, transfer_set, collate, bc.eval_batch_size, _logits, accelerator).numpy()
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, logits)
        write_json(cache_meta, meta)
    relabelled = transfer_set.remove_columns("teacher_logits").add_column(
        "teacher_logits", logits.astype(np.float32).tolist(), new_fingerprint=f"{ta_key}-{transfer_set._fingerprint}",
        feature=datasets.Sequence(datasets.Value("float32")))
    return ta, relabelled


def teacher_fidelity(cfg: Config, name: str) -> Optional[tuple[float, float]]:
    """How closely student ``name`` mimics the teacher on dev (from the saved prediction files).

    Returns:
        ``(agreement, kl)``: the fraction of dev sentences where the student predicts the
        teacher's class, and the mean ``KL(softmax(z^T) ‖ softmax(z^S))`` in nats at T = 1 — both
        informative where the task metric is not yet (e.g. a student still predicting one class,
        MCC 0); None where either ``dev_predictions.csv`` is missing.
    """
    from .teacher import teacher_dir

    t_file, s_file = teacher_dir(cfg) / "dev_predictions.csv", student_dir(cfg, name) / "dev_predictions.csv"
    if not (t_file.is_file() and s_file.is_file()):
        return None
    t, s = pd.read_csv(t_file), pd.read_csv(s_file)
    cols = [c for c in t.columns if c.startswith("logit_")]
    zt, zs = torch.tensor(t[cols].to_numpy()), torch.tensor(s[cols].to_numpy())
    kl = losses.kl_divergence(zs, zt, 1.0).item()
    return float((t["prediction"].to_numpy() == s["prediction"].to_numpy()).mean()), kl


def kd_ablation(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict,
                done: Optional[BertStudentResult] = None, force: bool = False,
                bilstm: Optional[StudentResult] = None) -> pd.DataFrame:
    """Train one BERT student per method of ``kd_ablation.methods`` and tabulate them.

    Every student has the sizes, optimiser, epochs and transfer set of ``bert_student``, so the
    rows differ only in the objective. ``done`` is the BERT student already trained with
    ``bert_student.loss``: with ``ce`` or ``kl`` it is the ``kl`` row (soft cross-entropy and
    KL differ by a constant, so their gradients are identical) instead of a second identical
    run; trained with a ``method`` (``bert_student.method``), it is that method's row. Students
    are ``<out>/students/bert_kd_<method>/``. ``bilstm`` (the BiLSTM student of notebook 04), if
    given, is the first row, for comparison. Writes ``<out>/kd_ablation.csv``
    (:func:`kdnb.report.save_table`).

    Returns:
        One row per student: ``student``, ``method``, ``objective``, ``parameters (M)`` (all),
        ``non-embedding (M)`` (BERT students: encoder, pooler, classifier), ``dev <metric>
        (%)``, ``retention (%)`` (student dev / teacher dev), ``agreement (%)`` and ``dev KL``
        (:func:`teacher_fidelity`), ``train time (s)`` (training
        steps and dev evaluations, as recorded by :func:`kdnb.distill.fit`; for ``ta`` the
        assistant's included).

    Raises:
        ValueError, ConfigError, StageInputError: as :func:`distill_bert_student`.
    """
    from . import report
    from .teacher import teacher_dir

    bc = cfg.bert_student
    label = task_spec(cfg.task).metric_label
    teacher_dev = (read_json(teacher_dir(cfg) / "result.json") or {}).get("dev_score")

    def row(student: str, method: str, objective: str, res: StudentResult, non_embedding, seconds: float) -> dict:
        fid = teacher_fidelity(cfg, res.name)
        return {"student": student, "method": method, "objective": objective,
                "parameters (M)": round(res.n_params / 1e6, 2),
                "non-embedding (M)": None if non_embedding is None else round(non_embedding / 1e6, 2),
                f"dev {label} (%)": round(100 * res.dev_score, 1),
                "retention (%)": None if not teacher_dev else round(100 * res.dev_score / teacher_dev, 1),
                "agreement (%)": None if fid is None else round(100 * fid[0], 1),
                "dev KL": None if fid is None else round(fid[1], 4),
                "train time (s)": round(seconds, 1)}

    rows = []
    if bilstm is not None:
        rows.append(row("BiLSTM (Tang et al. 2019)", cfg.bilstm.loss, f"{cfg.bilstm.loss} on logits", bilstm, None,
                        bilstm.seconds))
    student = f"BERT L={bc.num_layers} H={bc.hidden_size}, init {bc.init}"
    for method in cfg.kd_ablation.methods:
        objective = method_label(method, cfg)
        if method == "kl" and done is not None and done.method is None and bc.loss in ("ce", "kl"):
            res = done
            objective = f"{bc.loss} at T={bc.temperature:g} (the BERT student run; same gradients as KL·T²)"
        elif done is not None and method == done.method:  # notebook 04's student ran this very method
            res = done
            objective = f"{objective} (the BERT student run)"
        else:
            res = distill_bert_student(cfg, transfer_set, dsd, name=f"bert_kd_{method}", method=method, force=force)
        rows.append(row(student, method, objective, res, res.n_params_non_embedding,
                        res.seconds + res.assistant_seconds))
    table = pd.DataFrame(rows)
    report.save_table(cfg, table, "kd_ablation")
    return table
