"""The run's record (``<out>/metrics.json``), the thesis reference numbers, tables and figures.

``metrics.json`` holds, per model, its parameter count, dev score, test score (where the test
set is labelled) and retention (student dev score / teacher dev score), plus the wall time of
each stage in seconds. Notebooks update it through :func:`record_model` and
:func:`record_stage`; every update is an atomic rewrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from .config import Config
from .data import task_spec
from .utils import atomic_path, read_json, write_json

# Sučík (2020), "Compressing BERT by knowledge distillation", final results (dev / test, in %),
# as also listed in ../shared/data/README.md. Teacher: fine-tuned BERT-large (340M params).
THESIS_REFERENCE: dict[str, dict[str, dict[str, Optional[float]]]] = {
    "cola": {"teacher": {"dev": 59.9, "test": 54.6}},
    "sst2": {"teacher": {"dev": 91.5, "test": 93.1}},
    "sara": {"teacher": {"dev": 87.5, "test": 88.3}},
}


def metrics_path(cfg: Config) -> Path:
    return cfg.out / "metrics.json"


def load_metrics(cfg: Config) -> dict[str, Any]:
    """The current ``metrics.json`` (a fresh skeleton if none exists yet)."""
    spec = task_spec(cfg.task)
    m = read_json(metrics_path(cfg)) or {}
    m.setdefault("task", cfg.task)
    m.setdefault("profile", cfg.profile)
    m["metric"] = spec.metric
    m.setdefault("models", {})
    m.setdefault("stages_seconds", {})
    return m


def record_model(cfg: Config, name: str, *, n_params: int, dev: float, test: Optional[float] = None,
                 **extra: Any) -> dict:
    """Add or replace model ``name`` in ``metrics.json``; recompute every retention.

    Scores are fractions as returned by :func:`kdnb.data.score`; retention is
    ``dev / teacher dev`` (None until the teacher is recorded).
    """
    m = load_metrics(cfg)
    m["models"][name] = {"n_params": int(n_params), "dev": dev, "test": test, **extra}
    teacher = m["models"].get("teacher")
    for entry in m["models"].values():
        entry["retention"] = (entry["dev"] / teacher["dev"]) if teacher and teacher["dev"] else None
    write_json(metrics_path(cfg), m)
    return m


def record_stage(cfg: Config, stage: str, seconds: float) -> None:
    """Store the wall time (seconds) of ``stage`` in ``metrics.json``."""
    m = load_metrics(cfg)
    m["stages_seconds"][stage] = round(float(seconds), 2)
    write_json(metrics_path(cfg), m)


def results_table(cfg: Config) -> pd.DataFrame:
    """One row per model: parameters, dev and test score (in %), retention (in %), and the
    thesis' reference numbers where it reports that model."""
    m = load_metrics(cfg)
    ref = THESIS_REFERENCE.get(cfg.task, {})
    rows = []
    for name, e in m["models"].items():
        r = ref.get(name, {})
        rows.append({
            "model": name,
            "parameters (M)": round(e["n_params"] / 1e6, 2),
            f"dev {task_spec(cfg.task).metric_label} (%)": _pct(e["dev"]),
            f"test {task_spec(cfg.task).metric_label} (%)": _pct(e.get("test")),
            "retention (%)": _pct(e.get("retention")),
            "thesis dev (%)": r.get("dev"),
            "thesis test (%)": r.get("test"),
        })
    return pd.DataFrame(rows)


def _pct(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(100 * x, 1)


def save_table(cfg: Config, df: pd.DataFrame, name: str) -> Path:
    """Write ``df`` to ``<out>/<name>.csv`` atomically and return the path."""
    path = cfg.out / f"{name}.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def save_figure(cfg: Config, fig, name: str) -> Path:
    """Save a matplotlib figure as ``<figures>/<task>_<name>.png`` (and ``.pdf``), atomically."""
    png = cfg.figure_path(name, "png")
    for path in (png, cfg.figure_path(name, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    return png
