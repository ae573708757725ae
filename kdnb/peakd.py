"""Pea-KD: Shuffled Parameter Sharing and Pretraining with Teacher's Predictions.

I. Cho and U. Kang (2020), "Pea-KD: Parameter-efficient and accurate knowledge distillation
on BERT", arXiv:2009.14822 (PLOS ONE 17(2), 2022); authors' code github.com/cih23/PeaKD, which
fixes the details the text leaves open (cited below as "the authors' code").

The students are ``k``-layer BERTs at the teacher's width initialised from the first ``k``
layers of the **pre-trained** BERT the teacher was fine-tuned from (Pea-KD's experimental
set-up, after PKD, Sun et al. 2019, §4.1, whose students take the first ``k`` layers of the
original pre-trained BERT, not of the fine-tuned teacher): ``peakd.init: pretrained`` loads the packaged /
named model before fine-tuning (:func:`pretrained_source`) with a fresh ``C``-way classifier;
``peakd.init: teacher`` keeps the older setting (the fine-tuned teacher's layers, pooler and
classifier).

* **Shuffled Parameter Sharing (SPS)**, Pea-KD §"Shuffled Parameter Sharing": *paired
  parameter sharing* doubles the student's depth — on top of its ``k`` layers it runs ``k``
  more that share the lower layers' parameters, so the effective depth is ``2k`` with no new
  parameters — and *shuffling* swaps the query and key weights inside each shared layer (the
  upper copy of layer ``i`` computes its queries with layer ``i``'s key projection and its keys
  with the query projection), which makes the two copies of a layer compute different
  functions. The 6-layer student applies SPS to its top 3 layers only (9 effective layers;
  ``BertEncoder_SPS_6layer_student`` in the authors' code); :func:`sps_source_layers`
  generalises this as "all layers up to ``k = 3``, the top ``⌊k/2⌋`` above".
  :func:`apply_sps` builds it from transformers' ``BertLayer`` modules: the shared layers hold
  the *same* ``nn.Linear``/``LayerNorm`` modules (the same parameter tensors, no copies), with
  ``query`` and ``key`` exchanged.
* **Pretraining with Teacher's Predictions (PTP)**, Pea-KD §"Pretraining with teacher's
  predictions": before KD, the student learns to predict, for each training example, one of 4
  PTP labels — the teacher is *confidently correct*, *unconfidently correct*, *confidently
  wrong* or *unconfidently wrong*, "confidently" meaning its softmax confidence exceeds one
  threshold ``t`` (:func:`ptp_labels`) — with cross-entropy and a 4-way head on the pooled
  [CLS], trained "until convergence" (the paper): here epoch by epoch until the accuracy on
  the dev set's PTP labels (the teacher's predictions on held-out data) has not improved for
  ``peakd.ptp_patience`` epochs, at most ``peakd.ptp_epochs``, keeping the best epoch's encoder
  (:func:`_pretrain_ptp`); that encoder then starts KD (the 4-way head is dropped; the
  ``C``-way classifier is the student's own, as for every variant).
* **KD loss** (Pea-KD trains with PKD's objective; Sun et al. 2019, §3 "Patient teacher"):
  ``L = (1 − α) · CE(z^S, y) + α · T² · KL(softmax(z^T/T) ‖ softmax(z^S/T)) + β · L_PT``, with
  ``L_PT`` the mean squared error between the L2-normalised [CLS] states of the student's
  intermediate layers and of the matched teacher layers (:func:`peakd_loss`; mean-reduced as
  in the authors' and PKD's code, which their β values assume).

:func:`peakd_comparison` trains the students named in the ``peakd`` params (depths ×
variants ``kd``/``sps``/``ptp``/``sps+ptp`` × seeds) through :func:`kdnb.distill.fit` and
returns the comparison table of notebook 04.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import datasets
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, PeaKDConfig
from .data import content_hash, score
from .distill import fit, make_accelerator, predict_logits, selection_record
from .errors import ConfigError
from .losses import kl_divergence
from .utils import Timer, atomic_path, read_json, set_seed, write_json

PTP_LABELS = ("confidently correct", "unconfidently correct", "confidently wrong", "unconfidently wrong")
"""The 4 PTP labels, in id order (Pea-KD §"Pretraining with teacher's predictions")."""


# ---- the students: truncated teacher, SPS ---------------------------------------------------

def truncated_student(teacher, k: int):
    """A ``k``-layer copy of a BERT classifier: embeddings, layers ``0..k−1``, pooler and
    classifier copied from ``teacher`` (a transformers ``BertForSequenceClassification``).

    Returns:
        A new ``BertForSequenceClassification`` (the teacher is left unchanged).

    Raises:
        ConfigError: ``k`` outside ``1..teacher layers`` (naming ``peakd.layers``).
    """
    import copy

    from transformers import BertForSequenceClassification

    n = teacher.config.num_hidden_layers
    if not 1 <= k <= n:
        raise ConfigError(f"key 'peakd.layers': a student truncates the {n}-layer teacher, so depths must be in "
                          f"1..{n}; got {k}.")
    conf = copy.deepcopy(teacher.config)
    conf.num_hidden_layers = k
    student = BertForSequenceClassification(conf)
    wanted = student.state_dict()
    missing = student.load_state_dict({name: t for name, t in teacher.state_dict().items() if name in wanted},
                                      strict=False).missing_keys
    if missing:
        raise RuntimeError(f"student keys not found in the teacher: {missing}")
    return student


def sps_source_layers(k: int) -> list[int]:
    """The layers (0-based) whose parameters SPS shares: all ``k`` for ``k ≤ 3`` (Pea-KD's 1-,
    2- and 3-layer students), the top ``⌊k/2⌋`` above (the paper's 6-layer student: its top 3).

    Raises:
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(range(k)) if k <= 3 else list(range(k - k // 2, k))


def _shared_shuffled_layer(src: nn.Module, config, layer_idx: int) -> nn.Module:
    """A ``BertLayer`` whose parameters are those of ``src`` (the same modules, not copies) with
    the self-attention's ``query`` and ``key`` projections exchanged."""
    from transformers.models.bert.modeling_bert import BertLayer

    layer = BertLayer(config, layer_idx=layer_idx)  # its fresh parameters are replaced below
    sa, src_sa = layer.attention.self, src.attention.self
    sa.query, sa.key, sa.value = src_sa.key, src_sa.query, src_sa.value  # the shuffle: Q ↔ K
    layer.attention.output = src.attention.output
    layer.intermediate = src.intermediate
    layer.output = src.output
    return layer


def apply_sps(model, source_layers: Optional[Sequence[int]] = None):
    """Shuffled Parameter Sharing (Pea-KD §"Shuffled Parameter Sharing") on a transformers BERT
    classifier, in place: for each layer ``i`` of ``source_layers`` (default
    :func:`sps_source_layers`), a layer sharing layer ``i``'s parameters with query and key
    swapped is appended on top of the encoder, in order. A ``k``-layer student thus runs
    ``k + len(source_layers)`` layers with exactly the parameters of ``k``.

    Returns:
        ``model`` (``config.num_hidden_layers`` updated, ``config.sps_source_layers`` recorded).

    Raises:
        ValueError: a source layer index outside the encoder, or SPS applied twice.
    """
    encoder = model.bert.encoder
    k = len(encoder.layer)
    if getattr(model.config, "sps_source_layers", None):
        raise ValueError("SPS is already applied to this model")
    sources = sps_source_layers(k) if source_layers is None else list(source_layers)
    if not sources or any(not 0 <= i < k for i in sources):
        raise ValueError(f"source_layers must be indices in 0..{k - 1}, got {sources}")
    shared = [_shared_shuffled_layer(encoder.layer[i], model.config, k + j) for j, i in enumerate(sources)]
    encoder.layer = nn.ModuleList(list(encoder.layer) + shared)
    model.config.num_hidden_layers = len(encoder.layer)
    model.config.sps_source_layers = sources
    return model


def build_student(teacher, k: int, sps: bool):
    """The ``k``-layer student of :func:`truncated_student` of ``teacher`` (for Pea-KD: the
    pre-trained model, :func:`pretrained_source`), with :func:`apply_sps` if ``sps``."""
    student = truncated_student(teacher, k)
    return apply_sps(student) if sps else student


def pretrained_source(cfg: Config, num_labels: int):
    """The BERT the students are cut from with ``peakd.init: pretrained``: the model the
    teacher was fine-tuned from (``teacher.model_name_or_path``, resolved by
    :func:`kdnb.teacher.resolve_model_path`: the packaged MiniLM-L6 BERT by default) loaded with
    ``AutoModelForSequenceClassification`` and ``num_labels`` classes — pre-trained encoder, a
    fresh classifier drawn from the current torch RNG (seed before calling). Pea-KD (Cho & Kang
    2020, experimental set-up) and PKD (Sun et al. 2019, §4.1) initialise from the pre-trained
    BERT, not the fine-tuned teacher.

    Returns:
        A transformers ``BertForSequenceClassification`` (CPU, train mode).

    Raises:
        ConfigError: the model is not found (naming ``teacher.model_name_or_path``).
    """
    from transformers import AutoModelForSequenceClassification

    from .teacher import resolve_model_path

    path = resolve_model_path(cfg.teacher.model_name_or_path)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except OSError as e:
        raise ConfigError(f"key 'teacher.model_name_or_path': cannot load the pre-trained model {path} for "
                          f"peakd.init: pretrained ({e}); set peakd.init: teacher to start from the fine-tuned "
                          "teacher instead.") from None


def count_unique_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Number of parameters, each shared tensor counted once (``nn.Module.parameters`` already
    yields a shared ``Parameter`` once); ``embeddings=False`` leaves out ``bert.embeddings``
    (word, position and segment embeddings: how Pea-KD and the thesis size their students)."""
    skip = {id(p) for p in model.bert.embeddings.parameters()} if not embeddings else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


# ---- PTP labels and the KD loss ---------------------------------------------------------------

def ptp_labels(teacher_logits: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """PTP labels (Pea-KD §"Pretraining with teacher's predictions"), with the paper's one
    threshold ``t``.

    With ``p = softmax(z^T)``, confidence ``max_c p_c`` and prediction ``argmax_c p_c``:
    0 = confidently correct (correct, confidence > ``t``), 1 = unconfidently correct
    (≤ ``t``), 2 = confidently wrong (wrong, confidence > ``t``), 3 = unconfidently wrong;
    -1 where the example has no gold label (-1).

    Args:
        teacher_logits: ``(N, C)``; labels: ``(N,)`` gold class ids (-1: unlabelled).

    Returns:
        Long tensor ``(N,)`` with values in {-1, 0, 1, 2, 3} (:data:`PTP_LABELS`).

    Raises:
        ValueError: mismatched shapes or a threshold outside [0, 1].
    """
    if teacher_logits.dim() != 2 or labels.shape != teacher_logits.shape[:1]:
        raise ValueError(f"need teacher_logits (N, C) and labels (N,), got {tuple(teacher_logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    conf, pred = F.softmax(teacher_logits.float(), dim=-1).max(-1)
    confident = conf > threshold
    out = torch.where(pred == labels, torch.where(confident, 0, 1), torch.where(confident, 2, 3))
    return torch.where(labels < 0, -1, out).long()


def intermediate_mse(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """PKD's patient loss as Pea-KD trains with it: the mean squared error between the
    L2-normalised [CLS] states of matched student and teacher layers, averaged over layers,
    examples and hidden units (Sun et al. 2019, §3.2, in the mean-reduced form of the PKD and
    Pea-KD code, ``F.mse_loss(normalize(h^T), normalize(h^S))``).

    Args:
        student_cls, teacher_cls: ``(L, B, H)``.

    Returns:
        Scalar tensor in [0, 4/H].

    Raises:
        ValueError: shapes differ or the tensors are not 3-D.
    """
    if student_cls.shape != teacher_cls.shape or student_cls.dim() != 3:
        raise ValueError(f"student [CLS] {tuple(student_cls.shape)} and teacher [CLS] {tuple(teacher_cls.shape)} "
                         "must both be (layers, batch, hidden)")
    return F.mse_loss(F.normalize(student_cls.float(), dim=-1), F.normalize(teacher_cls.float(), dim=-1))


def peakd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               student_cls: Optional[torch.Tensor], teacher_cls: Optional[torch.Tensor], *,
               temperature: float, alpha: float, beta: float) -> torch.Tensor:
    """The KD objective of Pea-KD (PKD's, Sun et al. 2019, §3):
    ``(1 − α) · CE(z^S, y) + α · KL_T(z^T ‖ z^S) · T² + β · L_PT``.

    ``CE`` is over the rows with a gold label (``y ≥ 0``; 0 if the batch has none),
    ``KL_T`` is :func:`kdnb.losses.kl_divergence` (Hinton et al. 2015, with the T² factor) and
    ``L_PT`` is :func:`intermediate_mse` (skipped when ``beta`` is 0 or no layers are matched).

    Args:
        student_logits, teacher_logits: ``(B, C)``; labels: ``(B,)``.
        student_cls, teacher_cls: ``(L, B, H)`` [CLS] states of the matched layers, or None.

    Returns:
        Scalar tensor.
    """
    kd = kl_divergence(student_logits, teacher_logits, temperature)
    has = labels >= 0
    ce = F.cross_entropy(student_logits[has].float(), labels[has]) if bool(has.any()) else kd.new_zeros(())
    loss = (1.0 - alpha) * ce + alpha * kd
    if beta > 0 and student_cls is not None and student_cls.shape[0] > 0:
        loss = loss + beta * intermediate_mse(student_cls, teacher_cls)
    return loss


def matched_teacher_layers(student_depth: int, teacher_depth: int) -> list[int]:
    """Teacher hidden-state indices (1-based layers) matched to the student's intermediate
    layers ``1..D−1`` (its last layer is distilled through the logits): layer ``j`` ↔
    ``round(j · N / D)``, PKD-skip's even spread (Sun et al. 2019, §3.2), many-to-one when the
    effective student is deeper than the teacher (SPS on a 6-layer student of a 6-layer teacher).

    Returns:
        ``D − 1`` indices in ``1..N`` (empty for ``D = 1``).
    """
    return [min(teacher_depth, max(1, round(j * teacher_depth / student_depth))) for j in range(1, student_depth)]


# ---- data ------------------------------------------------------------------------------------

def _encode(tokenizer, ds: datasets.Dataset, max_length: int) -> list[dict]:
    """Rows ``{input_ids, token_type_ids, attention_mask, row}`` (pairs as ``[CLS] a [SEP] b [SEP]``)."""
    texts = [list(ds["sentence"])] + ([list(ds["sentence2"])] if "sentence2" in ds.column_names else [])
    enc = tokenizer(*texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "row": i} for i in range(len(enc["input_ids"]))]


class _Collate:
    """Pad rows (transformers' ``DataCollatorWithPadding``) and attach, by row index, the
    per-example arrays named in ``extra`` (``{name: array (N, ...)}``) as tensors."""

    def __init__(self, tokenizer, extra: Optional[dict] = None):
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)
        self.extra = extra or {}

    def __call__(self, rows: list[dict]) -> dict:
        idx = np.array([r["row"] for r in rows])
        batch = dict(self.pad([{k: v for k, v in r.items() if k != "row"} for r in rows]))
        for name, arr in self.extra.items():
            batch[name] = torch.as_tensor(np.asarray(arr[idx]))
        return batch


_MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def _inputs(batch: dict) -> dict:
    return {k: batch[k] for k in _MODEL_KEYS if k in batch}


def _logits(model, batch: dict) -> torch.Tensor:
    return model(**_inputs(batch)).logits


@dataclass
class TeacherStates:
    """The teacher on the transfer set at ``peakd.max_length``: ``logits`` ``(N, C)`` and the
    [CLS] state of every hidden layer ``cls`` ``(N, L + 1, H)`` (index 0: embeddings), float32
    arrays (memory-mapped from ``<out>/peakd/teacher/``); ``dev_logits`` ``(N_dev, C)``."""

    logits: np.ndarray
    cls: np.ndarray
    dev_logits: np.ndarray
    num_layers: int
    reused: bool


def teacher_states(cfg: Config, transfer_set: datasets.Dataset, dev: datasets.Dataset, force: bool = False
                   ) -> TeacherStates:
    """Run the fine-tuned teacher once over the transfer set (and dev) with hidden states, and
    keep its logits and per-layer [CLS] states — what every Pea-KD student distils from.

    The student reads the same truncation (``peakd.max_length``), so the KD targets match its
    input; with ``peakd.max_length == teacher.max_length`` the logits equal the transfer set's
    ``teacher_logits``. Saved to ``<out>/peakd/teacher/`` (``.npy``) and reused while the
    teacher, the rows and ``peakd.max_length`` are unchanged.

    Raises:
        StageInputError: no fine-tuned teacher (run notebook 03).
    """
    from .teacher import load_teacher, teacher_dir

    out = cfg.out / "peakd" / "teacher"
    teacher_key = (read_json(teacher_dir(cfg) / "result.json") or {}).get("config_hash")
    meta = {"teacher": teacher_key, "rows": len(transfer_set), "content": content_hash(transfer_set),
            "dev": content_hash(dev), "max_length": cfg.peakd.max_length}
    if not force and read_json(out / "meta.json") == meta:
        arrays = {n: np.load(out / f"{n}.npy", mmap_mode="r") for n in ("logits", "cls", "dev_logits")}
        return TeacherStates(**arrays, num_layers=arrays["cls"].shape[1] - 1, reused=True)

    teacher, tokenizer = load_teacher(cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    teacher = accelerator.prepare_model(teacher, evaluation_mode=True)
    bs = cfg.peakd.eval_batch_size

    def run(ds: datasets.Dataset, with_cls: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
        rows = _encode(tokenizer, ds, cfg.peakd.max_length)
        order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")  # less padding
        collate = _Collate(tokenizer)
        logits, cls = np.zeros((len(rows), teacher.config.num_labels), np.float32), None
        with torch.no_grad():
            for start in range(0, len(rows), bs):
                idx = order[start:start + bs]
                batch = {k: v.to(accelerator.device) for k, v in collate([rows[i] for i in idx]).items()}
                with accelerator.autocast():
                    o = teacher(**_inputs(batch), output_hidden_states=with_cls)
                logits[idx] = o.logits.float().cpu().numpy()
                if with_cls:
                    states = torch.stack([h[:, 0] for h in o.hidden_states], 1).float().cpu().numpy()
                    if cls is None:
                        cls = np.zeros((len(rows),) + states.shape[1:], np.float32)
                    cls[idx] = states
        return logits, cls

    logits, cls = run(transfer_set, True)
    dev_logits, _ = run(dev, False)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, arr in (("logits", logits), ("cls", cls), ("dev_logits", dev_logits)):
            np.save(tmp / f"{name}.npy", arr)
        write_json(tmp / "meta.json", meta)
    return TeacherStates(logits, cls, dev_logits, cls.shape[1] - 1, reused=False)


# ---- training one student --------------------------------------------------------------------

@dataclass
class PeaKDResult:
    """One trained Pea-KD student (also saved under ``<out>/students/<name>/``)."""

    name: str
    layers: int
    sps: bool
    ptp: bool
    seed: int
    effective_layers: int
    n_params: int
    n_params_non_embedding: int
    dev_score: float
    test_score: Optional[float]
    seconds: float
    ptp_seconds: float
    curve: pd.DataFrame
    ptp_counts: Optional[dict]
    reused: bool
    ptp_epochs: Optional[int] = None


def student_name(k: int, variant: str, seed: int) -> str:
    """``peakd-<k>L-<variant>-s<seed>``, e.g. ``peakd-3L-sps-ptp-s42``."""
    return f"peakd-{k}L-{variant.replace('+', '-')}-s{seed}"


class _PTPModel(nn.Module):
    """The student's BERT with a 4-way PTP head on the pooled [CLS] (dropout as the classifier's)."""

    def __init__(self, student):
        super().__init__()
        self.bert = student.bert
        self.dropout = nn.Dropout(student.config.hidden_dropout_prob)
        self.head = nn.Linear(student.config.hidden_size, len(PTP_LABELS))

    def forward(self, **inputs) -> torch.Tensor:
        return self.head(self.dropout(self.bert(**inputs).pooler_output))


def _optimizer(model: nn.Module, pc: PeaKDConfig, steps: int):
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())  # shared parameters appear once
    groups = [{"params": [p for n, p in named if not any(s in n for s in no_decay)], "weight_decay": pc.weight_decay},
              {"params": [p for n, p in named if any(s in n for s in no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=pc.learning_rate)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(pc.warmup_fraction * steps), steps)


def _run_key(cfg: Config, k: int, sps: bool, ptp: bool, seed: int, transfer_set: datasets.Dataset) -> str:
    """What a student's outputs depend on: the training keys of ``peakd`` (not which students
    are listed), its depth, variant and seed, the teacher and the transfer set."""
    import hashlib
    import json

    from .teacher import teacher_dir

    pc = dataclasses.asdict(cfg.peakd)
    for k_ in ("enabled", "layers", "variants", "seeds", "eval_batch_size"):
        pc.pop(k_)
    if not ptp:
        for k_ in ("ptp_threshold", "ptp_threshold_wrong", "ptp_epochs", "ptp_patience"):
            pc.pop(k_)
    teacher_key = (read_json(teacher_dir(cfg) / "result.json") or {}).get("config_hash")
    blob = json.dumps({"peakd": pc, "k": k, "sps": sps, "ptp": ptp, "seed": seed, "task": cfg.task,
                       "mixed_precision": cfg.mixed_precision}, sort_keys=True)
    return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}-{teacher_key}-{content_hash(transfer_set)}"


def distill_peakd(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict, *, k: int, sps: bool,
                  ptp: bool, seed: int, states: Optional[TeacherStates] = None, force: bool = False) -> PeaKDResult:
    """Train one Pea-KD student: the first ``k`` layers of the pre-trained model
    (``peakd.init: pretrained``; of the fine-tuned teacher with ``init: teacher``), with SPS
    and/or PTP.

    1. :func:`build_student` (seeded with ``seed``) from :func:`pretrained_source` or the teacher;
    2. with ``ptp``: :func:`_pretrain_ptp` — cross-entropy on the :func:`ptp_labels` of the
       labelled transfer-set rows (4-way head on the pooled [CLS]) until the dev PTP accuracy
       stops improving (``peakd.ptp_patience``; at most ``peakd.ptp_epochs`` epochs);
    3. ``peakd.epochs`` epochs of KD on the whole transfer set with :func:`peakd_loss`
       (intermediate layers matched by :func:`matched_teacher_layers`).

    Both phases run through :func:`kdnb.distill.fit` (AdamW with linear warm-up/decay,
    length-grouped batches, a checkpoint per epoch, resumable); a finished PTP phase is kept
    in ``ptp_model.pt`` so a kill during KD does not redo it. Writes ``model.pt`` (state dict,
    shared tensors stored once), ``student.json`` (how to rebuild it), ``learning_curve.csv``
    (KD; ``ptp_curve.csv`` for PTP: dev accuracy on the PTP labels), ``dev_predictions.csv`` and
    ``result.json`` under ``<out>/students/<name>/``; reused while :func:`_run_key` matches.

    Raises:
        ConfigError: ``k`` deeper than the teacher.
        StageInputError: no fine-tuned teacher.
    """
    from .teacher import _write_csv, _write_predictions, load_teacher

    pc = cfg.peakd
    variant = "sps+ptp" if sps and ptp else "sps" if sps else "ptp" if ptp else "kd"
    name = student_name(k, variant, seed)
    sdir = cfg.out / "students" / name
    key = _run_key(cfg, k, sps, ptp, seed, transfer_set)
    saved = read_json(sdir / "result.json")
    if saved and saved.get("config_hash") == key and not force:
        return _result_from_disk(name, sdir, saved, reused=True)

    dev = dsd["dev"]
    states = states or teacher_states(cfg, transfer_set, dev, force=False)
    set_seed(seed)
    teacher, tokenizer = load_teacher(cfg)
    source = pretrained_source(cfg, teacher.config.num_labels) if pc.init == "pretrained" else teacher
    _check_source(source, teacher)
    model = build_student(source, k, sps)
    del teacher, source
    depth = model.config.num_hidden_layers
    t_layers = matched_teacher_layers(depth, states.num_layers)
    rows = _encode(tokenizer, transfer_set, pc.max_length)
    dev_rows = _encode(tokenizer, dev, pc.max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    labels = np.asarray(transfer_set["label"], dtype=np.int64)
    dev_labels = np.asarray(dev["label"], dtype=np.int64)
    eval_collate = _Collate(tokenizer)
    sdir.mkdir(parents=True, exist_ok=True)

    # -- phase 1: PTP ------------------------------------------------------------------------
    ptp_seconds, ptp_counts = 0.0, None
    if ptp:
        ptp_y = ptp_labels(torch.as_tensor(np.asarray(states.logits)), torch.as_tensor(labels),
                           pc.ptp_threshold).numpy()
        dev_ptp = ptp_labels(torch.as_tensor(np.asarray(states.dev_logits)), torch.as_tensor(dev_labels),
                             pc.ptp_threshold).numpy()
        ptp_counts = {PTP_LABELS[i]: int((ptp_y == i).sum()) for i in range(len(PTP_LABELS))}
        ptp_file = sdir / "ptp_model.pt"
        ptp_state = read_json(sdir / "ptp.json") or {}
        if ptp_file.is_file() and ptp_state.get("key") == key and not force:
            model.bert.load_state_dict(torch.load(ptp_file, map_location="cpu", weights_only=True))
            ptp_seconds = float(ptp_state.get("seconds", 0.0))
        else:
            labelled = [r for r in rows if ptp_y[r["row"]] >= 0]
            if not labelled:
                raise ConfigError("key 'peakd.variants': PTP needs transfer-set rows with gold labels; this "
                                  "transfer set has none.")
            ptp_model, curve, ptp_seconds = _pretrain_ptp(cfg, model, labelled, ptp_y, dev_rows, dev_ptp, tokenizer,
                                                          seed, sdir, key, name)
            _write_csv(pd.DataFrame(curve), sdir / "ptp_curve.csv")
            with atomic_path(ptp_file) as tmp:
                torch.save(ptp_model.bert.state_dict(), tmp)
            best = max(curve, key=lambda r: (r["dev_ptp_accuracy"], -r["epoch"]))
            write_json(sdir / "ptp.json", {"key": key, "seconds": ptp_seconds, "counts": ptp_counts,
                                           "epochs": len(curve), "best_epoch": best["epoch"],
                                           "best_dev_ptp_accuracy": best["dev_ptp_accuracy"]})
            model.bert = ptp_model.bert.cpu()
            del ptp_model

    # -- phase 2: KD (CE + KL·T² + β·intermediate MSE) ------------------------------------------
    set_seed(seed)
    accelerator = make_accelerator(cfg.mixed_precision)
    steps = pc.epochs * math.ceil(len(rows) / pc.batch_size)
    optimizer, scheduler = _optimizer(model, pc, steps)
    collate = _Collate(tokenizer, {"teacher_logits": states.logits, "labels": labels,
                                   **({"teacher_cls": _LayerSelect(states.cls, t_layers)} if t_layers else {})})

    def kd_loss(m, b) -> torch.Tensor:
        out = m(**_inputs(b), output_hidden_states=bool(t_layers) and pc.beta > 0)
        s_cls = t_cls = None
        if t_layers and pc.beta > 0:
            s_cls = torch.stack([out.hidden_states[j][:, 0] for j in range(1, depth)])  # (D−1, B, H)
            t_cls = b["teacher_cls"].transpose(0, 1)                                   # (D−1, B, H)
        return peakd_loss(out.logits, b["teacher_logits"], b["labels"], s_cls, t_cls,
                          temperature=pc.temperature, alpha=pc.alpha, beta=pc.beta)

    def evaluate(m) -> float:
        logits = predict_logits(m, dev_rows, eval_collate, pc.eval_batch_size, _logits, accelerator)
        return score(cfg.task, dev_labels, logits.argmax(-1).numpy())

    fr = fit(model, train_set=rows, collate_fn=collate, batch_size=pc.batch_size, loss_fn=kd_loss,
             optimizer=optimizer, scheduler=scheduler, epochs=pc.epochs, evaluate=evaluate, seed=seed,
             ckpt_dir=sdir / "checkpoint", accelerator=accelerator, evals_per_epoch=pc.evals_per_epoch,
             lengths=lengths, resume_key=key, desc=name)
    model = accelerator.unwrap_model(model).cpu()

    with atomic_path(sdir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(sdir / "student.json", {"teacher_layers_kept": k, "sps_source_layers":
                                       getattr(model.config, "sps_source_layers", None) or [],
                                       "effective_layers": depth, "num_labels": model.config.num_labels,
                                       "rebuild": "kdnb.peakd.load_student"})
    _write_csv(pd.DataFrame(fr.curve), sdir / "learning_curve.csv")
    model.to(accelerator.device)  # saved from the CPU above; predicted where the batches go (a GPU)
    dev_logits = predict_logits(model, dev_rows, eval_collate, pc.eval_batch_size, _logits, accelerator).numpy()
    _write_predictions(dev, dev_logits, sdir / "dev_predictions.csv")
    test_score = None
    if "test" in dsd and len(dsd["test"]) and min(dsd["test"]["label"]) >= 0:
        test_logits = predict_logits(model, _encode(tokenizer, dsd["test"], pc.max_length), eval_collate,
                                     pc.eval_batch_size, _logits, accelerator).numpy()
        _write_predictions(dsd["test"], test_logits, sdir / "test_predictions.csv")
        test_score = score(cfg.task, dsd["test"]["label"], test_logits.argmax(-1))
    res = {
        "config_hash": key,
        "model": f"Pea-KD student: teacher's first {k} layer(s)" + (", SPS" if sps else "") + (", PTP" if ptp else ""),
        "layers": k, "sps": sps, "ptp": ptp, "seed": seed, "effective_layers": depth,
        "matched_teacher_layers": t_layers,
        "dev_score": score(cfg.task, dev_labels, dev_logits.argmax(-1)),
        "test_score": test_score,
        "n_params": count_unique_parameters(model),
        "n_params_non_embedding": count_unique_parameters(model, embeddings=False),
        "seconds": fr.seconds + ptp_seconds,
        "ptp_seconds": ptp_seconds,
        "ptp_counts": ptp_counts,
        "ptp_epochs": (read_json(sdir / "ptp.json") or {}).get("epochs") if ptp else None,
        "ptp_best_epoch": (read_json(sdir / "ptp.json") or {}).get("best_epoch") if ptp else None,
        "init": pc.init,
        "transfer_set_size": len(transfer_set),
        **selection_record(fr),
    }
    write_json(sdir / "result.json", res)
    return _result_from_disk(name, sdir, res, reused=False)


def _check_source(source, teacher) -> None:
    """The student's source must have the teacher's width and tokenizer (the KD targets and the
    patient loss compare [CLS] states of width ``H``; both read the teacher's WordPieces).

    Raises:
        ConfigError: widths or vocabularies differ (naming ``peakd.init``).
    """
    s, t = source.config, teacher.config
    if (s.hidden_size, s.vocab_size) != (t.hidden_size, t.vocab_size):
        raise ConfigError(f"key 'peakd.init': the pre-trained model (hidden {s.hidden_size}, vocabulary "
                          f"{s.vocab_size}) is not the teacher's (hidden {t.hidden_size}, vocabulary {t.vocab_size}); "
                          "was the teacher fine-tuned from teacher.model_name_or_path? Use peakd.init: teacher.")


def _pretrain_ptp(cfg: Config, model, labelled: list[dict], ptp_y: np.ndarray, dev_rows: list[dict],
                  dev_ptp: np.ndarray, tokenizer, seed: int, sdir: Path, key: str, name: str
                  ) -> tuple["_PTPModel", list[dict], float]:
    """PTP "until convergence" (Pea-KD §"Pretraining with teacher's predictions"): epochs of
    cross-entropy on the PTP labels ``ptp_y`` of the ``labelled`` rows, each followed by the
    accuracy on the held-out dev PTP labels ``dev_ptp`` (the teacher's predictions on dev,
    labelled with the same threshold); stops once it has not improved for ``peakd.ptp_patience``
    epochs or after ``peakd.ptp_epochs`` (the cap), and returns the encoder of the best epoch
    (ties: the earlier). AdamW with linear warm-up/decay over the cap; one
    :func:`kdnb.distill.fit` with ``select_best="max"`` and ``patience`` (resumable mid-epoch).

    Returns:
        ``(ptp_model, curve, seconds)``: the :class:`_PTPModel` holding the best encoder (CPU),
        one row per epoch (``epoch``, ``train_loss``, ``dev_ptp_accuracy``), wall time (s).
    """
    pc = cfg.peakd
    set_seed(seed)
    ptp_model = _PTPModel(model)
    optimizer, scheduler = _optimizer(ptp_model, pc, pc.ptp_epochs * math.ceil(len(labelled) / pc.batch_size))
    collate = _Collate(tokenizer, {"ptp_labels": ptp_y})
    eval_collate = _Collate(tokenizer)
    accelerator = make_accelerator(cfg.mixed_precision)

    def evaluate_ptp(m) -> float:
        logits = predict_logits(m, dev_rows, eval_collate, pc.eval_batch_size, lambda mm, b: mm(**_inputs(b)),
                                accelerator)
        return float((logits.argmax(-1).numpy() == dev_ptp).mean())

    # one fit: the best dev PTP accuracy is kept, and training stops after ptp_patience epochs
    # without a better one (kdnb.distill.fit's select_best and patience; resumable mid-epoch)
    fr = fit(ptp_model, train_set=labelled, collate_fn=collate, batch_size=pc.batch_size,
             loss_fn=lambda m, b: F.cross_entropy(m(**_inputs(b)), b["ptp_labels"]),
             optimizer=optimizer, scheduler=scheduler, epochs=pc.ptp_epochs, evaluate=evaluate_ptp,
             seed=seed, ckpt_dir=sdir / "ptp_checkpoint", accelerator=accelerator, evals_per_epoch=1,
             lengths=[len(r["input_ids"]) for r in labelled], resume_key=f"{key}-ptp", desc=f"{name} PTP",
             select_best="max", patience=pc.ptp_patience)
    curve = [{"epoch": c["epoch"], "train_loss": c["train_loss"], "dev_ptp_accuracy": c["dev_score"]} for c in fr.curve]
    return accelerator.unwrap_model(ptp_model).cpu(), curve, fr.seconds


class _LayerSelect:
    """``arr[idx]`` of a ``(N, L + 1, H)`` array restricted to the hidden-state indices ``layers``
    → ``(B, len(layers), H)`` (reads only those rows of a memory-mapped array)."""

    def __init__(self, arr: np.ndarray, layers: Sequence[int]):
        self.arr, self.layers = arr, list(layers)

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self.arr[idx])[:, self.layers]


def _result_from_disk(name: str, sdir: Path, res: dict, reused: bool) -> PeaKDResult:
    return PeaKDResult(name=name, layers=res["layers"], sps=res["sps"], ptp=res["ptp"], seed=res["seed"],
                       effective_layers=res["effective_layers"], n_params=res["n_params"],
                       n_params_non_embedding=res["n_params_non_embedding"],
                       dev_score=res["dev_score"], test_score=res["test_score"], seconds=res["seconds"],
                       ptp_seconds=res["ptp_seconds"], curve=pd.read_csv(sdir / "learning_curve.csv"),
                       ptp_counts=res.get("ptp_counts"), reused=reused, ptp_epochs=res.get("ptp_epochs"))


def load_student(cfg: Config, name: str):
    """Rebuild a trained Pea-KD student from ``<out>/students/<name>/`` (``student.json`` +
    ``model.pt``), with its SPS sharing restored. Returns ``(model, tokenizer)``.

    Raises:
        StageInputError: the student or the teacher is missing.
    """
    from .errors import StageInputError
    from .teacher import load_teacher

    sdir = cfg.out / "students" / name
    info = read_json(sdir / "student.json")
    if not info or not (sdir / "model.pt").is_file():
        raise StageInputError(f"{sdir}: no trained Pea-KD student; run notebooks/04_students with peakd.enabled.")
    teacher, tokenizer = load_teacher(cfg)
    model = truncated_student(teacher, info["teacher_layers_kept"])
    if info["sps_source_layers"]:
        apply_sps(model, info["sps_source_layers"])
    model.load_state_dict(torch.load(sdir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), tokenizer


# ---- the comparison --------------------------------------------------------------------------

@dataclass
class PeaKDComparison:
    """What :func:`peakd_comparison` returns: ``table`` (one row per student, seeds averaged),
    ``runs`` (one :class:`PeaKDResult` per student and seed), the teacher's dev score and the
    seconds spent on the teacher's states."""

    table: pd.DataFrame
    runs: list[PeaKDResult]
    teacher_dev: float
    teacher_seconds: float


def peakd_comparison(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict,
                     force: bool = False) -> PeaKDComparison:
    """Train every student of the ``peakd`` params — each depth of ``peakd.layers`` × variant
    of ``peakd.variants`` × seed of ``peakd.seeds`` (``[]``: the run's seed) — on the same
    transfer set with the same seeds, and tabulate them.

    Returns:
        :class:`PeaKDComparison`; ``table`` columns: ``student`` (depth, SPS, PTP), ``layers``,
        ``effective layers``, ``SPS``, ``PTP``, ``seeds``, ``parameters``, ``non-embedding
        parameters``, ``dev <metric> (%)``
        (mean over seeds), ``dev std`` (sample std over seeds, ddof 1; None with one seed),
        ``dev mean ± std`` (text), ``init`` (pretrained | teacher), ``PTP epochs (mean)``
        (epochs PTP ran before early stopping), ``retention (%)`` (mean dev / teacher dev),
        ``train time (s)`` (mean, PTP included).

    Raises:
        StageInputError: no fine-tuned teacher; ConfigError: a depth deeper than the teacher.
    """
    from .data import task_spec
    from .teacher import teacher_dir

    pc = cfg.peakd
    seeds = list(pc.seeds) or [cfg.seed]
    with Timer() as timer:
        states = teacher_states(cfg, transfer_set, dsd["dev"], force=force)
    for k in pc.layers:
        if k > states.num_layers:
            raise ConfigError(f"key 'peakd.layers': the teacher has {states.num_layers} layers; cannot keep {k}.")
    runs = [distill_peakd(cfg, transfer_set, dsd, k=k, sps="sps" in v, ptp="ptp" in v, seed=s, states=states,
                          force=force)
            for k in pc.layers for v in pc.variants for s in seeds]
    teacher_dev = (read_json(teacher_dir(cfg) / "result.json") or {}).get("dev_score")
    metric = task_spec(cfg.task).metric_label
    rows = []
    for k in pc.layers:
        for v in pc.variants:
            group = [r for r in runs if r.layers == k and r.sps == ("sps" in v) and r.ptp == ("ptp" in v)]
            dev = np.array([r.dev_score for r in group])
            std = 100 * float(dev.std(ddof=1)) if len(dev) > 1 else None
            ptp_ep = [r.ptp_epochs for r in group if r.ptp_epochs]
            rows.append({
                "student": f"{k}-layer" + (" + SPS" if "sps" in v else "") + (" + PTP" if "ptp" in v else "")
                           + (" (plain KD)" if v == "kd" else ""),
                "layers": k, "effective layers": group[0].effective_layers,
                "SPS": "yes" if "sps" in v else "no", "PTP": "yes" if "ptp" in v else "no",
                "seeds": ",".join(str(r.seed) for r in group),
                "parameters": group[0].n_params,
                "non-embedding parameters": group[0].n_params_non_embedding,
                f"dev {metric} (%)": round(100 * float(dev.mean()), 1),
                "dev std": None if std is None else round(std, 1),
                "dev mean ± std": f"{100 * float(dev.mean()):.1f}" + ("" if std is None else f" ± {std:.1f}"),
                "init": pc.init,
                "PTP epochs (mean)": round(float(np.mean(ptp_ep)), 1) if ptp_ep else None,
                "retention (%)": round(100 * float(dev.mean()) / teacher_dev, 1) if teacher_dev else None,
                "train time (s)": round(float(np.mean([r.seconds for r in group])), 1),
            })
    return PeaKDComparison(pd.DataFrame(rows), runs, teacher_dev, timer.seconds)
