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
variants ``kd``/``sps``/``ptp``/``sps+ptp`` × seeds) through :func:`kdnb.training.fit.fit` and
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

from .. import store
from ..config import Config, PeaKDConfig
from ..data import content_hash, score
from ..errors import ConfigError
from ..models.bert_inputs import BertCollate, encode_rows, model_inputs
from ..models.bert_inputs import logits as bert_logits
from ..models.common import count_parameters, layer_map
from ..models.peakd import (
    apply_sps,
    build_student,
    pretrained_source,
    truncated_student,
)
from ..store import Run, RunResult, run_dir
from ..utils import atomic_path, read_json, set_seed, write_json
from .fit import fit, make_accelerator, predict_logits, selection_record
from .losses import pkd_loss
from .teacher import write_csv, write_predictions

PTP_LABELS = ("confidently correct", "unconfidently correct", "confidently wrong", "unconfidently wrong")
"""The 4 PTP labels, in id order (Pea-KD §"Pretraining with teacher's predictions")."""


# ---- PTP labels ---------------------------------------------------------------

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
    from ..models.teacher import load_teacher

    out = cfg.out / "peakd" / "teacher"
    teacher_key = store.record(cfg).get("config_hash")
    meta = {"teacher": teacher_key, "rows": len(transfer_set), "content": content_hash(transfer_set),
            "dev": content_hash(dev), "max_length": cfg.peakd.max_length}
    art = store.Artefact("teacher_states", out, meta, cfg.out, record=out / "meta.json")
    if art.saved(force):
        arrays = {n: np.load(out / f"{n}.npy", mmap_mode="r") for n in ("logits", "cls", "dev_logits")}
        return TeacherStates(**arrays, num_layers=arrays["cls"].shape[1] - 1, reused=True)

    teacher, tokenizer = load_teacher(cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    teacher = accelerator.prepare_model(teacher, evaluation_mode=True)
    bs = cfg.peakd.eval_batch_size

    def run(ds: datasets.Dataset, with_cls: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
        rows = encode_rows(tokenizer, ds, cfg.peakd.max_length)
        order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")  # less padding
        collate = BertCollate(tokenizer)
        logits, cls = np.zeros((len(rows), teacher.config.num_labels), np.float32), None
        with torch.no_grad():
            for start in range(0, len(rows), bs):
                idx = order[start:start + bs]
                batch = {k: v.to(accelerator.device) for k, v in collate([rows[i] for i in idx]).items()}
                with accelerator.autocast():
                    o = teacher(**model_inputs(batch), output_hidden_states=with_cls)
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
    art.finish()
    return TeacherStates(logits, cls, dev_logits, cls.shape[1] - 1, reused=False)


# ---- training one student --------------------------------------------------------------------

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

    pc = dataclasses.asdict(cfg.peakd)
    for k_ in ("enabled", "layers", "variants", "seeds", "eval_batch_size"):
        pc.pop(k_)
    if not ptp:
        for k_ in ("ptp_threshold", "ptp_threshold_wrong", "ptp_epochs", "ptp_patience"):
            pc.pop(k_)
    teacher_key = store.record(cfg).get("config_hash")
    blob = json.dumps({"peakd": pc, "k": k, "sps": sps, "ptp": ptp, "seed": seed, "task": cfg.task,
                       "mixed_precision": cfg.mixed_precision}, sort_keys=True)
    return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}-{teacher_key}-{content_hash(transfer_set)}"


def distill_peakd(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict, *, k: int, sps: bool,
                  ptp: bool, seed: int, states: Optional[TeacherStates] = None, force: bool = False) -> RunResult:
    """Train one Pea-KD student: the first ``k`` layers of the pre-trained model
    (``peakd.init: pretrained``; of the fine-tuned teacher with ``init: teacher``), with SPS
    and/or PTP.

    1. :func:`build_student` (seeded with ``seed``) from :func:`pretrained_source` or the teacher;
    2. with ``ptp``: :func:`_pretrain_ptp` — cross-entropy on the :func:`ptp_labels` of the
       labelled transfer-set rows (4-way head on the pooled [CLS]) until the dev PTP accuracy
       stops improving (``peakd.ptp_patience``; at most ``peakd.ptp_epochs`` epochs);
    3. ``peakd.epochs`` epochs of KD on the whole transfer set with :func:`kdnb.training.losses.pkd_loss` (``reduction="mean"``)
       (intermediate layers matched by :func:`kdnb.models.common.layer_map`).

    Both phases run through :func:`kdnb.training.fit.fit` (AdamW with linear warm-up/decay,
    length-grouped batches, a checkpoint per epoch, resumable); a finished PTP phase is kept
    in ``ptp_model.pt`` so a kill during KD does not redo it. Writes ``model.pt`` (state dict,
    shared tensors stored once), ``student.json`` (how to rebuild it), ``learning_curve.csv``
    (KD; ``ptp_curve.csv`` for PTP: dev accuracy on the PTP labels), ``dev_predictions.csv`` and
    ``result.json`` under ``<out>/students/<name>/``; reused while :func:`_run_key` matches.

    Raises:
        ConfigError: ``k`` deeper than the teacher.
        StageInputError: no fine-tuned teacher.
    """
    from ..models.teacher import load_teacher

    pc = cfg.peakd
    variant = "sps+ptp" if sps and ptp else "sps" if sps else "ptp" if ptp else "kd"
    name = student_name(k, variant, seed)
    run = Run("peakd", name, run_dir(cfg, name), _run_key(cfg, k, sps, ptp, seed, transfer_set))
    if saved := run.saved(force):
        return saved
    sdir, key = run.dir, run.key

    dev = dsd["dev"]
    states = states or teacher_states(cfg, transfer_set, dev, force=False)
    set_seed(seed)
    teacher, tokenizer = load_teacher(cfg)
    source = pretrained_source(cfg, teacher.config.num_labels) if pc.init == "pretrained" else teacher
    _check_source(source, teacher)
    model = build_student(source, k, sps)
    del teacher, source
    depth = model.config.num_hidden_layers
    t_layers = layer_map(depth, states.num_layers, include_last=False)
    rows = encode_rows(tokenizer, transfer_set, pc.max_length)
    dev_rows = encode_rows(tokenizer, dev, pc.max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    labels = np.asarray(transfer_set["label"], dtype=np.int64)
    dev_labels = np.asarray(dev["label"], dtype=np.int64)
    eval_collate = BertCollate(tokenizer)
    sdir.mkdir(parents=True, exist_ok=True)

    # -- phase 1: PTP ------------------------------------------------------------------------
    ptp_seconds, ptp_counts = 0.0, None
    if ptp:
        # torch.tensor copies: the logits may be a read-only memmap (torch.as_tensor warns on those)
        ptp_y = ptp_labels(torch.tensor(np.asarray(states.logits)), torch.as_tensor(labels),
                           pc.ptp_threshold).numpy()
        dev_ptp = ptp_labels(torch.tensor(np.asarray(states.dev_logits)), torch.as_tensor(dev_labels),
                             pc.ptp_threshold).numpy()
        ptp_counts = {PTP_LABELS[i]: int((ptp_y == i).sum()) for i in range(len(PTP_LABELS))}
        ptp_art = store.Artefact("ptp_model", sdir / "ptp_model.pt", key, cfg.out, record=sdir / "ptp.json",
                                 field="key")
        ptp_state = ptp_art.saved(force)
        if ptp_state:
            model.bert.load_state_dict(torch.load(ptp_art.path, map_location="cpu", weights_only=True))
            ptp_seconds = float(ptp_state.get("seconds", 0.0))
        else:
            labelled = [r for r in rows if ptp_y[r["row"]] >= 0]
            if not labelled:
                raise ConfigError("key 'peakd.variants': PTP needs transfer-set rows with gold labels; this "
                                  "transfer set has none.")
            ptp_model, curve, ptp_seconds = _pretrain_ptp(cfg, model, labelled, ptp_y, dev_rows, dev_ptp, tokenizer,
                                                          seed, sdir, key, name)
            write_csv(pd.DataFrame(curve), sdir / "ptp_curve.csv")
            with atomic_path(ptp_art.path) as tmp:
                torch.save(ptp_model.bert.state_dict(), tmp)
            best = max(curve, key=lambda r: (r["dev_ptp_accuracy"], -r["epoch"]))
            ptp_art.finish({"seconds": ptp_seconds, "counts": ptp_counts, "epochs": len(curve),
                            "best_epoch": best["epoch"], "best_dev_ptp_accuracy": best["dev_ptp_accuracy"]})
            model.bert = ptp_model.bert.cpu()
            del ptp_model

    # -- phase 2: KD (CE + KL·T² + β·intermediate MSE) ------------------------------------------
    set_seed(seed)
    accelerator = make_accelerator(cfg.mixed_precision)
    steps = pc.epochs * math.ceil(len(rows) / pc.batch_size)
    optimizer, scheduler = _optimizer(model, pc, steps)
    collate = BertCollate(tokenizer, extra={"teacher_logits": states.logits, "labels": labels,
                                   **({"teacher_cls": _LayerSelect(states.cls, t_layers)} if t_layers else {})})

    def kd_loss(m, b) -> torch.Tensor:
        out = m(**model_inputs(b), output_hidden_states=bool(t_layers) and pc.beta > 0)
        s_cls = t_cls = None
        if t_layers and pc.beta > 0:
            s_cls = torch.stack([out.hidden_states[j][:, 0] for j in range(1, depth)])  # (D−1, B, H)
            t_cls = b["teacher_cls"].transpose(0, 1)                                   # (D−1, B, H)
        return pkd_loss(out.logits, b["teacher_logits"], b["labels"], s_cls, t_cls, alpha=pc.alpha, beta=pc.beta,
                        temperature=pc.temperature, reduction="mean")

    def evaluate(m) -> float:
        logits = predict_logits(m, dev_rows, eval_collate, pc.eval_batch_size, bert_logits, accelerator)
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
                                       "rebuild": "kdnb.training.peakd.load_student"})
    write_csv(pd.DataFrame(fr.curve), sdir / "learning_curve.csv")
    model.to(accelerator.device)  # saved from the CPU above; predicted where the batches go (a GPU)
    dev_logits = predict_logits(model, dev_rows, eval_collate, pc.eval_batch_size, bert_logits, accelerator).numpy()
    write_predictions(dev, dev_logits, sdir / "dev_predictions.csv")
    test_score = None
    if "test" in dsd and len(dsd["test"]) and min(dsd["test"]["label"]) >= 0:
        test_logits = predict_logits(model, encode_rows(tokenizer, dsd["test"], pc.max_length), eval_collate,
                                     pc.eval_batch_size, bert_logits, accelerator).numpy()
        write_predictions(dsd["test"], test_logits, sdir / "test_predictions.csv")
        test_score = score(cfg.task, dsd["test"]["label"], test_logits.argmax(-1))
    return run.finish({
        "model": f"Pea-KD student: teacher's first {k} layer(s)" + (", SPS" if sps else "") + (", PTP" if ptp else ""),
        "layers": k, "sps": sps, "ptp": ptp, "seed": seed, "effective_layers": depth,
        "matched_teacher_layers": t_layers,
        "dev_score": score(cfg.task, dev_labels, dev_logits.argmax(-1)),
        "test_score": test_score,
        "n_params": count_parameters(model),
        "n_params_non_embedding": count_parameters(model, embeddings=False),
        "seconds": fr.seconds + ptp_seconds,
        "ptp_seconds": ptp_seconds,
        "ptp_counts": ptp_counts,
        "ptp_epochs": (read_json(sdir / "ptp.json") or {}).get("epochs") if ptp else None,
        "ptp_best_epoch": (read_json(sdir / "ptp.json") or {}).get("best_epoch") if ptp else None,
        "init": pc.init,
        "transfer_set_size": len(transfer_set),
        **selection_record(fr),
    })


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
    :func:`kdnb.training.fit.fit` with ``select_best="max"`` and ``patience`` (resumable mid-epoch).

    Returns:
        ``(ptp_model, curve, seconds)``: the :class:`_PTPModel` holding the best encoder (CPU),
        one row per epoch (``epoch``, ``train_loss``, ``dev_ptp_accuracy``), wall time (s).
    """
    pc = cfg.peakd
    set_seed(seed)
    ptp_model = _PTPModel(model)
    optimizer, scheduler = _optimizer(ptp_model, pc, pc.ptp_epochs * math.ceil(len(labelled) / pc.batch_size))
    collate = BertCollate(tokenizer, extra={"ptp_labels": ptp_y})
    eval_collate = BertCollate(tokenizer)
    accelerator = make_accelerator(cfg.mixed_precision)

    def evaluate_ptp(m) -> float:
        logits = predict_logits(m, dev_rows, eval_collate, pc.eval_batch_size, lambda mm, b: mm(**model_inputs(b)),
                                accelerator)
        return float((logits.argmax(-1).numpy() == dev_ptp).mean())

    # one fit: the best dev PTP accuracy is kept, and training stops after ptp_patience epochs
    # without a better one (kdnb.training.fit.fit's select_best and patience; resumable mid-epoch)
    fr = fit(ptp_model, train_set=labelled, collate_fn=collate, batch_size=pc.batch_size,
             loss_fn=lambda m, b: F.cross_entropy(m(**model_inputs(b)), b["ptp_labels"]),
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


def load_student(cfg: Config, name: str):
    """Rebuild a trained Pea-KD student from ``<out>/students/<name>/`` (``student.json`` +
    ``model.pt``), with its SPS sharing restored. Returns ``(model, tokenizer)``.

    Raises:
        StageInputError: the student or the teacher is missing.
    """
    from ..errors import StageInputError
    from ..models.teacher import load_teacher

    sdir = run_dir(cfg, name)
    info = read_json(sdir / "student.json")
    if not info or not (sdir / "model.pt").is_file():
        raise StageInputError(f"{sdir}: no trained Pea-KD student; run notebooks/04_students with peakd.enabled.")
    teacher, tokenizer = load_teacher(cfg)
    model = truncated_student(teacher, info["teacher_layers_kept"])
    if info["sps_source_layers"]:
        apply_sps(model, info["sps_source_layers"])
    model.load_state_dict(torch.load(sdir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), tokenizer
