"""The probe (Conneau et al. 2018: MLP classifiers on frozen features, selected on the
validation split) and the probing run over encoders × tasks × layers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ... import store
from ...config import Config, ProbingConfig
from ...utils import Timer, read_json
from .data import (
    CONNEAU_2018,
    CONNEAU_2018_LABELS,
    PROBING_TASKS,
    data_sizes,
    load_probing_tasks,
    probing_data_dir,
    sample_warning,
)
from .encoders import (
    Encoder,
    _device,
    _one_cpu_thread,
    _slug,
    default_encoders,
    features,
)

# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------


class MLPProbe(nn.Module):
    """The probe of Conneau et al. (2018) and the thesis, as SentEval's ``classifier.MLP`` builds it:
    ``Linear(D, h) → Dropout(p) → Sigmoid → Linear(h, C)``; input ``(B, D)``, logits ``(B, C)``.

    (SentEval trains it with Adam, batch 64, and stops after 5 checks × 4 epochs without a better
    validation accuracy; ``probing.patience: 20`` epochs is the same budget. SentEval also tunes
    an L2 penalty; the thesis' grid, used here, is width × dropout only.)"""

    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Dropout(dropout), nn.Sigmoid(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProbeEnsemble(nn.Module):
    """``G`` independent :class:`MLPProbe` s (one per grid point: width ``widths[g]``, dropout
    ``dropouts[g]``) held as one network, so that one forward/backward pass trains them all.

    The hidden units of all members sit side by side (``U = Σ widths``): the first layers form
    one ``(D, U)`` matrix, the second layers a block-diagonal ``(U, G·C)`` matrix (entries
    outside a member's block are held at 0 by a mask). So member ``g`` computes exactly the
    function of an ``MLPProbe(D, widths[g], C, dropouts[g])`` (:meth:`member` extracts it), the
    loss — the sum of the members' losses — gives each member its own gradient, and Adam is
    element-wise: training the ensemble equals training the members one by one. Weights are
    initialised as ``nn.Linear`` does (uniform in ±1/√fan_in).

    Input ``(B, D)``; output logits ``(G, B, C)``.
    """

    def __init__(self, in_dim: int, widths: Sequence[int], dropouts: Sequence[float], n_classes: int):
        super().__init__()
        self.widths = [int(w) for w in widths]
        self.dropouts = [float(p) for p in dropouts]
        self.g, self.c = len(self.widths), int(n_classes)
        self.offsets = [0, *np.cumsum(self.widths).tolist()]
        unit_member = torch.repeat_interleave(torch.arange(self.g), torch.tensor(self.widths))  # (U,)
        self.register_buffer("unit_member", unit_member)
        self.register_buffer("unit_p", torch.tensor(self.dropouts)[unit_member])  # (U,)
        block = (unit_member[:, None] == torch.arange(self.g).repeat_interleave(self.c)[None, :]).float()
        self.register_buffer("block", block)  # (U, G·C)
        bound1 = 1 / math.sqrt(in_dim)
        self.w1 = nn.Parameter(torch.empty(in_dim, len(unit_member)).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(len(unit_member)).uniform_(-bound1, bound1))
        bound2 = torch.tensor([1 / math.sqrt(w) for w in self.widths])
        self.w2 = nn.Parameter(torch.empty(len(unit_member), self.g * self.c).uniform_(-1, 1)
                               * bound2[unit_member][:, None] * block)
        self.b2 = nn.Parameter(torch.empty(self.g * self.c).uniform_(-1, 1)
                               * bound2.repeat_interleave(self.c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(self.b1, x, self.w1)  # (B, U)
        if self.training and max(self.dropouts) > 0:
            keep = (torch.rand_like(h) >= self.unit_p).to(h.dtype)
            h = h * keep / (1 - self.unit_p)
        logits = torch.addmm(self.b2, torch.sigmoid(h), self.w2 * self.block)  # (B, G·C)
        return logits.view(-1, self.g, self.c).transpose(0, 1)

    @torch.no_grad()
    def copy_members_(self, other: "ProbeEnsemble", which: torch.Tensor) -> None:
        """Copy the weights of the members where ``which`` (``(G,)`` bool) is True from ``other``."""
        units = which[self.unit_member]
        cols = which.repeat_interleave(self.c)
        self.w1[:, units] = other.w1[:, units]
        self.b1[units] = other.b1[units]
        self.w2[units] = other.w2[units]
        self.b2[cols] = other.b2[cols]

    def member(self, g: int) -> MLPProbe:
        """Member ``g`` as a stand-alone :class:`MLPProbe` (a copy, in eval mode)."""
        u0, u1 = self.offsets[g], self.offsets[g + 1]
        c0, c1 = g * self.c, (g + 1) * self.c
        m = MLPProbe(self.w1.shape[0], self.widths[g], self.c, self.dropouts[g]).to(self.w1.device)
        with torch.no_grad():
            m.net[0].weight.copy_(self.w1[:, u0:u1].T)
            m.net[0].bias.copy_(self.b1[u0:u1])
            m.net[3].weight.copy_(self.w2[u0:u1, c0:c1].T)
            m.net[3].bias.copy_(self.b2[c0:c1])
        return m.eval()


@dataclass
class TrainedProbe:
    """A probe trained with early stopping: ``predict(X (N, D)) -> (N,)`` class ids, its best
    ``va`` accuracy (fraction) and the epoch it was reached at."""

    predict: Callable[[np.ndarray], np.ndarray]
    val_acc: float
    epoch: int


def _predictor(model: nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(x, dtype=torch.float32, device=device)).argmax(-1).cpu().numpy()

    return predict


def train_probes(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, n_classes: int,
                 configs: Sequence[tuple[int, float]], *, learning_rate: float = 1e-3, batch_size: int = 64,
                 max_epochs: int = 200, patience: int = 20, seed: int = 0) -> list[TrainedProbe]:
    """Train one :class:`MLPProbe` per ``(width, dropout)`` in ``configs`` with Adam
    (cross-entropy, mini-batches of ``batch_size``) and early stopping on ``va``.

    After every epoch each probe's ``va`` accuracy is measured; a probe's best epoch is kept,
    and training ends when every probe has gone ``patience`` epochs without a better ``va``
    accuracy (or after ``max_epochs``). All probes are trained at once as a
    :class:`ProbeEnsemble` (same batches; equivalent to training them one by one). Seeded
    locally with ``seed``; the global RNG is left as it was.

    Args:
        x_tr, x_va: float features ``(N, D)``; y_tr, y_va: int class ids ``(N,)``.

    Returns:
        one :class:`TrainedProbe` per config, in order.
    """
    device = _device()
    xt = torch.as_tensor(x_tr, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_tr, dtype=torch.long, device=device)
    xv = torch.as_tensor(x_va, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_va, dtype=torch.long, device=device)
    widths = [int(w) for w, _ in configs]
    drops = [float(p) for _, p in configs]
    g = len(configs)
    with _one_cpu_thread(device), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = ProbeEnsemble(xt.shape[1], widths, drops, n_classes).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)  # fused: same maths, fewer ops
        gen = torch.Generator().manual_seed(seed)
        best = torch.full((g,), -1.0, device=device)
        best_epoch = torch.zeros(g, dtype=torch.long)
        bad = torch.zeros(g, dtype=torch.long)
        snapshot = copy.deepcopy(model)  # the best weights of each member so far
        for epoch in range(1, max_epochs + 1):
            model.train()
            perm = torch.randperm(len(xt), generator=gen).to(device)
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                logits = model(xt[idx])  # (G, B, C)
                loss = F.cross_entropy(logits.reshape(-1, n_classes), yt[idx].repeat(g), reduction="none")
                loss = loss.view(g, -1).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(xv).argmax(-1) == yv[None, :]).float().mean(1)  # (G,)
                better = acc > best
                if bool(better.any()):
                    snapshot.copy_members_(model, better)
                best = torch.where(better, acc, best)
            better_cpu = better.cpu()
            best_epoch[better_cpu] = epoch
            bad = torch.where(better_cpu, torch.zeros_like(bad), bad + 1)
            if bool((bad >= patience).all()):
                break
        members = [snapshot.member(i) for i in range(g)]  # nn.Linear draws from the RNG: inside fork_rng
    return [TrainedProbe(_predictor(m, device), float(best[i]), int(best_epoch[i])) for i, m in enumerate(members)]


@dataclass
class Selection:
    """The outcome of :func:`select_probe`: the chosen probe, its hyperparameters and the
    ``va`` accuracy of every grid point (``grid``: dicts ``hidden, dropout, val_acc, epoch``)."""

    probe: TrainedProbe
    hidden: int
    dropout: float
    grid: list[dict] = field(default_factory=list)


def select_probe(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, n_classes: int,
                 hidden_sizes: Sequence[int], dropouts: Sequence[float],
                 train_fn: Callable[..., list[TrainedProbe]] = train_probes, **train_kwargs) -> Selection:
    """Grid search of the thesis (Conneau et al. 2018): one probe per width × dropout, trained
    on ``tr`` with early stopping on ``va``; the one with the best ``va`` accuracy is kept (ties:
    the first in grid order, widths outer, dropouts inner). It takes no test data, so ``te``
    cannot influence the choice.

    Args:
        train_fn: trains the probes (default :func:`train_probes`); called once as
            ``train_fn(x_tr, y_tr, x_va, y_va, n_classes, configs, **train_kwargs)`` with
            ``configs`` the list of ``(width, dropout)``.
    """
    configs = [(int(h), float(p)) for h in hidden_sizes for p in dropouts]
    if not configs:
        raise ValueError("empty probe grid: probing.hidden_sizes and probing.dropouts must not be empty")
    probes = train_fn(x_tr, y_tr, x_va, y_va, n_classes, configs, **train_kwargs)
    grid = [{"hidden": h, "dropout": p, "val_acc": pr.val_acc, "epoch": pr.epoch}
            for (h, p), pr in zip(configs, probes)]
    i = max(range(len(configs)), key=lambda k: (probes[k].val_acc, -k))
    return Selection(probes[i], configs[i][0], configs[i][1], grid)


@dataclass
class LayerScore:
    """Probe result of one (model, layer, task): accuracies are fractions."""

    val_acc: float
    test_acc: float
    hidden: int
    dropout: float
    epoch: int
    grid: list[dict]


def probe_layer(x: dict[str, np.ndarray], y: dict[str, np.ndarray], n_classes: int, pc: ProbingConfig,
                seed: int, train_fn: Callable[..., list[TrainedProbe]] = train_probes) -> LayerScore:
    """Probe one representation: standardise (mean/std of ``tr`` only, ``probing.standardize``),
    select the probe on ``tr``/``va`` (:func:`select_probe`), then — once — score it on ``te``.

    Args:
        x: ``split -> (N, D)`` features; y: ``split -> (N,)`` class ids.
    """
    x_tr, x_va, x_te = x["tr"], x["va"], x["te"]
    if pc.standardize:
        mu = x_tr.mean(0, keepdims=True)
        sd = x_tr.std(0, keepdims=True) + 1e-6
        x_tr, x_va, x_te = (x_tr - mu) / sd, (x_va - mu) / sd, (x_te - mu) / sd
    sel = select_probe(x_tr, y["tr"], x_va, y["va"], n_classes, pc.hidden_sizes, pc.dropouts, train_fn=train_fn,
                       learning_rate=pc.learning_rate, batch_size=pc.probe_batch_size, max_epochs=pc.max_epochs,
                       patience=pc.patience, seed=seed)
    test_acc = float(np.mean(sel.probe.predict(x_te) == y["te"]))
    return LayerScore(sel.probe.val_acc, test_acc, sel.hidden, sel.dropout, sel.probe.epoch, sel.grid)


# ---------------------------------------------------------------------------------------------
# The whole stage
# ---------------------------------------------------------------------------------------------


@dataclass
class ProbingRun:
    """What :func:`run_probing` returns.

    Attributes:
        scores: one row per (model, layer, task): ``model, family, state, layer, depth``
            (position of the layer within the model, 0 = first probed), ``rel_depth`` (layer /
            the model's depth: 0 = E, 1 = the last layer or the BiLSTM's final states), ``task, kind``,
            ``val_acc, test_acc`` (in %), ``hidden, dropout, epoch`` (the chosen probe), ``tr, va, te``.
        sizes: :func:`data_sizes` of the data used.
        warning: :func:`sample_warning` (None on the full data).
        data_dir: folder the probing files were read from.
        seconds: wall time of this call (features + probes).
        artefacts: the probe results in the run store, one :class:`kdnb.store.Artefact` (kind
            ``probes``) per (model, task), listed in ``<out>/manifest.json`` with the features
            they were trained on.
    """

    scores: pd.DataFrame
    sizes: pd.DataFrame
    warning: Optional[str]
    data_dir: Path
    seconds: float
    artefacts: list[store.Artefact]


def _probe_key(cfg: Config, feat_meta: dict) -> str:
    pc = cfg.probing
    blob = json.dumps({"features": feat_meta, "seed": cfg.seed, "hidden_sizes": pc.hidden_sizes,
                       "dropouts": pc.dropouts, "lr": pc.learning_rate, "batch": pc.probe_batch_size,
                       "max_epochs": pc.max_epochs, "patience": pc.patience, "standardize": pc.standardize},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_probing(cfg: Config, encoders: Optional[dict[str, Encoder]] = None, force: bool = False,
                progress: bool = True) -> ProbingRun:
    """Probe every layer of every model on every task in ``probing.tasks``.

    Features are cached per (model, layer, task) (:func:`features`); probe results per
    (model, task) in ``<out>/probing/probes/<model>/<task>.json``, written after each layer
    and reused while the features and probe parameters are unchanged (``force`` redoes all),
    so a killed run resumes. The wall time is logged as the stage ``probing``
    (:func:`kdnb.store.record_time`).

    Args:
        encoders: models to probe, by name (default :func:`default_encoders`).

    Raises:
        DataError: a probing file is missing or malformed.
        StageInputError: the teacher or an enabled student has not been trained.
    """
    from ...utils import tqdm

    with Timer() as timer:
        tasks = load_probing_tasks(cfg)
        encoders = default_encoders(cfg) if encoders is None else encoders
        rows, arts = [], []
        jobs = [(e, t) for e in encoders.values() for t in tasks]
        for enc, tname in tqdm(jobs, desc="probing", disable=not progress, leave=False):
            data = tasks[tname]
            feats = features(cfg, enc, data, force=force)
            pdir = cfg.out / "probing" / "probes" / _slug(enc.name)
            key = _probe_key(cfg, read_json(cfg.out / "probing" / "features" / _slug(enc.name) / tname / "meta.json"))
            art = store.Artefact("probes", pdir / f"{tname}.json", key, cfg.out, record=pdir / f"{tname}.json",
                                 field="key")
            arts.append(art)
            saved = art.saved(force)
            done = saved["layers"] if saved else {}
            for depth, layer in enumerate(enc.layers):
                if layer not in done:
                    res = probe_layer(feats[layer], data.labels, len(data.classes), cfg.probing, cfg.seed)
                    done[layer] = res.__dict__
                    art.finish({"layers": done})
                r = done[layer]
                rows.append({"model": enc.name, "family": enc.family, "state": enc.state, "layer": layer,
                             "depth": depth, "rel_depth": round(enc.relative_depth(layer), 4), "task": tname, "kind": PROBING_TASKS[tname].kind,
                             "val_acc": round(100 * r["val_acc"], 2), "test_acc": round(100 * r["test_acc"], 2),
                             "hidden": r["hidden"], "dropout": r["dropout"], "epoch": r["epoch"],
                             **data.sizes()})
    store.record_time(cfg, "probing", timer.seconds)
    return ProbingRun(pd.DataFrame(rows), data_sizes(tasks), sample_warning(tasks), probing_data_dir(cfg),
                      timer.seconds, arts)


def scores_table(run: ProbingRun) -> pd.DataFrame:
    """All scores in one table (test and validation accuracy in %): every (model, layer, task)
    of ``run`` plus the baselines — the majority class of this data, and Conneau et al.'s (2018,
    Table 2) published majority, human and best-encoder numbers (``source`` says which)."""
    df = run.scores.assign(source="this run")
    base = []
    for _, s in run.sizes.iterrows():
        base.append({"model": "majority (this data)", "family": "baseline", "state": "", "layer": "",
                     "task": s["task"], "kind": s["kind"], "test_acc": s["majority (this data, %)"],
                     "tr": s["tr"], "va": s["va"], "te": s["te"], "source": "this run"})
        for row, label in CONNEAU_2018_LABELS.items():
            base.append({"model": label, "family": "baseline", "state": "", "layer": "", "task": s["task"],
                         "kind": s["kind"], "test_acc": CONNEAU_2018[row][s["task"]],
                         "source": "Conneau et al. (2018), Table 2" + (" via Sučík (2020)" if row == "best" else "")})
    out = pd.concat([df, pd.DataFrame(base)], ignore_index=True)
    ints = ["depth", "hidden", "epoch", "tr", "va", "te"]
    out[ints] = out[ints].astype("Int64")
    return out


def pivot_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) as a ``(model, layer) × task`` table, in probing and depth order."""
    order = [t for t in PROBING_TASKS if t in set(scores["task"])]
    p = scores.pivot_table(index=["model", "depth", "layer"], columns="task", values="test_acc", sort=False)
    return p[order].droplevel("depth")


def best_layers(scores: pd.DataFrame, model: str = "teacher") -> pd.DataFrame:
    """Per task, the layer of ``model`` whose probe has the best ``va`` accuracy (ties: the
    shallower layer), with its ``va`` and ``te`` accuracy in % — chosen on ``va``, like the
    probes, so that the reported ``te`` score is not a maximum over test scores."""
    sub = scores[scores["model"] == model].sort_values(["task", "depth"], kind="stable")
    idx = sub.groupby("task", sort=False)["val_acc"].idxmax()
    order = {t: i for i, t in enumerate(PROBING_TASKS)}
    best = sub.loc[idx, ["task", "layer", "val_acc", "test_acc"]]
    return best.sort_values("task", key=lambda c: c.map(order)).reset_index(drop=True)
