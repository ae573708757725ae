"""SentEval probing (Conneau et al. 2018) of the teacher and the students, layer by layer.

Conneau, Kruszewski, Lample, Barrault & Baroni (2018), "What you can cram into a single $&!#*
vector: Probing sentence embeddings for linguistic properties", ACL 2018, introduced 10 probing
tasks; Sučík (2020) probes the BERT teacher and the students with them. This module:

1. reads the SentEval probing files (``split<TAB>label<TAB>sentence``, splits ``tr``/``va``/``te``;
   :func:`read_probing_file`) from ``<data_dir>/senteval_probing/`` (or ``probing.data_dir``).
   ``../shared/data`` ships a small sample (≈120 tr / 60 va / 60 te sentences per task); the full
   files (100k / 10k / 10k per task, from
   https://github.com/facebookresearch/SentEval/tree/main/data/probing) work unchanged when put
   in that folder;
2. turns every sentence into one vector per model and layer (:class:`Encoder`): for BERT models
   the average over the (non-padding) tokens of the embedding layer ``E`` and of each chosen
   Transformer layer (:func:`spread_layers`: the thesis' E, 1, 6, 12, 18, 24 for BERT-large and
   the same spread for other depths); for the BERT student (Sučík 2020, §4.3) the same average
   over its embedding output and every one of its layers ``E, 1, …, L``; for the BiLSTM student
   its concatenated final states.
   Vectors are computed in batches and cached per (model, layer, task) under
   ``<out>/probing/features/``;
3. trains the probe of the thesis (and of Conneau et al. 2018): an MLP with one sigmoid hidden
   layer (:class:`MLPProbe`), Adam (lr 1e-3), batch 64, early stopping on ``va``, a grid over
   dropout {0, 0.1, 0.2} × width {50, 100, 200} chosen by ``va`` accuracy; only the chosen
   probe is scored on ``te`` (:func:`probe_layer`);
4. puts the scores beside baselines: the majority class of this data, and the published
   majority, human and best-encoder numbers of Conneau et al. (2018, Table 2;
   :data:`CONNEAU_2018`), and draws the thesis figures (:func:`plot_teacher_layers`,
   :func:`plot_students_vs_teacher`, :func:`plot_students_init_vs_trained`, and
   :func:`plot_layers_by_depth`: every layer of the teacher and of both students by relative
   depth, trained and initialised).

Which models are probed (:func:`default_encoders`): the fine-tuned teacher (and the
pre-trained one), and *both* students of the thesis — the BiLSTM and, when
``bert_student.enabled``, the BERT student — each trained and, with
``probing.initialised_students``, as initialised before distillation; the thesis' question is
how the student architecture changes what linguistic knowledge is distilled and where it is stored.

The notebook ``notebooks/05_probing`` calls :func:`run_probing` and the plotting functions.
"""

from __future__ import annotations

import functools

import contextlib
import copy
import hashlib
import json
import math
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .config import PROJECT_ROOT, Config, ProbingConfig
from .errors import ConfigError, DataError, StageInputError
from .utils import Timer, atomic_path, read_json, set_seed, write_json

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


# ---------------------------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------------------------

EmbedFn = Callable[[list[str], list[str]], dict[str, np.ndarray]]
"""``embed(sentences, layers) -> {layer: (N, D) float32}``."""


@dataclass
class Encoder:
    """A model to probe: turns sentences into one vector per layer.

    Add an entry to the dict of :func:`default_encoders` (or pass your own dict to
    :func:`run_probing`) to probe another model.

    Attributes:
        name: row label, e.g. ``teacher``, ``teacher (pre-trained)``, ``bilstm (initialised)``.
        family: ``teacher`` or the student's name (``bilstm``); figures pair states by it.
        state: ``fine-tuned`` / ``pre-trained`` (teacher), ``trained`` / ``initialised`` (students).
        layers: layer labels in depth order (``E``, ``1``, ... for BERT; ``final`` for the BiLSTM).
        key: identifies the weights; cached features are reused only while it is unchanged.
        embed: ``(sentences, layers) -> {layer: (N, D) float32 array}``; loads the model lazily.
        n_layers: the model's depth (Transformer layers; 1 for the BiLSTM) for the relative
            depth of a layer (``layer / n_layers``; ``final`` → 1); None: the deepest probed layer.
    """

    name: str
    family: str
    state: str
    layers: list[str]
    key: str
    embed: EmbedFn
    n_layers: Optional[int] = None

    def relative_depth(self, layer: str) -> float:
        """Position of ``layer`` in the model, 0 (``E``) … 1 (the last layer; ``final``)."""
        if layer == "final":
            return 1.0
        deepest = self.n_layers or max((layer_index(l) for l in self.layers if l != "final"), default=1) or 1
        return layer_index(layer) / deepest


def layer_label(index: int) -> str:
    """``0`` (the embedding output) → ``E``; ``k`` → ``"k"``."""
    return "E" if index == 0 else str(index)


def layer_index(label: str) -> int:
    """Inverse of :func:`layer_label`."""
    return 0 if label == "E" else int(label)


def spread_layers(n_layers: int) -> list[int]:
    """The thesis' choice of BERT layers to probe, for any depth: the embedding layer (0 = E),
    layer 1, and the layers at 1/4, 1/2, 3/4 and all of the depth (rounded half up).

    BERT-large (24) → ``[0, 1, 6, 12, 18, 24]`` (the layers plotted by Sučík 2020);
    12 → ``[0, 1, 3, 6, 9, 12]``; 6 (the CPU teacher) → ``[0, 1, 2, 3, 5, 6]``.
    """
    picks = {0, min(1, n_layers)} | {int(n_layers * k / 4 + 0.5) for k in range(1, 5)}
    return sorted(p for p in picks if 0 <= p <= n_layers)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run tiny CPU matrix products on one thread (restored afterwards): for a probe's
    ``(64, D) × (D, ≤ 9·200)`` products, thread synchronisation costs more than it saves,
    and far more on a busy machine."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.inference_mode()
def mean_pooled_layers(model, tokenizer, sentences: Sequence[str], layers: Sequence[int],
                       max_length: int = 128, batch_size: int = 64, accelerator=None) -> np.ndarray:
    """Average-pooled hidden states of a BERT model, in batches.

    Each sentence is WordPiece-tokenised with ``[CLS]``/``[SEP]`` (truncated to ``max_length``);
    ``hidden_states[l]`` (``l = 0``: embedding output E; ``l = k``: Transformer layer k) is
    averaged over the tokens where ``attention_mask`` is 1, so padding never changes a vector.
    Sentences are batched by length (shortest first) and returned in input order.

    Args:
        model: a transformers BERT model (``AutoModel`` or ``...ForSequenceClassification``),
            on its device already.
        layers: hidden-state indices in ``0..num_hidden_layers``.
        accelerator: if given, the forward passes run under ``accelerator.autocast()``
            (bf16/fp16 per ``mixed_precision`` on a GPU); the pooling is done in float32.

    Returns:
        float32 array ``(len(layers), N, H)``.
    """
    model.eval()
    device = next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    order = np.argsort([len(s) for s in sentences], kind="stable")
    out: Optional[np.ndarray] = None
    for start in range(0, len(sentences), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([sentences[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        with autocast():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        denom = mask.sum(1).clamp(min=1.0)
        pooled = torch.stack([(hidden[l].float() * mask).sum(1) / denom for l in layers])  # (L, B, H)
        if out is None:
            out = np.zeros((len(layers), len(sentences), pooled.shape[-1]), dtype=np.float32)
        out[:, idx] = pooled.float().cpu().numpy()
    assert out is not None
    return out


@torch.inference_mode()
def bilstm_final_states(model, tokenizer, sentences: Sequence[str], max_length: int = 128,
                        batch_size: int = 64) -> np.ndarray:
    """The BiLSTM student's sentence vectors (concatenated final forward/backward states,
    :meth:`kdnb.students.BiLSTMStudent.encode`), in batches: float32 ``(N, 2H)``.

    On a CPU this runs on one thread: the LSTM's small sequential products gain nothing from
    more, and lose much on a busy machine."""
    from .students import WordPieceCollate

    model.eval()
    device = next(model.parameters()).device
    collate = WordPieceCollate(tokenizer, max_length)
    chunks = []
    with _one_cpu_thread(device):
        for start in range(0, len(sentences), batch_size):
            batch = collate([{"sentence": s} for s in sentences[start:start + batch_size]])
            chunks.append(model.encode(batch["input_ids"].to(device), batch["lengths"]).float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


def _load_once(load: Callable[[], tuple], mixed_precision: str = "no") -> Callable[[], tuple]:
    """Wrap ``load() -> (model, tokenizer)`` so that, on first use only, the model is loaded
    and moved to the device of an accelerate ``Accelerator`` (this process' GPU under
    ``accelerate launch``, else the GPU or the CPU). Returns ``() -> (model, tokenizer,
    accelerator)``."""

    @functools.cache
    def loaded() -> tuple:
        from .distill import make_accelerator

        accelerator = make_accelerator(mixed_precision)
        model, tok = load()
        return model.to(accelerator.device), tok, accelerator

    return loaded


def bert_encoder(name: str, family: str, state: str, key: str, load: Callable[[], tuple], layers: Sequence[int],
                 max_length: int, batch_size: int, mixed_precision: str = "no",
                 n_layers: Optional[int] = None) -> Encoder:
    """An :class:`Encoder` for a BERT model that ``load()`` returns as ``(model, tokenizer)``
    (called once, on first use), probing the hidden-state indices ``layers`` (0 = E); forward
    passes in ``mixed_precision`` (``no`` | ``bf16`` | ``fp16``; GPU only) through accelerate.
    The model is a transformers BERT or a :class:`kdnb.bert_student.BertStudent` (both take
    ``input_ids, attention_mask, token_type_ids, output_hidden_states``); ``n_layers``: its depth."""
    loaded = _load_once(load, mixed_precision)

    def embed(sentences: list[str], wanted: list[str]) -> dict[str, np.ndarray]:
        model, tok, accelerator = loaded()
        arr = mean_pooled_layers(model, tok, sentences, [layer_index(l) for l in wanted], max_length, batch_size,
                                 accelerator=accelerator)
        return dict(zip(wanted, arr))

    return Encoder(name, family, state, [layer_label(i) for i in layers], key, embed, n_layers)


def bilstm_encoder(name: str, family: str, state: str, key: str, load: Callable[[], tuple], max_length: int,
                   batch_size: int) -> Encoder:
    """An :class:`Encoder` for a BiLSTM student that ``load()`` returns as ``(model, tokenizer)``;
    its one layer is ``final`` (the concatenated final states). The model is placed on the
    device by accelerate and runs in float32 (a small LSTM gains little from bf16)."""
    loaded = _load_once(load)

    def embed(sentences: list[str], wanted: list[str]) -> dict[str, np.ndarray]:
        model, tok, _ = loaded()
        vecs = bilstm_final_states(model, tok, sentences, max_length, batch_size)
        return {w: vecs for w in wanted}

    return Encoder(name, family, state, ["final"], key, embed, 1)


def _teacher_layers(cfg: Config, n_layers: int, who: str) -> list[int]:
    wanted = list(cfg.probing.teacher_layers) or spread_layers(n_layers)
    bad = [l for l in wanted if l > n_layers]
    if bad:
        raise ConfigError(
            f"key 'probing.teacher_layers': {who} has {n_layers} layers (0 = E), cannot probe layer(s) {bad}; "
            "leave the list empty for the thesis' spread E, 1, L/4, L/2, 3L/4, L."
        )
    return sorted(set(wanted))


@contextlib.contextmanager
def _seeded(seed: int):
    """Run the block after ``set_seed(seed)`` (Python, NumPy, torch CPU RNGs), then give the
    caller its RNG states back — so building a student "as initialised" is reproducible and
    leaves the caller's random streams untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            set_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def default_encoders(cfg: Config) -> dict[str, Encoder]:
    """The models to probe, by row name: the fine-tuned ``teacher``; the ``teacher
    (pre-trained)`` before fine-tuning (``probing.pretrained_teacher``); each trained student —
    ``bilstm`` (``bilstm.enabled``) and ``bert_student`` (``bert_student.enabled``; every layer
    ``E, 1, …, L``, as Sučík 2020 probes both students) — and, with
    ``probing.initialised_students``, the same student as initialised before distillation:
    ``bilstm (initialised)`` (``set_seed(seed)``, teacher-embedding init, untrained LSTM —
    exactly the start of :func:`kdnb.students.distill_bilstm`) and ``bert_student
    (initialised)`` (``set_seed(seed)``, the teacher loaded, :func:`kdnb.bert_student.
    build_bert_student` — exactly the start of its training: random layers, or the teacher's
    first ``L`` layers with ``bert_student.init: teacher``).

    No model is loaded here; each :class:`Encoder` loads its model on first use, with the
    caller's RNG states left as they were.

    Raises:
        StageInputError: no fine-tuned teacher (run notebook 03) or an enabled student has
            not been trained (run notebook 04).
        ConfigError: ``probing.teacher_layers`` names a layer the teacher does not have.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .teacher import load_teacher, resolve_model_path, teacher_dir

    pc = cfg.probing
    tdir = teacher_dir(cfg)
    tres = read_json(tdir / "result.json")
    if not (tdir / "model").is_dir() or not tres:
        raise StageInputError(f"{tdir / 'model'}: no fine-tuned teacher to probe; run notebooks/03_teacher first.")
    t_key = tres["config_hash"]
    n_layers = AutoConfig.from_pretrained(tdir / "model").num_hidden_layers
    encoders: dict[str, Encoder] = {}
    encoders["teacher"] = bert_encoder(
        "teacher", "teacher", "fine-tuned", f"teacher:{t_key}", lambda: load_teacher(cfg),
        _teacher_layers(cfg, n_layers, "the teacher"), pc.max_length, pc.batch_size, cfg.mixed_precision, n_layers)
    if pc.pretrained_teacher:
        path = resolve_model_path(cfg.teacher.model_name_or_path)
        n_pre = AutoConfig.from_pretrained(path).num_hidden_layers
        encoders["teacher (pre-trained)"] = bert_encoder(
            "teacher (pre-trained)", "teacher", "pre-trained", f"pretrained:{cfg.teacher.model_name_or_path}",
            lambda: (AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)),
            _teacher_layers(cfg, n_pre, "the pre-trained teacher"), pc.max_length, pc.batch_size, cfg.mixed_precision,
            n_pre)
    if cfg.bilstm.enabled:
        sdir = cfg.out / "students" / "bilstm"
        sres = read_json(sdir / "result.json")
        if not (sdir / "model.pt").is_file() or not sres:
            raise StageInputError(f"{sdir / 'model.pt'}: no trained BiLSTM student to probe; run "
                                  "notebooks/04_students first (or set bilstm.enabled: false).")

        def load_bilstm(trained: bool):
            from .data import task_spec
            from .students import build_bilstm

            with _seeded(cfg.seed):  # the same sequence as distill_bilstm: seed, load teacher, build
                teacher, tok = load_teacher(cfg)
                # pair tasks: the siamese BiLSTM, whose encode() still embeds one sentence
                model = build_bilstm(cfg.bilstm, teacher.config.num_labels, tok, teacher,
                                     pair=task_spec(cfg.task).pair)
            if trained:
                model.load_state_dict(torch.load(sdir / "model.pt", map_location="cpu"))
            return model, tok

        encoders["bilstm"] = bilstm_encoder("bilstm", "bilstm", "trained", f"bilstm:{sres['config_hash']}",
                                            lambda: load_bilstm(True), pc.max_length, pc.batch_size)
        if pc.initialised_students:
            init_key = f"bilstm-init:{cfg.section_hash('seed', 'bilstm')}-{t_key}"
            encoders["bilstm (initialised)"] = bilstm_encoder(
                "bilstm (initialised)", "bilstm", "initialised", init_key, lambda: load_bilstm(False),
                pc.max_length, pc.batch_size)
    if cfg.bert_student.enabled:
        encoders.update(_bert_student_encoders(cfg, t_key))
    return encoders


def _bert_student_encoders(cfg: Config, t_key: str) -> dict[str, Encoder]:
    """``bert_student`` (trained, ``<out>/students/bert_student/model.pt``) and, with
    ``probing.initialised_students``, ``bert_student (initialised)``; every layer ``E, 1, …, L``.

    Raises:
        StageInputError: the BERT student has not been trained.
    """
    from .bert_student import build_bert_student, load_bert_student, student_dir
    from .teacher import load_teacher

    pc, bc = cfg.probing, cfg.bert_student
    bdir = student_dir(cfg, "bert_student")
    bres = read_json(bdir / "result.json")
    if not (bdir / "model.pt").is_file() or not bres:
        raise StageInputError(f"{bdir / 'model.pt'}: no trained BERT student to probe; run notebooks/04_students "
                              "first (or set bert_student.enabled: false).")

    def load_bert(trained: bool):
        with _seeded(cfg.seed):  # the same sequence as bert_student._train: seed, load teacher, build
            teacher, tok = load_teacher(cfg)
            if trained:
                model = load_bert_student(cfg, "bert_student", teacher)
            else:
                model = build_bert_student(bc, teacher.config.num_labels, teacher)
        return model.eval(), tok

    n_trained = int(bres.get("sizes", {}).get("num_layers", bc.num_layers))
    out = {"bert_student": bert_encoder(
        "bert_student", "bert_student", "trained", f"bert_student:{bres['config_hash']}", lambda: load_bert(True),
        list(range(n_trained + 1)), pc.max_length, pc.batch_size, cfg.mixed_precision, n_trained)}
    if pc.initialised_students:
        init_key = f"bert_student-init:{cfg.section_hash('seed', 'bert_student')}-{t_key}"
        out["bert_student (initialised)"] = bert_encoder(
            "bert_student (initialised)", "bert_student", "initialised", init_key, lambda: load_bert(False),
            list(range(bc.num_layers + 1)), pc.max_length, pc.batch_size, cfg.mixed_precision, bc.num_layers)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def features(cfg: Config, encoder: Encoder, data: ProbingData, force: bool = False
             ) -> dict[str, dict[str, np.ndarray]]:
    """Sentence vectors of ``data`` for every layer of ``encoder``, cached per (model, layer, task).

    Cached as ``<out>/probing/features/<model>/<task>/layer_<L>.npz`` (arrays ``tr``, ``va``,
    ``te``, stored as float16: half the disk — 245 MB per BERT-large layer and task on the full
    files — and immaterial for a probe that standardises its inputs) next to a ``meta.json``
    holding the encoder's key, the data's fingerprint and ``probing.max_length``; a layer is
    recomputed only when it is missing or the meta changed (``force`` recomputes all). Missing
    layers are computed in one batched pass.

    Returns:
        ``layer -> split -> (N_split, D)`` float32 arrays.
    """
    d = cfg.out / "probing" / "features" / _slug(encoder.name) / data.task
    meta = {"encoder": encoder.key, "data": data.fingerprint(), "max_length": cfg.probing.max_length}
    if force or read_json(d / "meta.json") != meta:
        shutil.rmtree(d, ignore_errors=True)
        write_json(d / "meta.json", meta)
    missing = [l for l in encoder.layers if not (d / f"layer_{l}.npz").is_file()]
    if missing:
        sents = [s for split in SPLITS for s in data.sentences[split]]
        vecs = encoder.embed(sents, missing)
        bounds = np.cumsum([0] + [len(data.sentences[s]) for s in SPLITS])
        for layer in missing:
            arr = np.asarray(vecs[layer], dtype=np.float32)
            if arr.shape[0] != len(sents):
                raise ValueError(f"encoder {encoder.name!r} returned {arr.shape[0]} vectors for {len(sents)} sentences")
            with atomic_path(d / f"layer_{layer}.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **{s: arr[bounds[i]:bounds[i + 1]].astype(np.float16) for i, s in enumerate(SPLITS)})
    out = {}
    for layer in encoder.layers:
        with np.load(d / f"layer_{layer}.npz") as z:
            out[layer] = {s: z[s].astype(np.float32) for s in SPLITS}
    return out


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
    """

    scores: pd.DataFrame
    sizes: pd.DataFrame
    warning: Optional[str]
    data_dir: Path
    seconds: float


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
    so a killed run resumes.

    Args:
        encoders: models to probe, by name (default :func:`default_encoders`).

    Raises:
        DataError: a probing file is missing or malformed.
        StageInputError: the teacher or an enabled student has not been trained.
    """
    from .utils import tqdm

    with Timer() as timer:
        tasks = load_probing_tasks(cfg)
        encoders = default_encoders(cfg) if encoders is None else encoders
        rows = []
        jobs = [(e, t) for e in encoders.values() for t in tasks]
        for enc, tname in tqdm(jobs, desc="probing", disable=not progress, leave=False):
            data = tasks[tname]
            feats = features(cfg, enc, data, force=force)
            pdir = cfg.out / "probing" / "probes" / _slug(enc.name)
            key = _probe_key(cfg, read_json(cfg.out / "probing" / "features" / _slug(enc.name) / tname / "meta.json"))
            saved = read_json(pdir / f"{tname}.json")
            done = saved["layers"] if saved and saved.get("key") == key and not force else {}
            for depth, layer in enumerate(enc.layers):
                if layer not in done:
                    res = probe_layer(feats[layer], data.labels, len(data.classes), cfg.probing, cfg.seed)
                    done[layer] = res.__dict__
                    write_json(pdir / f"{tname}.json", {"key": key, "layers": done})
                r = done[layer]
                rows.append({"model": enc.name, "family": enc.family, "state": enc.state, "layer": layer,
                             "depth": depth, "rel_depth": round(enc.relative_depth(layer), 4), "task": tname, "kind": PROBING_TASKS[tname].kind,
                             "val_acc": round(100 * r["val_acc"], 2), "test_acc": round(100 * r["test_acc"], 2),
                             "hidden": r["hidden"], "dropout": r["dropout"], "epoch": r["epoch"],
                             **data.sizes()})
    return ProbingRun(pd.DataFrame(rows), data_sizes(tasks), sample_warning(tasks), probing_data_dir(cfg),
                      timer.seconds)


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


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

_BASELINE_STYLE = {
    "majority (this data)": dict(color="0.35", ls="--", lw=1.2),
    CONNEAU_2018_LABELS["human"]: dict(color="tab:green", ls=":", lw=1.5),
    CONNEAU_2018_LABELS["best"]: dict(color="tab:purple", ls="-.", lw=1.2),
}


def _task_grid(n: int, width: float = 3.2, height: float = 2.8):
    from . import figures  # noqa: F401  (Agg backend, seaborn theme)
    import matplotlib.pyplot as plt

    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _baseline_lines(ax, sizes: pd.DataFrame, task: str) -> None:
    s = sizes.set_index("task").loc[task]
    ax.axhline(s["majority (this data, %)"], **_BASELINE_STYLE["majority (this data)"], label="majority (this data)")
    for row in ("human", "best"):
        label = CONNEAU_2018_LABELS[row]
        ax.axhline(CONNEAU_2018[row][task], **_BASELINE_STYLE[label], label=label)


def _finish(fig, axes, title: str):
    handles, labels = {}, {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
        if ax.get_legend():
            ax.get_legend().remove()
    fig.suptitle(title)
    fig.tight_layout()
    # below the panels; kdnb.report.save_figure saves with bbox_inches="tight", which keeps it
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(3, len(handles)),
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig


def plot_teacher_layers(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "teacher layers vs baselines": one panel per probing task, test accuracy
    (%) of the teacher's layers (E, 1, ...; one line per teacher state: fine-tuned, pre-trained)
    against the majority class of this data and Conneau et al.'s (2018) human and best-encoder
    numbers."""
    import seaborn as sns

    teach = scores[scores["family"] == "teacher"]
    tasks = [t for t in PROBING_TASKS if t in set(teach["task"])]
    fig, axes = _task_grid(len(tasks))
    labels = list(dict.fromkeys(teach.sort_values("depth")["layer"]))
    for ax, t in zip(axes, tasks):
        sub = teach[teach["task"] == t]
        sns.lineplot(sub, x="depth", y="test_acc", hue="model", marker="o", ax=ax)
        _baseline_lines(ax, sizes, t)
        ax.set_xticks(range(len(labels)), labels)
        ax.set(title=t, xlabel="layer", ylabel="test accuracy (%)", ylim=(0, 102))
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}probing the teacher's layers")


def _last_layers(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each model's deepest probed layer (the BERT student's ``L``; the BiLSTM's ``final``)."""
    if not len(df):
        return df
    deepest = df.groupby("model")["depth"].transform("max")
    return df[df["depth"] == deepest]


def _who(df: pd.DataFrame, with_state: bool) -> pd.Series:
    """Bar label: the model, and for multi-layer students the layer shown (``bert_student (layer 5)``)."""
    multi = df.groupby("model")["layer"].transform(lambda l: l.iloc[0] != "final")
    base = df["family"] + " · " + df["state"] if with_state else df["model"]
    return base.where(~multi, base + " (layer " + df["layer"].astype(str) + ")")


def plot_students_vs_teacher(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "students vs teacher" (Sučík 2020, probing figures; here with both
    students): per probing task, test accuracy (%) of the fine-tuned teacher's last layer and of
    its best layer (chosen on ``va``, :func:`best_layers`) and of each trained student's last
    layer (the BiLSTM's final states, the BERT student's layer ``L``), with the same baselines
    as :func:`plot_teacher_layers`. Every layer of every model: :func:`plot_layers_by_depth`."""
    import seaborn as sns

    rows = []
    teach = scores[scores["model"] == "teacher"]
    if len(teach):
        last = teach[teach["depth"] == teach["depth"].max()]
        rows.append(last.assign(who=f"teacher (layer {last['layer'].iloc[0]})"))
        best = best_layers(teach, "teacher")
        best = teach.merge(best[["task", "layer"]], on=["task", "layer"])
        rows.append(best.assign(who="teacher (best layer on va)"))
    studs = _last_layers(scores[(scores["family"] != "teacher") & (scores["state"] == "trained")])
    rows.append(studs.assign(who=_who(studs, False)))
    df = pd.concat(rows, ignore_index=True)
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(len(tasks))
    for ax, t in zip(axes, tasks):
        sns.barplot(df[df["task"] == t], x="who", y="test_acc", hue="who", ax=ax, legend=True)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="", ylabel="test accuracy (%)", ylim=(0, 102), xticks=[])
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}students vs teacher")


def plot_students_init_vs_trained(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = ""):
    """Thesis figure "students initialised vs trained" (with both students): per probing task,
    test accuracy (%) of each student's last layer before distillation (initialised) and after
    (trained) — what KD added — with the same baselines as :func:`plot_teacher_layers`. The BERT
    student's other layers, initialised and trained: :func:`plot_layers_by_depth`."""
    import seaborn as sns

    df = scores[(scores["family"] != "teacher") & scores["state"].isin(["initialised", "trained"])]
    df = _last_layers(df)
    df = df.assign(who=_who(df, True))
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(max(1, len(tasks)))
    order = sorted(set(df["who"]), key=lambda w: (w.split(" · ")[0], "· trained" in w))
    for ax, t in zip(axes, tasks):
        sns.barplot(df[df["task"] == t], x="who", y="test_acc", hue="who", order=order, hue_order=order, ax=ax,
                    legend=True)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="", ylabel="test accuracy (%)", ylim=(0, 102), xticks=[])
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}students before (initialised) and after KD")


def plot_layers_by_depth(scores: pd.DataFrame, sizes: pd.DataFrame, task_name: str = "",
                         states: Sequence[str] = ("fine-tuned", "pre-trained", "trained", "initialised")):
    """Every probed layer of every model by relative depth — the teacher's (E, 1, …, N), the
    BERT student's (E, 1, …, L) and the BiLSTM's final states (at depth 1) — one panel per
    probing task, test accuracy (%); colour: the model family, line style: its state (solid:
    fine-tuned / trained, dashed: pre-trained / initialised). Where the knowledge sits in each
    architecture and what distillation moved (Sučík 2020 asks both for the two students).

    Args:
        scores: :attr:`ProbingRun.scores` (needs ``rel_depth``).
        states: the states drawn.

    Returns:
        The matplotlib figure.
    """
    import seaborn as sns

    df = scores[scores["state"].isin(list(states))].copy()
    if "rel_depth" not in df:
        df["rel_depth"] = df.groupby("model")["depth"].transform(lambda d: d / max(d.max(), 1))
    df["state kind"] = df["state"].map(lambda st: "before KD / fine-tuning" if st in ("pre-trained", "initialised")
                                       else "after")
    tasks = [t for t in PROBING_TASKS if t in set(df["task"])]
    fig, axes = _task_grid(max(1, len(tasks)))
    families = list(dict.fromkeys(df.sort_values("family", key=lambda f: f != "teacher")["family"]))
    for ax, t in zip(axes, tasks):
        sub = df[df["task"] == t].sort_values(["model", "rel_depth"])
        sns.lineplot(sub, x="rel_depth", y="test_acc", hue="family", hue_order=families, style="state kind",
                     style_order=["after", "before KD / fine-tuning"], units="model", estimator=None, marker="o",
                     ax=ax)
        _baseline_lines(ax, sizes, t)
        ax.set(title=t, xlabel="relative depth (E = 0, last layer = 1)", ylabel="test accuracy (%)",
               ylim=(0, 102), xlim=(-0.05, 1.05))
    return _finish(fig, axes, f"{task_name + ': ' if task_name else ''}every layer of the teacher and the students")
