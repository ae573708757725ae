"""Prediction analysis of the teacher and the students (Sučík 2020, ch. "Analysing the models",
section on prediction analysis).

Everything here starts from the ``dev_predictions.csv`` files that notebooks 03/04 save, one
per model: ``<out>/teacher/dev_predictions.csv`` and ``<out>/students/<name>/dev_predictions.csv``,
with columns ``idx, label, prediction, logit_0 .. logit_{C-1}``. From them:

* :func:`confidences` — each model's confidence on each example, the softmax maximum
  ``max_c softmax(z)_c`` of its logits ``z`` (in [1/C, 1]);
* :func:`confidence_correlation` — Pearson's r between the confidences of every pair of models
  (the thesis finds them only weakly correlated on CoLA and SST-2, more on Sara);
* :func:`confidence_by_outcome` — mean ± std of the confidence on correct and on incorrect
  predictions;
* :func:`overlap_matrix` — how much two models' mistakes (or hits) coincide: by default the
  thesis' share of model 1's mistakes that model 2 also makes (asymmetric), or Jaccard;
* :func:`mistake_classes` — the true class of each model's mistakes (the 57 intent names on Sara).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..data import _label_names, task_spec
from ..errors import DataError, StageInputError
from ..store import run_dir

PREDICTION_COLUMNS = ("idx", "label", "prediction")


def prediction_files(cfg: Config, split: str = "dev") -> dict[str, Path]:
    """``{model name: path}`` of the saved ``<split>_predictions.csv`` files: ``teacher`` first,
    then every student under ``<out>/students/<name>/`` in alphabetical order."""
    files = {}
    teacher = run_dir(cfg, "teacher") / f"{split}_predictions.csv"
    if teacher.is_file():
        files["teacher"] = teacher
    for path in sorted((cfg.out / "students").glob(f"*/{split}_predictions.csv")):
        files[path.parent.name] = path
    return files


def read_predictions(path: Path) -> pd.DataFrame:
    """Read one predictions CSV and check it.

    Returns:
        The rows sorted by ``idx``, with ``idx``, ``label``, ``prediction`` (ints) and the
        ``C`` columns ``logit_0 .. logit_{C-1}`` (floats).

    Raises:
        DataError: missing columns, no logit column, non-numeric values, duplicate ``idx``,
            or a ``prediction`` that is not the arg-max of its logits (file and 1-based line named).
    """
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e}).") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    logit_cols = [c for c in df.columns if c.startswith("logit_")]
    if missing or not logit_cols:
        raise DataError(f"{path}: expected columns idx, label, prediction, logit_0.., got {list(df.columns)}.")
    expected = [f"logit_{c}" for c in range(len(logit_cols))]
    if logit_cols != expected:
        raise DataError(f"{path}: logit columns must be {', '.join(expected)}; got {', '.join(logit_cols)}.")
    for col in (*PREDICTION_COLUMNS, *logit_cols):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            raise DataError(f"{path}, line {bad[0] + 2}: column {col!r} is not a number: {df[col].iloc[bad[0]]!r}.")
        df[col] = values
    df[list(PREDICTION_COLUMNS)] = df[list(PREDICTION_COLUMNS)].astype(int)
    dup = np.flatnonzero(df["idx"].duplicated().to_numpy())
    if len(dup):
        raise DataError(f"{path}, line {dup[0] + 2}: duplicate idx {df['idx'].iloc[dup[0]]}.")
    argmax = df[logit_cols].to_numpy().argmax(axis=1)
    wrong = np.flatnonzero(argmax != df["prediction"].to_numpy())
    if len(wrong):
        i = wrong[0]
        raise DataError(f"{path}, line {i + 2}: prediction {df['prediction'].iloc[i]} is not the arg-max "
                        f"({argmax[i]}) of the logits.")
    return df.sort_values("idx").reset_index(drop=True)


def load_predictions(cfg: Config, split: str = "dev",
                     models: Optional[Sequence[str]] = None) -> dict[str, pd.DataFrame]:
    """The saved predictions of every model (see :func:`prediction_files`), checked to cover
    the same examples with the same labels.

    Args:
        models: keep only these names (in this order); default all, teacher first.

    Raises:
        StageInputError: no teacher predictions (run notebook 03 first) or a named model has none.
        DataError: a malformed file, or two files that disagree on the example ids, the labels
            or the number of classes.
    """
    files = prediction_files(cfg, split)
    if "teacher" not in files:
        raise StageInputError(f"{cfg.out / 'teacher' / f'{split}_predictions.csv'}: no teacher predictions; "
                              "run notebooks/03_teacher first.")
    if models is not None:
        absent = [m for m in models if m not in files]
        if absent:
            raise StageInputError(f"no {split} predictions for {', '.join(absent)} under {cfg.out}; "
                                  f"found {', '.join(files)}.")
        files = {m: files[m] for m in models}
    preds = {name: read_predictions(path) for name, path in files.items()}
    ref_name, ref = next(iter(preds.items()))
    for name, df in preds.items():
        if len(df) != len(ref) or not (df["idx"].to_numpy() == ref["idx"].to_numpy()).all():
            raise DataError(f"{files[name]}: its idx values differ from those of {files[ref_name]} "
                            "(the models were evaluated on different examples).")
        if not (df["label"].to_numpy() == ref["label"].to_numpy()).all():
            raise DataError(f"{files[name]}: its labels differ from those of {files[ref_name]}.")
        if n_classes(df) != n_classes(ref):
            raise DataError(f"{files[name]}: {n_classes(df)} logit columns, but {files[ref_name]} "
                            f"has {n_classes(ref)}.")
    return preds


def n_classes(df: pd.DataFrame) -> int:
    return sum(c.startswith("logit_") for c in df.columns)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confidences(preds: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table, one row per model × example: ``model, idx, label, prediction, correct,
    confidence`` where confidence = max softmax probability of the model's logits."""
    rows = []
    for name, df in preds.items():
        probs = softmax(df[[f"logit_{c}" for c in range(n_classes(df))]].to_numpy())
        rows.append(pd.DataFrame({
            "model": name, "idx": df["idx"], "label": df["label"], "prediction": df["prediction"],
            "correct": df["label"].to_numpy() == df["prediction"].to_numpy(), "confidence": probs.max(axis=1),
        }))
    return pd.concat(rows, ignore_index=True)


def confidence_correlation(conf: pd.DataFrame) -> pd.DataFrame:
    """Pearson's r between the confidences of every pair of models: a symmetric
    ``models × models`` frame with 1 on the diagonal (NaN where a model's confidence is constant)."""
    wide = conf.pivot(index="idx", columns="model", values="confidence")
    order = list(dict.fromkeys(conf["model"]))
    return wide[order].corr(method="pearson")


def confidence_by_outcome(conf: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the confidence per model on its correct and its incorrect
    predictions: columns ``model, outcome (correct|incorrect), n, mean, std``."""
    order = list(dict.fromkeys(conf["model"]))
    rows = []
    for name in order:
        sub = conf[conf["model"] == name]
        for outcome, mask in (("correct", sub["correct"]), ("incorrect", ~sub["correct"])):
            c = sub.loc[mask, "confidence"]
            rows.append({"model": name, "outcome": outcome, "n": int(len(c)),
                         "mean": float(c.mean()) if len(c) else np.nan,
                         "std": float(c.std(ddof=0)) if len(c) else np.nan})
    return pd.DataFrame(rows)


def overlap_matrix(preds: dict[str, pd.DataFrame], kind: str = "mistakes", measure: str = "share") -> pd.DataFrame:
    """How much the mistakes (or hits) of two models coincide, for every pair of models.

    With ``M_a`` the set of examples model ``a`` gets wrong (``kind="mistakes"``) or right
    (``kind="hits"``), entry ``(a, b)`` (row ``a``, column ``b``) is

    * ``measure="share"`` (default; the thesis' measure, Sučík 2020, §"Analysing the models",
      overlap of mistakes): ``|M_a ∩ M_b| / |M_a|`` — the share of model ``a``'s mistakes that
      model ``b`` makes too. Not symmetric (row-normalised; 1 on the diagonal; NaN for a model
      without mistakes);
    * ``measure="jaccard"``: ``|M_a ∩ M_b| / |M_a ∪ M_b|`` (symmetric; 1 on the diagonal);
    * ``measure="count"``: ``|M_a ∩ M_b|`` (the diagonal holds ``|M_a|``).

    Args:
        preds: model name → dev predictions (columns ``label``, ``prediction``), all over the
            same examples in the same order.

    Returns:
        float DataFrame ``(n_models, n_models)``, index ``kind`` (row model), columns ``model``.

    Raises:
        ValueError: unknown ``kind`` or ``measure``.
    """
    if kind not in ("mistakes", "hits"):
        raise ValueError(f"kind must be 'mistakes' or 'hits', got {kind!r}")
    if measure not in ("jaccard", "count", "share"):
        raise ValueError(f"measure must be 'jaccard', 'count' or 'share', got {measure!r}")
    sets = {}
    for name, df in preds.items():
        wrong = df["label"].to_numpy() != df["prediction"].to_numpy()
        sets[name] = wrong if kind == "mistakes" else ~wrong
    names = list(sets)
    out = pd.DataFrame(index=pd.Index(names, name=kind), columns=pd.Index(names, name="model"), dtype=float)
    for a, b in product(names, names):
        inter = float(np.sum(sets[a] & sets[b]))
        if measure == "count":
            out.loc[a, b] = inter
        elif measure == "share":
            out.loc[a, b] = inter / sets[a].sum() if sets[a].sum() else np.nan
        else:
            union = float(np.sum(sets[a] | sets[b]))
            out.loc[a, b] = inter / union if union else np.nan
    return out


def label_names(cfg: Config) -> tuple[str, ...]:
    """The task's class names (Sara: the 57 intent names of ``int_to_intent.tsv``).

    Raises:
        DataError: the label-names file is missing or malformed.
    """
    spec = task_spec(cfg.task)
    return _label_names(spec, Path(cfg.data_path) / spec.folder)


def mistake_classes(preds: dict[str, pd.DataFrame], names: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Class distribution of each model's mistakes, by true class.

    Returns:
        One row per model × true class with ``model, label, mistakes, share`` (of the model's
        mistakes that fall in this class), ``support`` (examples of the class) and
        ``error_rate`` (mistakes / support). Classes with no example are left out.
    """
    rows = []
    for name, df in preds.items():
        wrong = df["label"] != df["prediction"]
        total = int(wrong.sum())
        support = df["label"].value_counts()
        mist = df.loc[wrong, "label"].value_counts()
        for lab in sorted(support.index):
            m = int(mist.get(lab, 0))
            rows.append({"model": name, "label": names[lab] if names is not None else str(lab),
                         "mistakes": m, "share": m / total if total else 0.0,
                         "support": int(support[lab]), "error_rate": m / int(support[lab])})
    return pd.DataFrame(rows)


def confusions(preds: dict[str, pd.DataFrame], names: Optional[Sequence[str]] = None, top: int = 10) -> pd.DataFrame:
    """The ``top`` most frequent (true → predicted) confusions of each model:
    ``model, label, predicted, count``."""
    rows = []
    for name, df in preds.items():
        wrong = df[df["label"] != df["prediction"]]
        counts = wrong.groupby(["label", "prediction"]).size().sort_values(ascending=False).head(top)
        for (lab, pred), n in counts.items():
            rows.append({"model": name, "label": names[lab] if names is not None else str(lab),
                         "predicted": names[pred] if names is not None else str(pred), "count": int(n)})
    return pd.DataFrame(rows, columns=["model", "label", "predicted", "count"])

