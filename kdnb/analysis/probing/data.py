"""Reading the SentEval probing data (Conneau et al. 2018): the 10 tasks' files
(``split<TAB>label<TAB>sentence``, splits ``tr``/``va``/``te``) from
``<data_dir>/senteval_probing/`` or ``probing.data_dir`` (:func:`read_probing_file`), and the
published majority, human and best-encoder baselines (:data:`CONNEAU_2018`).

``../shared/data`` ships a small sample (≈120 tr / 60 va / 60 te sentences per task); the full
files (100k / 10k / 10k per task, from
https://github.com/facebookresearch/SentEval/tree/main/data/probing) work unchanged when put in
that folder. The package's docstring (:mod:`kdnb.analysis.probing`) describes the whole method.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ...config import PROJECT_ROOT, Config
from ...errors import DataError

# ---------------------------------------------------------------------------------------------
# Tasks and data
# ---------------------------------------------------------------------------------------------

SPLITS = ("tr", "va", "te")
"""SentEval's split tags: training, validation (probe selection / early stopping), test."""

PROBING_FOLDER = "senteval_probing"
"""Folder of the probing files inside ``data_dir`` (used when ``probing.data_dir`` is None)."""

SENTEVAL_URL = "https://github.com/facebookresearch/SentEval/tree/main/data/probing"


@dataclass(frozen=True)
class ProbingTask:
    """One SentEval probing task: its name (as in the thesis), file and kind (Conneau et al. 2018 §3)."""

    name: str
    file: str
    kind: str  # "surface" | "syntactic" | "semantic"


PROBING_TASKS: dict[str, ProbingTask] = {t.name: t for t in (
    ProbingTask("Length", "sentence_length.txt", "surface"),
    ProbingTask("WordContent", "word_content.txt", "surface"),
    ProbingTask("Depth", "tree_depth.txt", "syntactic"),
    ProbingTask("TopConstituents", "top_constituents.txt", "syntactic"),
    ProbingTask("BigramShift", "bigram_shift.txt", "syntactic"),
    ProbingTask("Tense", "past_present.txt", "semantic"),
    ProbingTask("SubjNumber", "subj_number.txt", "semantic"),
    ProbingTask("ObjNumber", "obj_number.txt", "semantic"),
    ProbingTask("OddManOut", "odd_man_out.txt", "semantic"),
    ProbingTask("CoordInversion", "coordination_inversion.txt", "semantic"),
)}
"""The 10 tasks in the order of Conneau et al. (2018, Table 2)."""

# Conneau et al. (2018), Table 2 (test accuracy, %), in the order of PROBING_TASKS.
# "majority" (Majority vote) and "human" (Hum. Eval.) are the paper's baseline rows.
# "best" is, per task, the best score of any encoder in that table; these values were
# transcribed from Sučík's own probing code (github.com/samsucik/knowledge-distil-bert,
# experiments/analysis/Probing.ipynb, `baselines["conneau-best"]`), which agrees with the
# paper's majority and human rows; they were not re-checked against the paper's PDF here.
_CONNEAU_ROWS = {
    "majority": [20.0, 0.5, 17.9, 5.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0],
    "human": [100.0, 100.0, 84.0, 84.0, 98.0, 85.0, 88.0, 86.5, 81.2, 85.0],
    "best": [99.3, 88.8, 63.8, 89.6, 83.6, 91.5, 95.1, 95.1, 73.6, 76.2],
}
CONNEAU_2018: dict[str, dict[str, float]] = {
    row: dict(zip(PROBING_TASKS, values)) for row, values in _CONNEAU_ROWS.items()
}
"""Published reference numbers (test accuracy in %) of Conneau et al. (2018), Table 2:
``CONNEAU_2018[row][task]`` with ``row`` in ``majority`` (Majority vote), ``human``
(Hum. Eval.) and ``best`` (the best encoder per task, as transcribed by Sučík 2020)."""

CONNEAU_2018_LABELS = {
    "majority": "majority (Conneau et al. 2018)",
    "human": "human (Conneau et al. 2018)",
    "best": "best encoder (Conneau et al. 2018)",
}


@dataclass
class ProbingData:
    """One probing task's sentences and labels per split.

    Attributes:
        task: task name (a key of :data:`PROBING_TASKS`).
        path: the file read.
        sentences: ``split -> list of sentences`` for ``tr``, ``va``, ``te``.
        labels: ``split -> (N,)`` int64 class ids into ``classes``.
        classes: label strings, naturally sorted (``5 < 10``).
    """

    task: str
    path: Path
    sentences: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    classes: list[str]

    def sizes(self) -> dict[str, int]:
        """Number of sentences per split."""
        return {s: len(self.sentences[s]) for s in SPLITS}

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the rows in order; cached features are tied to it."""
        h = hashlib.sha256()
        for s in SPLITS:
            for sent, lab in zip(self.sentences[s], self.labels[s]):
                h.update(f"{s}\t{self.classes[lab]}\t{sent}\n".encode())
        return h.hexdigest()[:16]


def _natural_key(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def read_probing_file(path: str | Path, task: Optional[str] = None) -> ProbingData:
    """Parse a SentEval probing file: one ``split<TAB>label<TAB>sentence`` line per example.

    As in SentEval's own reader, a line may have more than 3 tab-separated fields; the first is
    the split, the second the label and the last the sentence. Blank lines are skipped.

    Args:
        path: the ``.txt`` file (e.g. ``.../senteval_probing/sentence_length.txt``).
        task: task name to record (default: derived from the file name).

    Returns:
        :class:`ProbingData` with every split present.

    Raises:
        DataError: missing or non-UTF-8 file; a line with fewer than 3 fields (e.g. a missing
            label), a split tag other than ``tr``/``va``/``te``, an empty label or sentence
            (the message names the file and the 1-based line); a split with no line.
    """
    path = Path(path)
    if task is None:
        task = next((t.name for t in PROBING_TASKS.values() if t.file == path.name), path.stem)
    if not path.is_file():
        raise DataError(
            f"{path}: file not found. The SentEval probing files (split<TAB>label<TAB>sentence) go in "
            f"this folder; get the full ones from {SENTEVAL_URL} (see the README)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}).") from None
    sentences: dict[str, list[str]] = {s: [] for s in SPLITS}
    raw_labels: dict[str, list[str]] = {s: [] for s in SPLITS}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise DataError(
                f"{path}, line {lineno}: expected 'split<TAB>label<TAB>sentence' (3 tab-separated fields), "
                f"found {len(parts)} field(s) — is the label or the sentence missing? Line: {line[:80]!r}."
            )
        split, label, sentence = parts[0].strip(), parts[1].strip(), parts[-1].strip()
        if split not in SPLITS:
            raise DataError(
                f"{path}, line {lineno}: bad split tag {parts[0]!r}; expected one of tr, va, te "
                f"(training, validation, test). Line: {line[:80]!r}."
            )
        if not label:
            raise DataError(f"{path}, line {lineno}: the label (2nd field) is missing. Line: {line[:80]!r}.")
        if not sentence:
            raise DataError(f"{path}, line {lineno}: the sentence (last field) is empty. Line: {line[:80]!r}.")
        sentences[split].append(sentence)
        raw_labels[split].append(label)
    for s in SPLITS:
        if not sentences[s]:
            raise DataError(f"{path}: no '{s}' lines; a probing file needs tr, va and te lines.")
    classes = sorted({lab for s in SPLITS for lab in raw_labels[s]}, key=_natural_key)
    index = {c: i for i, c in enumerate(classes)}
    labels = {s: np.array([index[lab] for lab in raw_labels[s]], dtype=np.int64) for s in SPLITS}
    return ProbingData(task, path, sentences, labels, classes)


def probing_data_dir(cfg: Config) -> Path:
    """Folder of the probing files: ``probing.data_dir`` (relative to the project root) or
    ``<data_dir>/senteval_probing``."""
    if cfg.probing.data_dir:
        p = Path(cfg.probing.data_dir).expanduser()
        return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()
    return cfg.data_path / PROBING_FOLDER


def limit_splits(data: ProbingData, train_limit: Optional[int], eval_limit: Optional[int],
                 seed: int) -> ProbingData:
    """A reproducible random subset: at most ``train_limit`` ``tr`` and ``eval_limit`` ``va`` and
    ``te`` rows each (None: all), kept in file order. Random rather than the first rows, because
    the full ``sentence_length.txt`` is sorted by label within each split."""
    limits = {"tr": train_limit, "va": eval_limit, "te": eval_limit}
    if all(limits[s] is None or limits[s] >= len(data.sentences[s]) for s in SPLITS):
        return data
    rng = np.random.default_rng(seed)
    sentences, labels = {}, {}
    for s in SPLITS:
        n, lim = len(data.sentences[s]), limits[s]
        idx = np.arange(n) if lim is None or lim >= n else np.sort(rng.choice(n, size=lim, replace=False))
        sentences[s] = [data.sentences[s][i] for i in idx]
        labels[s] = data.labels[s][idx]
    return ProbingData(data.task, data.path, sentences, labels, data.classes)


def load_probing_tasks(cfg: Config) -> dict[str, ProbingData]:
    """Read (and limit, per ``probing.train_limit``/``eval_limit``) the tasks in ``probing.tasks``.

    Raises:
        DataError: a file is missing or malformed (see :func:`read_probing_file`).
    """
    folder = probing_data_dir(cfg)
    pc = cfg.probing
    out = {}
    for name in pc.tasks:
        data = read_probing_file(folder / PROBING_TASKS[name].file, task=name)
        out[name] = limit_splits(data, pc.train_limit, pc.eval_limit, cfg.seed)
    return out


def data_sizes(tasks: dict[str, ProbingData]) -> pd.DataFrame:
    """One row per task: kind, ``tr``/``va``/``te`` sizes, number of classes, majority-class
    test accuracy (%) of this data and of Conneau et al. (2018)."""
    rows = []
    for name, d in tasks.items():
        rows.append({"task": name, "kind": PROBING_TASKS[name].kind, **d.sizes(), "classes": len(d.classes),
                     "majority (this data, %)": round(100 * majority_baseline(d), 1),
                     "majority (Conneau, %)": CONNEAU_2018["majority"][name]})
    return pd.DataFrame(rows)


FULL_TRAIN_SIZE = 100_000
"""Training sentences per task in the full SentEval files (10k va, 10k te)."""


def sample_warning(tasks: dict[str, ProbingData]) -> Optional[str]:
    """A warning to print when the probes are trained on fewer sentences than the full
    SentEval files hold (None when every task has ≥ 10,000 ``tr`` sentences): the scores of a
    sample are noisy (the standard error of an accuracy near 50 % on ``n`` test sentences is
    ``50/√n`` points)."""
    sizes = [d.sizes() for d in tasks.values()]
    if not sizes or min(s["tr"] for s in sizes) >= 10_000:
        return None
    n_te = min(s["te"] for s in sizes)

    def span(split: str) -> str:
        lo, hi = min(s[split] for s in sizes), max(s[split] for s in sizes)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    wc = ""
    if "WordContent" in tasks:
        wc = (f" WordContent's {sum(tasks['WordContent'].sizes().values())} sentences cover "
              f"{len(tasks['WordContent'].classes)} of its 1,000 words.")
    return (
        f"WARNING: probing on a sample, not the full SentEval data ({FULL_TRAIN_SIZE:,} tr / 10,000 va / "
        f"10,000 te sentences per task): here {span('tr')} tr, {span('va')} va and {span('te')} te sentences "
        f"per task. Scores on a sample are noisy: with {n_te} test sentences one sentence is "
        f"{100 / n_te:.1f} points and the standard error of a 50 % accuracy is about {50 / math.sqrt(n_te):.0f} "
        f"points.{wc} Put the full files in the probing folder for real numbers ({SENTEVAL_URL})."
    )


def majority_baseline(data: ProbingData) -> float:
    """Test accuracy (fraction) of always predicting the most frequent ``tr`` class
    (ties: the first class in natural order)."""
    counts = np.bincount(data.labels["tr"], minlength=len(data.classes))
    return float(np.mean(data.labels["te"] == int(np.argmax(counts))))
