"""One training loop for the teacher and every student, run through 🤗 accelerate.

:func:`fit` does device placement and mixed precision (``Accelerator``), evaluates on dev
``evals_per_epoch`` times per epoch (the learning curve), clips gradients, and checkpoints
after every epoch with ``Accelerator.save_state`` (model, optimiser, scheduler and RNG
states). A run killed mid-way resumes from the last finished epoch; the shuffling order of
epoch ``e`` is drawn from ``seed + e``, so a resumed run sees the same batches as an
uninterrupted one.

The losses live in :mod:`kdnb.losses`; the loop only calls ``loss_fn(model, batch)``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm
from transformers.trainer_pt_utils import LengthGroupedSampler

from .utils import Timer, atomic_path


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        curve: one dict per evaluation: ``step``, ``epoch`` (fractional), ``train_loss``
            (mean since the previous evaluation) and ``dev_score``.
        seconds: wall time of this call in seconds (excluding epochs restored from a checkpoint).
        resumed_epochs: number of epochs restored from the checkpoint instead of trained.
    """

    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_epochs: int = 0

    @property
    def final_score(self) -> float:
        return self.curve[-1]["dev_score"] if self.curve else float("nan")


def make_accelerator(mixed_precision: str = "no") -> Accelerator:
    """An ``Accelerator`` for this process (CPU here, GPU(s) under ``accelerate launch``).

    Args:
        mixed_precision: ``no`` | ``fp16`` | ``bf16`` (the ``mixed_precision`` parameter).
    """
    cpu = not torch.cuda.is_available()
    return Accelerator(mixed_precision="no" if cpu else mixed_precision, cpu=cpu)


def fit(
    model: torch.nn.Module,
    *,
    train_set: Dataset,
    collate_fn: Callable,
    batch_size: int,
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    evaluate: Callable[[torch.nn.Module], float],
    seed: int,
    ckpt_dir: Path,
    accelerator: Accelerator,
    scheduler: Optional[Any] = None,
    evals_per_epoch: int = 1,
    grad_clip: Optional[float] = None,
    lengths: Optional[list[int]] = None,
    resume_key: Optional[str] = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs, evaluating and checkpointing as it goes.

    Args:
        model: the network; ``loss_fn(model, batch)`` must return a scalar loss tensor.
        train_set: map-style dataset; ``collate_fn`` turns a list of its rows into a batch dict.
        batch_size: examples per optimisation step.
        optimizer, scheduler: already built on ``model``'s parameters; the scheduler (if any)
            is stepped once per batch.
        evaluate: ``evaluate(model) -> dev score`` (model is in eval mode during the call).
        seed: shuffling of epoch ``e`` uses ``torch.Generator().manual_seed(seed + e)``.
        ckpt_dir: where the per-epoch checkpoint (``Accelerator.save_state``) is kept; it is
            removed once training ends, the curve survives as ``<ckpt_dir>.curve.json``.
        grad_clip: max global L2 norm of the gradients (None: no clipping).
        resume_key: identifies the run's parameters; a checkpoint saved under another key
            (the parameters changed since) is discarded instead of resumed.
        lengths: per-example lengths (tokens); if given, batches are length-grouped with
            transformers' ``LengthGroupedSampler`` (random mega-batches of 50 batches, sorted by
            length inside), which cuts padding — most of the compute on short sentences.

    Returns:
        :class:`FitResult` with the learning curve.
    """
    ckpt_dir = Path(ckpt_dir)
    state_file = ckpt_dir / "trainer_state.json"
    generator = torch.Generator()
    if lengths is not None:
        sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)
    else:
        sampler = RandomSampler(train_set, generator=generator)
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)
    prepared = accelerator.prepare(model, optimizer, loader, *([scheduler] if scheduler is not None else []))
    model, optimizer, loader = prepared[:3]
    scheduler = prepared[3] if scheduler is not None else None

    result = FitResult()
    start_epoch = 0
    if state_file.exists() and json.loads(state_file.read_text()).get("resume_key") != resume_key:
        accelerator.print(f"{desc}: parameters changed since the checkpoint; starting afresh")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if state_file.exists():
        state = json.loads(state_file.read_text())
        accelerator.load_state(str(ckpt_dir / "state"))
        start_epoch = state["epochs_done"]
        result.curve = state["curve"]
        result.resumed_epochs = start_epoch
        accelerator.print(f"{desc}: resumed from checkpoint after epoch {start_epoch}")

    steps_per_epoch = len(loader)
    eval_points = {min(steps_per_epoch, math.ceil(steps_per_epoch * (k + 1) / evals_per_epoch))
                   for k in range(evals_per_epoch)}
    with Timer() as timer:
        for epoch in range(start_epoch, epochs):
            generator.manual_seed(seed + epoch)
            model.train()
            running, n_running = 0.0, 0
            bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False,
                       disable=not accelerator.is_local_main_process)
            for step, batch in enumerate(bar, start=1):
                with accelerator.autocast():
                    loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if grad_clip is not None:
                    accelerator.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                optimizer.zero_grad()
                running += loss.item()
                n_running += 1
                if step in eval_points:
                    model.eval()
                    with torch.no_grad():
                        dev = float(evaluate(model))
                    model.train()
                    result.curve.append({
                        "step": epoch * steps_per_epoch + step,
                        "epoch": round(epoch + step / steps_per_epoch, 4),
                        "train_loss": running / max(n_running, 1),
                        "dev_score": dev,
                    })
                    bar.set_postfix(loss=f"{running / max(n_running, 1):.4f}", dev=f"{dev:.4f}")
                    running, n_running = 0.0, 0
            _save_checkpoint(accelerator, ckpt_dir, epoch + 1, result.curve, resume_key)
    result.seconds = timer.seconds
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        curve_file = ckpt_dir.with_name(ckpt_dir.name + ".curve.json")
        curve_file.write_text(json.dumps(result.curve, indent=1))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result


def _save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, epochs_done: int, curve: list,
                     resume_key: Optional[str] = None) -> None:
    """Atomically replace the checkpoint: state and trainer_state.json are renamed together."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with atomic_path(ckpt_dir) as tmp:
        tmp.mkdir()
        accelerator.save_state(str(tmp / "state"))
        (tmp / "trainer_state.json").write_text(json.dumps({"epochs_done": epochs_done, "curve": curve,
                                                                "resume_key": resume_key}))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    batch_size: int,
    forward: Callable[[torch.nn.Module, dict], torch.Tensor],
    accelerator: Optional[Accelerator] = None,
    desc: Optional[str] = None,
) -> torch.Tensor:
    """Logits of ``model`` on every row of ``dataset`` in order, as a CPU float32 tensor.

    Args:
        forward: ``forward(model, batch) -> logits (batch, num_labels)``.

    Returns:
        Tensor of shape ``(len(dataset), num_labels)``.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    for batch in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if accelerator is not None:
            with accelerator.autocast():
                logits = forward(model, batch)
        else:
            logits = forward(model, batch)
        out.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
