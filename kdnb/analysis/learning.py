"""Did the models learn? Each model's dev score beside the majority-class baseline, and its
agreement with the teacher beside that of a student that learned nothing (the majority class).

The smoke notebooks print this table in a checked cell (``# NBVAL_CHECK_OUTPUT``), so a change
that makes a model predict one class, or stops distillation from following the teacher, changes
what nbval compares and fails ``make test``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Config
from ..data import score, task_spec

MARGIN = 5.0  # percentage points above the majority baseline that count as "learned"


def learning_table(cfg: Config, split: str = "dev", models=None) -> pd.DataFrame:
    """One row per model with saved ``<split>_predictions.csv`` (teacher first; ``models``: only
    the teacher and these).

    Columns: ``model``; ``<metric> (%)``; ``majority (%)``, the metric of always predicting the
    split's most frequent label; ``learned``, the score beats the baseline by :data:`MARGIN`
    points; ``agreement (%)``, dev rows where the model predicts the teacher's class;
    ``majority agreement (%)``, the same for the majority-class predictor (what a student that
    learned nothing from the teacher agrees); ``follows teacher``, agreement above it by
    :data:`MARGIN` points. Scores are rounded to 1 decimal.

    Raises:
        StageInputError: no teacher predictions yet.
    """
    from .predictions import load_predictions

    preds = load_predictions(cfg, split, models=None if models is None else ["teacher", *models])
    label = task_spec(cfg.task).metric_label
    y = next(iter(preds.values()))["label"].to_numpy()
    values, counts = np.unique(y, return_counts=True)
    majority = values[counts.argmax()]
    base = 100 * score(cfg.task, y, np.full_like(y, majority))
    teacher = preds["teacher"]["prediction"].to_numpy()
    base_agree = 100 * float((teacher == majority).mean())
    rows = []
    for name, df in preds.items():
        if models is not None and name not in models and name != "teacher":
            continue
        p = df["prediction"].to_numpy()
        s = 100 * score(cfg.task, y, p)
        agree = 100 * float((p == teacher).mean())
        rows.append({"model": name, f"{label} (%)": round(s, 1), "majority (%)": round(base, 1),
                     "learned": bool(s >= base + MARGIN), "agreement (%)": round(agree, 1),
                     "majority agreement (%)": round(base_agree, 1),
                     "follows teacher": bool(agree >= base_agree + MARGIN)})
    return pd.DataFrame(rows)
