"""Load and validate the task data sets into ``datasets.DatasetDict`` objects.

Formats are those of ``../shared/data/README.md``:

* CoLA (Warstadt et al. 2019): ``source<TAB>label<TAB>star<TAB>sentence``, no header; the test
  file has a header ``index<TAB>sentence`` and no labels.
* SST-2 (Socher et al. 2013): header ``sentence<TAB>label``; dev and test labelled.
* Sara (Rasa demo, split by Sučík 2020): ``label_id<TAB>text``, no header, 57 intents named in
  ``int_to_intent.tsv``.
* RTE (GLUE): header ``index<TAB>sentence1<TAB>sentence2<TAB>label`` with string labels.

Every split becomes a ``datasets.Dataset`` with columns ``idx`` (int), ``sentence`` (str),
``sentence2`` (str, pair tasks only) and ``label`` (``ClassLabel``; -1 where unlabelled).
Bad input raises :class:`~kdnb.errors.DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import datasets
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .config import Config
from .errors import DataError
from .store import timed


@dataclass(frozen=True)
class FileSpec:
    """How one TSV file of a task is laid out."""

    name: str
    header: Optional[tuple[str, ...]]
    n_cols: int
    sentence_cols: tuple[int, ...]
    label_col: Optional[int]


@dataclass(frozen=True)
class TaskSpec:
    """A task: its folder, files per split, label names and evaluation metric."""

    name: str
    folder: str
    metric: str  # "mcc" | "accuracy" | "micro_f1"
    files: dict[str, FileSpec]
    label_names: tuple[str, ...] = ()
    label_names_file: Optional[str] = None
    string_labels: bool = False
    pair: bool = False
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def metric_label(self) -> str:
        return {"mcc": "MCC", "accuracy": "accuracy", "micro_f1": "micro-F1"}[self.metric]


_COLA = FileSpec("train.tsv", None, 4, (3,), 1)
TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "cola", "cola", "mcc",
        {"train": _COLA, "dev": FileSpec("dev.tsv", None, 4, (3,), 1),
         "test": FileSpec("test.tsv", ("index", "sentence"), 2, (1,), None)},
        label_names=("unacceptable", "acceptable"),
    ),
    "sst2": TaskSpec(
        "sst2", "sst2", "accuracy",
        {s: FileSpec(f"{s}.tsv", ("sentence", "label"), 2, (0,), 1) for s in ("train", "dev", "test")},
        label_names=("negative", "positive"),
    ),
    "sara": TaskSpec(
        "sara", "sara", "micro_f1",
        {s: FileSpec(f"{s}.tsv", None, 2, (1,), 0) for s in ("train", "dev", "test")},
        label_names_file="int_to_intent.tsv",
    ),
    "rte": TaskSpec(
        "rte", "rte", "accuracy",
        {s: FileSpec(f"{s}.tsv", ("index", "sentence1", "sentence2", "label"), 4, (1, 2), 3)
         for s in ("train", "dev")},
        label_names=("entailment", "not_entailment"),
        string_labels=True,
        pair=True,
    ),
}


def task_spec(task: str) -> TaskSpec:
    """Return the :class:`TaskSpec` of ``task``; raise ``DataError`` for an unknown name."""
    try:
        return TASKS[task]
    except KeyError:
        raise DataError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}.") from None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the task's TSV file here; see ../shared/data/README.md).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")  # no newline translation (see below)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at offset "
                        f"{e.start}).") from None
    # split on "\n" only: some GLUE files carry a stray "\r" inside a line (SST-2 train), which
    # str.splitlines() would treat as a line break
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _is_int(s: str, signed: bool = True) -> bool:
    """True for ASCII decimal integers only (``str.isdigit`` also accepts "²" and "٣", which
    ``int`` rejects or reads as another number)."""
    digits = s[1:] if signed and s.startswith("-") else s
    return digits.isascii() and digits.isdigit()


def _label_names(spec: TaskSpec, folder: Path) -> tuple[str, ...]:
    if not spec.label_names_file:
        return spec.label_names
    path = folder / spec.label_names_file
    names: dict[int, str] = {}
    for i, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not _is_int(parts[0].strip(), signed=False) or not parts[1].strip():
            raise DataError(f"{path}, line {i}: expected 'label_id<TAB>intent_name', got {line!r}.")
        if int(parts[0]) in names:
            raise DataError(f"{path}, line {i}: label id {int(parts[0])} is named twice.")
        names[int(parts[0])] = parts[1].strip()
    if not names:
        raise DataError(f"{path}: no label names (expected lines 'label_id<TAB>intent_name').")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: label ids must be 0..{len(names) - 1} without gaps, got {sorted(names)}.")
    return tuple(names[i] for i in range(len(names)))


def read_split(path: Path, fs: FileSpec, spec: TaskSpec, label_names: tuple[str, ...]) -> dict[str, list]:
    """Parse one TSV file into columns; raise ``DataError`` naming file and line on bad rows."""
    lines = _read_lines(path)
    start = 0
    if fs.header is not None:
        got = tuple(lines[0].split("\t")) if lines else ()
        if got != fs.header:
            raise DataError(
                f"{path}, line 1: expected header {'<TAB>'.join(fs.header)!r}, got {lines[0] if lines else ''!r}."
            )
        start = 1
    cols: dict[str, list] = {"idx": [], "sentence": [], "label": []}
    if spec.pair:
        cols["sentence2"] = []
    name_to_id = {n: i for i, n in enumerate(label_names)}
    for i in range(start, len(lines)):
        line = lines[i]
        lineno = i + 1
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != fs.n_cols:
            raise DataError(
                f"{path}, line {lineno}: expected {fs.n_cols} tab-separated columns, found {len(parts)}: {line[:80]!r}."
            )
        sents = [parts[c].strip() for c in fs.sentence_cols]
        if any(not s for s in sents):
            raise DataError(f"{path}, line {lineno}: empty sentence.")
        if fs.label_col is None:
            label = -1
        else:
            raw = parts[fs.label_col].strip()
            if spec.string_labels:
                if raw not in name_to_id:
                    raise DataError(
                        f"{path}, line {lineno}: unknown label {raw!r}; expected one of {', '.join(label_names)}."
                    )
                label = name_to_id[raw]
            else:
                if not _is_int(raw) or not 0 <= int(raw) < len(label_names):
                    raise DataError(
                        f"{path}, line {lineno}: unknown label {raw!r}; expected an integer in 0..{len(label_names) - 1}."
                    )
                label = int(raw)
        cols["idx"].append(len(cols["idx"]))
        cols["sentence"].append(sents[0])
        if spec.pair:
            cols["sentence2"].append(sents[1])
        cols["label"].append(label)
    if not cols["idx"]:
        raise DataError(f"{path}: no data rows.")
    return cols


def load_task(task: str, data_dir: str | Path) -> datasets.DatasetDict:
    """Load a task's splits from ``data_dir/<folder>/`` into a ``DatasetDict``.

    Returns:
        ``DatasetDict`` with splits ``train``, ``dev`` and (where shipped) ``test``; columns
        ``idx``, ``sentence`` (and ``sentence2`` for pair tasks), ``label`` (``ClassLabel``
        with the task's label names; -1 on unlabelled test sets).

    Raises:
        DataError: unknown task, missing data directory or file, wrong header, wrong column
            count, empty sentence or unknown label (file and 1-based line are named).
    """
    spec = task_spec(task)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data directory {data_dir} not found: expected the shared data sets there "
            "(set the 'data_dir' parameter, or DATA_DIR=... for make)."
        )
    folder = data_dir / spec.folder
    if not folder.is_dir():
        raise DataError(f"{folder}: task folder not found in data directory {data_dir}.")
    names = _label_names(spec, folder)
    features = {"idx": datasets.Value("int32"), "sentence": datasets.Value("string")}
    if spec.pair:
        features["sentence2"] = datasets.Value("string")
    features["label"] = datasets.ClassLabel(names=list(names))
    feats = datasets.Features(features)
    out = {}
    for split, fs in spec.files.items():
        cols = read_split(folder / fs.name, fs, spec, names)
        out[split] = datasets.Dataset.from_dict({k: cols[k] for k in feats}, features=feats)
    return datasets.DatasetDict(out)


@timed("data_prep")
def prepare(cfg: Config) -> datasets.DatasetDict:
    """Notebook 01's stage: :func:`load_task` on the run's task and ``data_dir``, its wall time
    logged as ``data_prep`` (:func:`kdnb.store.timed`).

    Raises:
        DataError: as :func:`load_task`.
    """
    return load_task(cfg.task, cfg.data_path)


def is_labelled(ds: datasets.Dataset) -> bool:
    """True if every row of ``ds`` has a label (no -1)."""
    return bool(len(ds)) and min(ds["label"]) >= 0


def content_hash(ds: datasets.Dataset) -> str:
    """SHA-256 (16 hex digits) of the sentence columns of ``ds``, in order; stages use it to
    tell whether saved outputs were computed from the same rows."""
    import hashlib

    h = hashlib.sha256()
    for col in ("sentence", "sentence2"):
        if col in ds.column_names:
            for batch in ds.select_columns([col]).iter(batch_size=10_000):
                h.update("\n".join(batch[col]).encode())
    return h.hexdigest()[:16]


def data_fingerprint(task: str, data_dir: str | Path) -> str:
    """SHA-256 (16 hex digits) of the task's data files (names and bytes) and of the resolved
    ``data_dir``: the teacher's reuse key contains it, so a changed data file, or another data
    folder, retrains the teacher and, through the teacher's key, everything downstream.

    Raises:
        DataError: a file of the task is missing.
    """
    import hashlib

    spec = task_spec(task)
    folder = Path(data_dir).resolve() / spec.folder
    h = hashlib.sha256(str(folder).encode())
    names = [fs.name for fs in spec.files.values()] + ([spec.label_names_file] if spec.label_names_file else [])
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: file not found (expected the task's TSV file here; see ../shared/data/README.md).")
        h.update(f"\0{name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def subsample(ds: datasets.Dataset, n: Optional[int], seed: int) -> datasets.Dataset:
    """A reproducible random subset of ``n`` rows (all rows if ``n`` is None or ≥ len)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n)).sort("idx")


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mcc": lambda y, p: float(matthews_corrcoef(y, p)),
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "micro_f1": lambda y, p: float(f1_score(y, p, average="micro")),
}


def score(task: str, y_true, y_pred) -> float:
    """The task's metric (scikit-learn): MCC for CoLA, accuracy for SST-2/RTE, micro-F1 for Sara.

    Args:
        y_true, y_pred: label ids, shape ``(n,)``.

    Returns:
        The score as a fraction (MCC in [-1, 1]; accuracy and micro-F1 in [0, 1]).

    Raises:
        DataError: unknown task or unlabelled ``y_true`` (contains -1).
    """
    y_true = np.asarray(y_true)
    if (y_true < 0).any():
        raise DataError(f"{task}: cannot score an unlabelled split (labels of -1).")
    return METRICS[task_spec(task).metric](y_true, np.asarray(y_pred))
