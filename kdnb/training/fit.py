"""One training loop for the teacher and every student, run through 🤗 accelerate.

:func:`fit` does device placement and mixed precision (``Accelerator``), gradient
accumulation (``accelerator.accumulate``), evaluates on dev ``evals_per_epoch`` times per
epoch (the learning curve), clips gradients, and checkpoints with ``Accelerator.save_state``
(model, optimiser, scheduler and RNG states) after every epoch and, with ``save_steps``,
every ``save_steps`` optimiser steps. A run killed mid-way resumes from the last checkpoint;
the shuffling order of epoch ``e`` is drawn from ``seed + e`` and a checkpoint taken
mid-epoch resumes with ``accelerator.skip_first_batches``, so a resumed run sees the same
batches, with the same RNG states, as an uninterrupted one (identical results on the same
hardware).

The losses live in :mod:`kdnb.training.losses`; the loop only calls ``loss_fn(model, batch)``.
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
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..utils import Timer, atomic_path, get_logger, recover_path, tqdm


def tensor_learning_rates(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Put each parameter group's learning rate in a 0-d float32 tensor on ``device``, keeping the
    float as ``initial_lr`` (what a scheduler built afterwards starts from).

    A step replayed from a CUDA graph (:class:`CUDAGraphStep`) reads the rate from that tensor,
    so a scheduler's updates reach it: PyTorch's schedulers write a tensor rate in place
    (``fill_``) with the float they compute from ``initial_lr``, without a host sync. Capturable
    and fused Adam/AdamW accept tensor rates. Call it before building the scheduler.
    """
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group.setdefault("initial_lr", lr)
        group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device)


def _unwrap(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The PyTorch optimiser inside accelerate's ``AcceleratedOptimizer`` (or ``optimizer`` itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _tensor_lrs(optimizer: torch.optim.Optimizer) -> list:
    return [g["lr"] for g in _unwrap(optimizer).param_groups]


def _restore_tensor_lrs(optimizer: torch.optim.Optimizer, lrs: list) -> None:
    """Keep the captured tensor rates ``lrs`` in the parameter groups: a scheduler that assigned
    a new value (a PyTorch whose schedulers do not write tensor rates in place) has it copied
    into the captured tensor, which the graphs read, instead."""
    for group, lr in zip(_unwrap(optimizer).param_groups, lrs):
        if group["lr"] is not lr:
            lr.fill_(group["lr"])
            group["lr"] = lr


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        curve: one dict per evaluation: ``step``, ``epoch`` (fractional), ``train_loss``
            (mean since the previous evaluation) and ``dev_score``.
        seconds: wall time of this call in seconds (excluding epochs restored from a checkpoint).
        resumed_epochs: number of epochs restored from the checkpoint instead of trained.
        resumed_batches: batches of the following epoch restored from a mid-epoch checkpoint
            (``save_steps``) instead of trained.
        epoch_seconds: wall time of each epoch trained by this call (s), its evaluations and
            checkpoint included (the first one also holds one-off costs such as graph captures).
        cuda_graphs: with ``fit(cuda_graphs=True)`` on a GPU: ``steps``, ``captures`` (graphs
            recorded, one per batch shape) and ``eager_reason`` (None, or why it fell back).
        best: with ``fit(select_best=...)``: the evaluation whose weights the model holds on
            return (``step``, ``epoch``, ``dev_score``), else None.
    """

    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_epochs: int = 0
    resumed_batches: int = 0
    cuda_graphs: Optional[dict] = None
    epoch_seconds: list[float] = field(default_factory=list)
    best: Optional[dict] = None

    @property
    def final_score(self) -> float:
        """Dev score of the last evaluation (the last epoch's weights)."""
        return self.curve[-1]["dev_score"] if self.curve else float("nan")

    last_score = final_score

    @property
    def best_score(self) -> float:
        """Dev score of the kept (best) evaluation; the last one without model selection."""
        return self.best["dev_score"] if self.best else self.final_score


def selection_record(fr: FitResult) -> dict:
    """What a stage's ``result.json`` says of its model selection: ``dev_last`` (the last
    evaluation's dev score), ``best_epoch`` and ``best_step`` (where the kept weights come from;
    the last evaluation's without selection). The kept model's own ``dev_score`` is recomputed
    by the caller from its predictions."""
    point = fr.best or (fr.curve[-1] if fr.curve else {})
    return {"dev_last": fr.last_score, "best_epoch": point.get("epoch"), "best_step": point.get("step")}


def _improves(score: float, best: Optional[dict], mode: str) -> bool:
    """Whether ``score`` beats the kept evaluation ``best`` (``mode`` max or min); ties keep the
    earlier one, as early stopping does; a NaN score never replaces a kept one."""
    if best is None:
        return True
    return score > best["dev_score"] if mode == "max" else score < best["dev_score"]


def make_accelerator(mixed_precision: str = "no", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An ``Accelerator`` for this process (CPU here, GPU(s) under ``accelerate launch``).

    Args:
        mixed_precision: ``no`` | ``fp16`` | ``bf16`` (the ``mixed_precision`` parameter);
            ignored (``no``) without a GPU.
        gradient_accumulation_steps: micro-batches per optimiser step (the training sections'
            ``gradient_accumulation_steps``); :func:`fit` splits each batch into that many.

    Note: accelerate keeps the accumulation setting in a process-wide state, so the accelerator
    made last decides it; make one per stage, right before its :func:`fit`.
    """
    cpu = not torch.cuda.is_available()
    return Accelerator(mixed_precision="no" if cpu else mixed_precision, cpu=cpu,
                       gradient_accumulation_steps=gradient_accumulation_steps)


CAPTURE_ERROR_MODE = "thread_local"
"""``torch.cuda.graph``'s ``capture_error_mode`` for :class:`CUDAGraphStep`: only the capturing
thread's CUDA calls are restricted, so a ``DataLoader``'s pin-memory thread may allocate pinned
memory while a step is captured (``"global"``, PyTorch's default, makes both fail)."""


class CUDAGraphStep:
    """One training step (forward, backward, gradient clipping, optimiser step) captured into a
    CUDA graph per batch shape and replayed (PyTorch "whole-network capture", ``torch.cuda.graph``).

    Why: on short sentences a step of either student is bound by kernel launches, not by the
    GPU's arithmetic (measured on an H100 with ``benchmarks/gpu_step_profile.py``: the BiLSTM at
    batch 50 spends ≈ 1.9 ms in kernels of a ≈ 11 ms step, the thesis BERT student at batch 256
    ≈ 5 ms of ≈ 38 ms); a replayed graph launches the whole step at once. Batches should be padded
    to a few lengths (``pad_to_multiple_of`` in the collators), since each new shape
    ``(name, shape, dtype)`` of the batch's tensors is captured once: a warm-up forward and
    backward on a side stream (no optimiser step, so training is not changed), then the capture,
    then the replay that performs the real step. The first step of a run is eager, so that the
    optimiser's state exists before any capture.

    Requirements (else :class:`ValueError`): a CUDA device; an optimiser built with
    ``capturable=True`` (it may also be ``fused``); a learning-rate scheduler only with tensor
    learning rates (:func:`tensor_learning_rates`: a float rate would be baked into the graph,
    a tensor one is read at every replay); no fp16 (its loss scaler syncs); every value of the
    batch a tensor, and a
    ``loss_fn`` without host synchronisation (e.g. the BiLSTM's unpacked path,
    :meth:`kdnb.models.bilstm.BiLSTMStudent.encode` with ``packed=False``). If a capture fails anyway
    (an op that syncs), the step falls back to eager for the rest of the run and says so once.

    Captures run in ``capture_error_mode="thread_local"`` (:data:`CAPTURE_ERROR_MODE`): only CUDA
    calls of the capturing thread are checked. In the default ``"global"`` mode a call from any
    other thread of the process breaks the capture and fails itself; a ``DataLoader`` with
    ``pin_memory=True`` has such a thread, which allocates page-locked memory and queries CUDA
    events for every batch it pins. On one H200 (2026-12-01, ``num_workers: 4``) the BiLSTM's
    capture of a new batch shape met a pinning and the run died with
    ``cudaErrorStreamCaptureUnsupported`` raised in the pin-memory thread. The pin-memory
    thread never touches the capturing stream, so nothing it does belongs in the graph
    (PyTorch's ``torch.cuda.graph`` docs; the same fix: LibreYOLO PR #681, vLLM PR #48053).

    ``step(batch)`` returns the loss ``()``: a static tensor that the next replay overwrites, so
    read it (e.g. add it to a running sum) before the next step. A capture's warm-up draws from
    the dropout RNG, so with dropout a run resumed from a checkpoint (which captures again) is
    not bit-identical to an uninterrupted one; without dropout (the thesis BiLSTM) it is.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
                 optimizer: torch.optim.Optimizer, *, grad_clip: Optional[float] = None,
                 autocast_dtype: Optional[torch.dtype] = None):
        inner = _unwrap(optimizer)
        if not torch.cuda.is_available():
            raise ValueError("cuda_graphs needs a CUDA device.")
        if not all(g.get("capturable") for g in inner.param_groups):
            raise ValueError(f"cuda_graphs: build the optimiser {type(inner).__name__} with capturable=True.")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, inner
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip, self.autocast_dtype = grad_clip, autocast_dtype
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, torch.Tensor]] = {}
        self.eager_reason: Optional[str] = None
        self.steps = 0
        self.captures = 0

    def _loss(self, batch: dict) -> torch.Tensor:
        """Forward and loss under autocast without its weight cache (as graph capture needs)."""
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self.loss_fn(self.model, batch)

    def _update(self) -> None:
        """Gradient clipping (foreach: no host sync) and the optimiser step."""
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()

    def _eager(self, batch: dict) -> torch.Tensor:
        loss = self._loss(batch)
        loss.backward()
        self._update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _capture(self, batch: dict) -> tuple[torch.cuda.CUDAGraph, dict, torch.Tensor]:
        static = {k: v.clone() for k, v in batch.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: forward and backward only, gradients thrown away
            self._loss(static).backward()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
            static_loss = self._loss(static)
            static_loss.backward()
            self._update()
        self.captures += 1
        return graph, static, static_loss.detach()

    def __call__(self, batch: dict) -> torch.Tensor:
        self.steps += 1
        if self.steps == 1 or self.eager_reason is not None:
            return self._eager(batch)
        if not all(isinstance(v, torch.Tensor) for v in batch.values()):
            raise ValueError("cuda_graphs: every value of a batch must be a tensor, got "
                             f"{ {k: type(v).__name__ for k, v in batch.items() if not isinstance(v, torch.Tensor)} }.")
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(batch)
            except Exception as e:  # noqa: BLE001 (an op that syncs: run eager, say why once)
                self.eager_reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                get_logger().warning(f"cuda_graphs: capture failed, eager steps from here ({self.eager_reason})")
                torch.cuda.synchronize()
                self.optimizer.zero_grad(set_to_none=True)
                return self._eager(batch)
        graph, static, loss = self.graphs[key]
        for k, v in batch.items():
            static[k].copy_(v, non_blocking=True)
        graph.replay()
        return loss


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
    save_steps: Optional[int] = None,
    num_workers: int = 0,
    pin_memory: Optional[bool] = None,
    cuda_graphs: bool = False,
    select_best: Optional[str] = "max",
    patience: Optional[int] = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs, evaluating and checkpointing as it goes.

    Args:
        model: the network; ``loss_fn(model, batch)`` must return a scalar loss tensor.
        train_set: map-style dataset; ``collate_fn`` turns a list of its rows into a batch dict.
        batch_size: examples per optimisation step (per process). With
            ``accelerator.gradient_accumulation_steps = k`` the data loader yields micro-batches
            of ``batch_size / k`` and the optimiser steps after every ``k`` of them (and at the
            end of an epoch), through ``accelerator.accumulate``; ``accelerator.backward``
            divides each micro-batch loss by ``k``. Under ``accelerate launch`` with ``P``
            processes an optimiser step sees ``P × batch_size`` examples.
        optimizer, scheduler: already built on ``model``'s parameters; the scheduler (if any)
            is stepped once per optimiser step (accelerate's ``AcceleratedScheduler``).
        evaluate: ``evaluate(model) -> dev score`` (model is in eval mode during the call).
            The global CPU RNG is saved before and restored after each call, so how often
            (``evals_per_epoch``) and how it evaluates never changes the trained weights.
        seed: shuffling of epoch ``e`` uses ``torch.Generator().manual_seed(seed + e)``.
        ckpt_dir: where the checkpoint (``Accelerator.save_state`` plus ``trainer_state.json``)
            is kept; it is removed once training ends, the curve survives as
            ``<ckpt_dir>.curve.json``.
        grad_clip: max global L2 norm of the gradients (None: no clipping), applied on the
            accumulated gradients of an optimiser step.
        resume_key: identifies the run's parameters; a checkpoint saved under another key
            (the parameters changed since) is discarded instead of resumed.
        lengths: per-example lengths (tokens); if given, batches are length-grouped with
            transformers' ``LengthGroupedSampler`` (random mega-batches of 50 batches, sorted by
            length inside), which cuts padding — most of the compute on short sentences.
        save_steps: also checkpoint every ``save_steps`` optimiser steps (counted from the
            start of training), so a kill loses at most that many steps; None: after every
            epoch only. A mid-epoch checkpoint resumes with ``accelerator.skip_first_batches``
            and restores the RNG states and the running train loss, so the learning curve and
            the weights equal those of an uninterrupted run.
        num_workers: ``DataLoader`` worker processes that collate batches (0: in this process).
        pin_memory: page-locked host batches for faster copies to the GPU (None: on when the
            accelerator's device is CUDA).
        cuda_graphs: on a CUDA device, replay each step as a CUDA graph (:class:`CUDAGraphStep`;
            the optimiser must be ``capturable``, a scheduler needs tensor learning rates
            (:func:`tensor_learning_rates`), no gradient accumulation, bf16 or fp32, one
            process); ignored on a CPU. ``FitResult.cuda_graphs`` reports the captures (or why
            it ran eager).
        select_best: model selection as in Sučík (2020), who keeps each model's checkpoint with
            the best dev score: ``max`` (a score) or ``min`` (a loss or perplexity) keeps a CPU copy of the
            weights at the best evaluation, saves it with every checkpoint (so a resumed run keeps
            the same one) and loads it into ``model`` before returning; ``FitResult.best`` names
            it. ``None``: the last weights are returned.
        patience: with ``select_best``, early stopping: training ends once ``patience``
            evaluations in a row have not beaten the kept one (None: run every epoch). Derived
            from the curve, so a resumed run stops where an uninterrupted one does.

    Returns:
        :class:`FitResult` with the learning curve; ``curve[i]["step"]`` counts optimiser steps.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the gradient accumulation steps, or
            ``save_steps`` / ``num_workers`` / ``select_best`` is out of range, or ``cuda_graphs`` on a CUDA
            device with a scheduler over float learning rates, accumulation, fp16 or several
            processes.
    """
    accum = int(accelerator.gradient_accumulation_steps)
    graphs = cuda_graphs and accelerator.device.type == "cuda"
    float_lrs = scheduler is not None and not all(torch.is_tensor(lr) for lr in _tensor_lrs(optimizer))
    if graphs and (float_lrs or accum != 1 or accelerator.mixed_precision == "fp16"
                   or accelerator.num_processes != 1):
        raise ValueError("cuda_graphs needs a scheduler (if any) over tensor learning rates "
                         "(kdnb.training.fit.tensor_learning_rates), gradient_accumulation_steps 1, bf16 or no mixed "
                         f"precision and one process; got a scheduler over float rates: {float_lrs}, accumulation "
                         f"{accum}, {accelerator.mixed_precision}, {accelerator.num_processes} processes.")
    if batch_size % accum:
        raise ValueError(f"batch_size {batch_size} is not a multiple of gradient_accumulation_steps {accum} "
                         "(each optimiser step must see batch_size examples).")
    if save_steps is not None and save_steps < 1:
        raise ValueError(f"save_steps must be >= 1 or None, got {save_steps!r}.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers!r}.")
    if select_best not in ("max", "min", None):
        raise ValueError(f"select_best must be 'max', 'min' or None, got {select_best!r}.")
    if patience is not None and (select_best is None or patience < 1):
        raise ValueError(f"patience needs select_best and must be >= 1, got {patience!r} with select_best "
                         f"{select_best!r}.")

    def exhausted() -> bool:  # evaluations since the kept one reached the patience
        if patience is None or result.best is None:
            return False
        return sum(1 for c in result.curve if c["step"] > result.best["step"]) >= patience
    micro = batch_size // accum
    ckpt_dir = recover_path(Path(ckpt_dir))  # a kill mid-swap of the checkpoint: the previous one
    state_file = ckpt_dir / "trainer_state.json"
    generator = torch.Generator()
    if lengths is not None:
        sampler = LengthGroupedSampler(micro, lengths=list(lengths), generator=generator)
    else:
        sampler = RandomSampler(train_set, generator=generator)
    if pin_memory is None:
        pin_memory = accelerator.device.type == "cuda"
    # The loader's own generator draws the workers' base seed, so that starting an epoch (or a
    # resumed one) never draws from the global RNG that dropout uses.
    loader_generator = torch.Generator()
    loader = DataLoader(train_set, batch_size=micro, sampler=sampler, collate_fn=collate_fn,
                        num_workers=num_workers, pin_memory=pin_memory, generator=loader_generator)
    prepared = accelerator.prepare(model, optimizer, loader, *([scheduler] if scheduler is not None else []))
    model, optimizer, loader = prepared[:3]
    scheduler = prepared[3] if scheduler is not None else None

    result = FitResult()
    best_state: Optional[dict] = None  # CPU copy of the weights at result.best
    start_epoch, skip_batches, running, n_running = 0, 0, 0.0, 0
    if state_file.exists() and json.loads(state_file.read_text()).get("resume_key") != resume_key:
        accelerator.print(f"{desc}: parameters changed since the checkpoint; starting afresh")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if state_file.exists():
        state = json.loads(state_file.read_text())
        accelerator.load_state(str(ckpt_dir / "state"))
        start_epoch = state["epochs_done"]
        skip_batches = state.get("batches_done", 0)
        running, n_running = state.get("running_loss", 0.0), state.get("running_batches", 0)
        result.curve = state["curve"]
        result.best = state.get("best")
        if result.best is not None and (ckpt_dir / "best_model.pt").exists():
            best_state = torch.load(ckpt_dir / "best_model.pt", map_location="cpu", weights_only=True)
        result.resumed_epochs = start_epoch
        result.resumed_batches = skip_batches
        where = f"epoch {start_epoch}" + (f" and {skip_batches} batches" if skip_batches else "")
        accelerator.print(f"{desc}: resumed from checkpoint after {where}")

    graph_step, graph_lrs = None, []
    if graphs:
        for group in _unwrap(optimizer).param_groups:  # a checkpoint's tensor rates load on the CPU: back to the GPU
            if torch.is_tensor(group["lr"]) and group["lr"].device != accelerator.device:
                group["lr"] = group["lr"].to(accelerator.device)
        graph_lrs = _tensor_lrs(optimizer)
        graph_step = CUDAGraphStep(model, loss_fn, optimizer, grad_clip=grad_clip,
                                   autocast_dtype=torch.bfloat16 if accelerator.mixed_precision == "bf16" else None)
    batches_per_epoch = len(loader)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)  # optimiser steps
    eval_points = {min(batches_per_epoch, math.ceil(batches_per_epoch * (k + 1) / evals_per_epoch))
                   for k in range(evals_per_epoch)}
    with Timer() as timer:
        for epoch in range(start_epoch, epochs):
            if exhausted():
                break
            generator.manual_seed(seed + epoch)
            loader_generator.manual_seed(seed + epoch)
            skip = skip_batches if epoch == start_epoch else 0
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
            model.train()
            # Summed in float64 on the device: no host sync per step, and the same sum as
            # adding loss.item() values in Python.
            run_sum = torch.tensor(running if epoch == start_epoch else 0.0, dtype=torch.float64,
                                   device=accelerator.device)
            n_running = n_running if epoch == start_epoch else 0
            bar = tqdm(epoch_loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False, initial=skip,
                       total=batches_per_epoch, disable=not accelerator.is_local_main_process)
            for batch_no, batch in enumerate(bar, start=skip + 1):
                if graph_step is not None:
                    loss = graph_step(batch)
                    if scheduler is not None:
                        scheduler.step()
                        _restore_tensor_lrs(optimizer, graph_lrs)
                else:
                    with accelerator.accumulate(model):
                        with accelerator.autocast():
                            loss = loss_fn(model, batch)
                        accelerator.backward(loss)
                        if grad_clip is not None and accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
                        optimizer.step()
                        if scheduler is not None:
                            scheduler.step()
                        optimizer.zero_grad()
                run_sum += loss.detach().double()
                n_running += 1
                step = epoch * steps_per_epoch + math.ceil(batch_no / accum)
                if batch_no in eval_points:
                    model.eval()
                    # The CPU RNG (dropout on a CPU, a DataLoader's base seed) is restored after
                    # the evaluation, so evals_per_epoch and what evaluate() draws never change
                    # the training that follows.
                    with torch.no_grad(), torch.random.fork_rng(devices=[]):
                        dev = float(evaluate(model))
                    model.train()
                    mean_loss = run_sum.item() / max(n_running, 1)
                    point = {"step": step, "epoch": round(epoch + batch_no / batches_per_epoch, 4),
                             "train_loss": mean_loss, "dev_score": dev}
                    result.curve.append(point)
                    if select_best and _improves(dev, result.best, select_best):
                        result.best = {k: point[k] for k in ("step", "epoch", "dev_score")}
                        best_state = {k: v.detach().to("cpu", copy=True)
                                      for k, v in accelerator.unwrap_model(model).state_dict().items()}
                    bar.set_postfix(loss=f"{mean_loss:.4f}", dev=f"{dev:.4f}")
                    run_sum.zero_()
                    n_running = 0
                    if exhausted():
                        break
                if (save_steps is not None and accelerator.sync_gradients and step % save_steps == 0
                        and batch_no < batches_per_epoch):
                    _save_checkpoint(accelerator, ckpt_dir, epoch, result.curve, resume_key,
                                     batches_done=batch_no, running=(run_sum.item(), n_running),
                                     best=(result.best, best_state))
            running, n_running = 0.0, 0
            _save_checkpoint(accelerator, ckpt_dir, epoch + 1, result.curve, resume_key,
                             best=(result.best, best_state))
            result.epoch_seconds.append(round(timer.elapsed() - sum(result.epoch_seconds), 3))
    result.seconds = timer.seconds
    if best_state is not None:  # in place: parameters a captured CUDA graph points into stay valid
        accelerator.unwrap_model(model).load_state_dict(best_state)
    if graph_step is not None:
        result.cuda_graphs = {"steps": graph_step.steps, "captures": graph_step.captures,
                              "eager_reason": graph_step.eager_reason}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        curve_file = ckpt_dir.with_name(ckpt_dir.name + ".curve.json")
        curve_file.write_text(json.dumps(result.curve, indent=1))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result


def _save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, epochs_done: int, curve: list,
                     resume_key: Optional[str] = None, batches_done: int = 0,
                     running: tuple[float, int] = (0.0, 0),
                     best: tuple[Optional[dict], Optional[dict]] = (None, None)) -> None:
    """Atomically replace the checkpoint: state, the best weights and trainer_state.json are
    renamed together.

    ``batches_done`` > 0 marks a mid-epoch checkpoint (that many batches of epoch
    ``epochs_done`` are done); ``running`` is the (sum, count) of the train losses since the
    last evaluation, so the resumed curve's ``train_loss`` matches; ``best`` is the kept
    evaluation and its weights (``best_model.pt``) under model selection.
    """
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with atomic_path(ckpt_dir) as tmp:
        tmp.mkdir()
        accelerator.save_state(str(tmp / "state"))
        if best[1] is not None:
            torch.save(best[1], tmp / "best_model.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({
            "epochs_done": epochs_done, "batches_done": batches_done, "running_loss": running[0],
            "running_batches": running[1], "curve": curve, "resume_key": resume_key, "best": best[0]}))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    batch_size: int,
    forward: Callable[[torch.nn.Module, dict], torch.Tensor],
    accelerator: Optional[Accelerator] = None,
    desc: Optional[str] = None,
    num_workers: int = 0,
) -> torch.Tensor:
    """Logits of ``model`` on every row of ``dataset`` in order, as a CPU float32 tensor.

    Batches are moved to ``accelerator.device`` (pinned host memory on a GPU) and run under
    ``accelerator.autocast()`` (bf16/fp16 per the ``mixed_precision`` parameter); every
    process computes all rows (no sharding), so the result is the same under ``accelerate
    launch``. Without an accelerator the model's own device is used, in full precision.

    Args:
        forward: ``forward(model, batch) -> logits (batch, num_labels)``.
        num_workers: ``DataLoader`` worker processes that collate the batches.

    Returns:
        Tensor of shape ``(len(dataset), num_labels)``. The global RNG is not drawn from (the
        loader has its own generator), so predicting between training steps changes nothing.
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    # Its own generator for the workers' base seed: predicting never draws from the global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    for batch in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if accelerator is not None:
            with accelerator.autocast():
                logits = forward(model, batch)
        else:
            logits = forward(model, batch)
        out.append(logits.float())  # kept on the device: no host sync per batch
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0)
