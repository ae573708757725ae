"""A student's runs over seeds (mean ± std, as the thesis reports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import Config
from ..store import RunResult, finished


def seed_name(name: str, seed: int, cfg: Config) -> str:
    """Where a student's run with ``seed`` is saved: ``name`` for the run's own ``seed`` (what a
    one-seed report trains), ``<name>-seed<seed>`` for the others."""
    return name if seed == cfg.seed else f"{name}-seed{seed}"


@dataclass
class SeedRuns:
    """One student distilled once per seed of :attr:`kdnb.config.Config.student_seeds`
    (:func:`distill_seeds`); the teacher and the transfer set are the same for every seed.

    Attributes:
        name: the student's name (``bilstm``, ``bert_student``).
        runs: ``{seed: result}`` in seed order.
        main: the result of the run's own ``seed`` (else the first seed's): what the report's
            single-seed tables, predictions and figures use.
    """

    name: str
    runs: dict
    main: RunResult

    def summary(self, teacher_dev: Optional[float] = None) -> dict:
        """Per-seed and aggregate scores for ``metrics.json``: ``seeds``, ``dev``, ``dev_last``,
        ``test`` (lists, seed order; fractions), ``dev_mean``/``dev_std``, ``test_mean``/``test_std``
        (None without labelled test), and with ``teacher_dev`` ``retention_mean``/``retention_std``.
        The standard deviation is the sample one (``ddof=1``; 0 for one seed)."""
        res = list(self.runs.values())
        out = {"seeds": list(self.runs), "dev": [r.dev_score for r in res], "dev_last": [r.dev_last for r in res],
               "test": [r.test_score for r in res]}
        out["dev_mean"], out["dev_std"] = mean_std(out["dev"])
        tests = [t for t in out["test"] if t is not None]
        out["test_mean"], out["test_std"] = mean_std(tests) if len(tests) == len(res) else (None, None)
        if teacher_dev:
            out["retention_mean"], out["retention_std"] = mean_std([d / teacher_dev for d in out["dev"]])
        return out


def mean_std(values: list) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of ``values``.

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("mean_std of no values")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def distill_seeds(cfg: Config, distill, *args, name: str, **kwargs) -> SeedRuns:
    """Run ``distill(cfg_s, *args, name=..., **kwargs)`` (e.g. :func:`distill_bilstm`,
    :func:`kdnb.training.bert_student.distill_bert_student`) once per seed ``s`` of
    ``cfg.student_seeds``, with ``cfg_s = cfg.with_seed(s)`` and the run saved under
    :func:`seed_name`; each run is reused or resumed on its own.

    Returns:
        :class:`SeedRuns`.
    """
    runs = {s: distill(cfg.with_seed(s), *args, name=seed_name(name, s, cfg), **kwargs) for s in cfg.student_seeds}
    return SeedRuns(name=name, runs=runs, main=runs.get(cfg.seed, next(iter(runs.values()))))


def saved_seeds(cfg: Config, name: str, kind: str) -> Optional[SeedRuns]:
    """The finished runs of student ``name`` (of ``kind``) over ``cfg.student_seeds`` on disk, as
    :func:`distill_seeds` returned them (seeds not trained yet are left out); None when none is.
    What :func:`kdnb.report.metrics` reads."""
    runs = {s: r for s in cfg.student_seeds if (r := finished(cfg, seed_name(name, s, cfg), kind)) is not None}
    if not runs:
        return None
    return SeedRuns(name=name, runs=runs, main=runs.get(cfg.seed, next(iter(runs.values()))))
