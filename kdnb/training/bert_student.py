"""Distilling the small BERT student with the KD-method zoo of :mod:`kdnb.training.losses`
(``method``; see :data:`METHODS`), including the teacher-assistant chain (Mirzadeh et al. 2020).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import datasets
import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from .. import store
from ..config import Config
from ..data import score
from ..errors import ConfigError
from ..models.bert_inputs import BertCollate, pretokenise
from ..models.bert_inputs import logits as bert_logits
from ..models.bert_student import BertStudent, DistillationModel, build_bert_student
from ..models.common import count_parameters, layer_map
from ..store import Run, RunResult, run_dir
from ..utils import atomic_path, get_logger, set_seed
from . import losses
from .fit import (
    fit,
    make_accelerator,
    predict_logits,
    selection_record,
    tensor_learning_rates,
)

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
    """``loss_fn(model, batch)`` for :func:`kdnb.training.fit.fit` (``model``: a
    :class:`DistillationModel`; ``batch`` from :class:`kdnb.models.bert_inputs.BertCollate`).

    * ``None``: ``bert_student.loss`` on the logits (``ce``: Hinton et al. 2015 soft
      cross-entropy at ``T``; ``kl``; ``mse``: Tang et al. 2019 eq. 2); ``mse``, ``kl``: those.
    * ``alpha_mix``: :func:`kdnb.training.losses.alpha_mix`; ``noisy``: the ``None`` loss on
      :func:`kdnb.training.losses.noisy_logits`.
    * ``pkd``: :func:`kdnb.training.losses.pkd_loss` — the frozen teacher runs forward in the loss for
      its [CLS] states at layers :func:`layer_map` (last layer excluded).
    * ``aguilar``: :func:`kdnb.training.losses.attention_kl` + :func:`kdnb.training.losses.cls_cosine` on the
      layers :func:`kdnb.training.losses.aguilar_weights` switches on at ``progress()`` (fraction of the
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
        return lambda m, b: base(bert_logits(m, b), b["teacher_logits"])
    if method == "noisy":
        return lambda m, b: base(bert_logits(m, b), losses.noisy_logits(b["teacher_logits"], a.noise_sigma,
                                                                    a.noise_fraction))
    if method == "alpha_mix":
        return lambda m, b: losses.alpha_mix(bert_logits(m, b), b["teacher_logits"], b["labels"], a.alpha, temperature)
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
            return logit_w * base(bert_logits(m, b), b["teacher_logits"])
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
def student_dir(cfg: Config, name: str, group: str = "students") -> Path:
    """``<out>/<group>/<name>`` (:func:`kdnb.store.run_dir`)."""
    return run_dir(cfg, name, group)


def _key(cfg: Config, method: Optional[str], transfer_fp: str, extra: str = "") -> str:
    teacher_key = store.record(cfg).get("config_hash")
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
    group: str = "students",
) -> RunResult:
    """Distil the teacher into a :class:`BertStudent` on ``transfer_set`` with a KD ``method``.

    The student has the sizes of ``bert_student``; the objective is :func:`make_objective`
    (``method`` one of :data:`METHODS`); ``ta`` first distils a teacher assistant of the
    ``kd_ablation.ta_*`` sizes (``<name>_assistant``), labels the transfer set with the
    assistant's logits and distils the student from those (Mirzadeh et al. 2020). Training
    runs through :func:`kdnb.training.fit.fit` (accelerate; length-grouped batches; Adam(W) with
    linear warm-up over ``bert_student.warmup_epochs`` then linear decay; a checkpoint per
    epoch, resumed after a kill only under the same parameters).

    Writes ``model.pt`` (the student's ``state_dict``), ``learning_curve.csv``,
    ``dev_predictions.csv`` (``test_predictions.csv`` for labelled test sets) and
    ``result.json`` under ``<out>/<group>/<name>/``; a finished run with the same parameters,
    teacher and transfer set is reused (``force`` redoes it).

    Args:
        transfer_set: rows with ``sentence`` (``sentence2``), ``teacher_logits`` ``(C,)`` and
            ``label`` (``-1``: none; used by ``alpha_mix`` and ``pkd``).
        dsd: the task's splits (``dev`` is scored).

    Returns:
        the run (:class:`kdnb.store.RunResult`, kind ``bert_student``; scores are fractions), whose
        record adds ``method``, ``n_params_non_embedding`` (encoder + pooler + classifier, the
        thesis' count), ``sizes`` and ``assistant_seconds`` (``ta``: the assistant's training time).

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
    run = Run("bert_student", name, student_dir(cfg, name, group), _key(cfg, method, transfer_set._fingerprint, extra))
    if saved := run.saved(force):
        return saved
    return _train(cfg, transfer_set, dsd, run, method, assistant_seconds)


def _train(cfg: Config, transfer_set, dsd, run: Run, method: Optional[str], assistant_seconds: float) -> RunResult:
    from ..models.teacher import load_teacher
    from .teacher import write_csv, write_predictions

    bc = cfg.bert_student
    name, sdir, key = run.name, run.dir, run.key
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
    collate = BertCollate(tokenizer, bc.max_length)
    train_collate = BertCollate(tokenizer, bc.max_length, 8, mask_4d=True) if graphs else collate
    dev = dsd["dev"]
    dev_labels = np.array(dev["label"])

    def evaluate(m) -> float:
        logits = predict_logits(m, dev, collate, bc.eval_batch_size, bert_logits, accelerator)
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
        get_logger().info(f"{name}: CUDA graphs {fr.cuda_graphs}")
    student = accelerator.unwrap_model(model).student
    with atomic_path(sdir / "model.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    write_csv(pd.DataFrame(fr.curve), sdir / "learning_curve.csv")
    dev_logits = predict_logits(student, dev, collate, bc.eval_batch_size, bert_logits, accelerator).numpy()
    write_predictions(dev, dev_logits, sdir / "dev_predictions.csv")
    test_score = None
    if "test" in dsd and len(dsd["test"]) and min(dsd["test"]["label"]) >= 0:
        test_logits = predict_logits(student, dsd["test"], collate, bc.eval_batch_size, bert_logits, accelerator).numpy()
        write_predictions(dsd["test"], test_logits, sdir / "test_predictions.csv")
        test_score = score(cfg.task, dsd["test"]["label"], test_logits.argmax(-1))
    return run.finish({
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
    })


def load_bert_student(cfg: Config, name: str, teacher=None) -> BertStudent:
    """The trained student ``<out>/students/<name>/model.pt`` (eval mode, CPU).

    Args:
        teacher: the fine-tuned teacher (for the embedding shapes); loaded if None.

    Raises:
        StageInputError: the student has not been trained.
    """
    from ..errors import StageInputError
    from ..models.teacher import load_teacher

    run = store.finished(cfg, name, "bert_student")
    if run is None:
        raise StageInputError(f"{student_dir(cfg, name)}: no trained BERT student '{name}'; run notebooks/04_students "
                              "first.")
    if teacher is None:
        teacher, _ = load_teacher(cfg)
    sizes = dataclasses.replace(cfg.bert_student, init="random", **run.record["sizes"])
    model = build_bert_student(sizes, teacher.config.num_labels, teacher)
    model.load_state_dict(torch.load(run.model_dir, map_location="cpu"))
    return model.eval()


def teacher_assistant(cfg: Config, transfer_set: datasets.Dataset, dsd: datasets.DatasetDict, name: str,
                      force: bool = False) -> tuple[RunResult, datasets.Dataset]:
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
    sdir, ta_key = ta.dir, ta.record["config_hash"]
    meta = {"assistant": ta_key, "transfer": transfer_set._fingerprint, "rows": len(transfer_set)}
    art = store.Artefact("assistant_logits", sdir / "transfer_logits.npy", meta, cfg.out,
                         record=sdir / "transfer_logits.json")
    if art.saved(force):
        logits = np.load(art.path)
    else:
        from ..models.teacher import load_tokenizer

        accelerator = make_accelerator(cfg.mixed_precision)
        model = accelerator.prepare_model(load_bert_student(ta_cfg, ta_name), evaluation_mode=True)
        collate = BertCollate(load_tokenizer(cfg), bc.max_length)
        logits = predict_logits(model, transfer_set, collate, bc.eval_batch_size, bert_logits, accelerator).numpy()
        with atomic_path(art.path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, logits)
        art.finish()
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
    from ..models.teacher import teacher_dir

    t_file, s_file = teacher_dir(cfg) / "dev_predictions.csv", student_dir(cfg, name) / "dev_predictions.csv"
    if not (t_file.is_file() and s_file.is_file()):
        return None
    t, s = pd.read_csv(t_file), pd.read_csv(s_file)
    cols = [c for c in t.columns if c.startswith("logit_")]
    zt, zs = torch.tensor(t[cols].to_numpy()), torch.tensor(s[cols].to_numpy())
    kl = losses.kl_divergence(zs, zt, 1.0).item()
    return float((t["prediction"].to_numpy() == s["prediction"].to_numpy()).mean()), kl
