"""The transfer set: the training set plus augmented sentences, every one labelled with the
teacher's logits (Tang et al. 2019, §3; Sučík 2020, §3), and the tables and plots that describe it.

:func:`transfer_input` assembles the unlabelled transfer set ``none | rules | gpt2 |
rules+gpt2``; :func:`label_transfer_sets` labels it with
:func:`kdnb.training.teacher.compute_teacher_logits` (notebook 03).
"""

from __future__ import annotations

import math
from typing import Optional

import datasets
import numpy as np
import pandas as pd
import torch

from .. import store
from ..config import Config
from ..errors import ConfigError, StageInputError
from ..utils import read_json
from .gpt2 import augment_gpt2
from .rules import augment_rules
from .shards import (
    TRANSFER_SETS,
    AugmentResult,
    column,
    load_augmented,
    methods_needed,
    row_keys,
    training_sentences,
    transfer_dir,
    transfer_sets_needed,
)


def augment(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> dict[str, AugmentResult]:
    """Run every method that :func:`methods_needed` lists (notebook 02)."""
    fns = {"rules": augment_rules, "gpt2": augment_gpt2}
    return {m: fns[m](cfg, dsd, force=force) for m in methods_needed(cfg)}


# ---------------------------------------------------------------------------------------------
# The transfer set
# ---------------------------------------------------------------------------------------------
def transfer_input(cfg: Config, dsd: datasets.DatasetDict, name: str) -> datasets.Dataset:
    """The unlabelled transfer set ``name`` (``none | rules | gpt2 | rules+gpt2``).

    The training rows (``train_limit``-subsampled) followed by at most ``augment.transfer_size``
    augmented sentences (None: all saved ones; ``rules+gpt2`` takes ``⌈size/2⌉`` rules samples
    and fills the rest with GPT-2 ones), without any sentence that is already in the set.
    Memory-mapped (the augmented part is a view of ``<out>/augmented/<method>``).

    Returns:
        Columns ``idx`` (row of the training file; -1 for generated), ``sentence``
        (``sentence2``), ``label`` (-1 for generated) and ``source`` (``train``, ``rules``,
        ``gpt2``). Label with :func:`kdnb.training.teacher.compute_teacher_logits`.

    Raises:
        ConfigError: unknown ``name``.
        StageInputError: a needed augmentation has not been generated (notebook 02).
    """
    if name not in TRANSFER_SETS:
        raise ConfigError(f"unknown transfer set {name!r}; expected one of {', '.join(TRANSFER_SETS)}.")
    train = training_sentences(cfg, dsd)
    cols = train.column_names
    base = train.add_column("source", ["train"] * len(train))
    if name == "none":
        return base
    methods = name.split("+")
    size = cfg.augment.transfer_size
    parts = [load_augmented(cfg, m).dataset for m in methods]
    if size is None:
        quotas = [len(p) for p in parts]
    elif len(parts) == 1:
        quotas = [min(size, len(parts[0]))]
    else:
        q0 = min(len(parts[0]), math.ceil(size / 2))
        q1 = min(len(parts[1]), size - q0)
        q0 = min(len(parts[0]), size - q1)
        quotas = [q0, q1]
    seen = set(row_keys(train))
    label_feat = train.features["label"]
    out = [base]
    for part, quota in zip(parts, quotas):
        part = part.select_columns([c for c in ("sentence", "sentence2", "source") if c in part.column_names])
        n = len(part)
        part = part.add_column("idx", np.full(n, -1, dtype=np.int32), feature=train.features["idx"])
        part = part.add_column("label", np.full(n, -1, dtype=np.int64), feature=label_feat)
        keep = []
        for i, key in enumerate(row_keys(part)):
            if len(keep) == quota:
                break
            if key not in seen:
                seen.add(key)
                keep.append(i)
        part = part.select(range(len(keep))) if keep == list(range(len(keep))) else part.select(keep)
        out.append(part.select_columns([*cols, "source"]))
    return datasets.concatenate_datasets(out)


class TransferSets(dict):
    """``{name: labelled transfer set}`` from :func:`label_transfer_sets`; ``reused``: every set
    was loaded from saved outputs (the teacher ran on no row); ``artefacts``: ``{name:
    kdnb.store.Artefact}``, the sets' entries in the run store (``none`` and ``<name>.augmented``:
    the teacher's logits on the training rows and on a set's new rows; ``<name>``: the
    concatenated set, kind ``transfer_set``)."""

    def __init__(self):
        super().__init__()
        self.reused = True
        self.artefacts: dict[str, store.Artefact] = {}


@store.timed("teacher_logits")
def label_transfer_sets(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> TransferSets:
    """Label every set of :func:`transfer_sets_needed` with the teacher's logits (notebook 03).

    The training rows are labelled once, into ``<out>/transfer/none``; each augmented set's new
    rows into ``<out>/transfer/<name>.augmented``, both by
    :func:`kdnb.training.teacher.compute_teacher_logits` (shards of ``augment.shard_size`` rows, a killed
    run resumes at the first missing shard, reused while unchanged). ``<out>/transfer/<name>``
    is then the two concatenated (memory-mapped Arrow), rows in :func:`transfer_input`'s order.

    Returns:
        :class:`TransferSets`: ``{name: dataset}`` with :func:`transfer_input`'s columns plus
        ``teacher_logits`` ``(rows, num_labels)`` float32; ``.reused`` is True when every set
        was loaded from saved outputs (no teacher forward pass); ``.artefacts`` holds each
        set's :class:`kdnb.store.Artefact` (``<name>.augmented``: the logits of its new rows).
        The wall time is logged as the stage ``teacher_logits`` (:func:`kdnb.store.timed`;
        kept from the run that labelled them when every set is reused).
    """
    from ..training.teacher import compute_teacher_logits, logits_artefact

    out = TransferSets()

    def label(ds: datasets.Dataset, name: str) -> datasets.Dataset:
        shard_size = cfg.augment.shard_size
        art = logits_artefact(cfg, ds, transfer_dir(cfg, name), shard_size)  # hashes the rows' text once
        out.artefacts[name] = art
        if art.saved(force):
            return datasets.load_from_disk(str(art.path))
        out.reused = False
        return compute_teacher_logits(cfg, ds, art.path, shard_size=shard_size, force=force,
                                      desc=f"teacher logits ({name})", meta=art.key)

    none = label(transfer_input(cfg, dsd, "none"), "none")
    for name in transfer_sets_needed(cfg):
        if name == "none":
            out[name] = none
            continue
        full = transfer_input(cfg, dsd, name)
        new = label(full.select(range(len(none), len(full))), f"{name}.augmented")
        path = transfer_dir(cfg, name)
        meta = {"none": read_json(path.with_name("none.json")),
                "augmented": read_json(path.with_name(f"{name}.augmented.json")),
                "teacher_config_hash": store.record(cfg).get("config_hash")}
        art = out.artefacts[name] = store.Artefact("transfer_set", path, meta, cfg.out)
        if art.saved(force):
            out[name] = datasets.load_from_disk(str(path))
        else:
            out[name] = art.save_dataset(datasets.concatenate_datasets([none, new]))
    return out


def load_transfer_set(cfg: Config, name: Optional[str] = None) -> datasets.Dataset:
    """The labelled transfer set ``name`` (default ``augment.transfer_set``), memory-mapped.

    Raises:
        StageInputError: not labelled yet (run notebooks 02 and 03).
    """
    name = name or cfg.augment.transfer_set
    path = transfer_dir(cfg, name)
    if not path.is_dir():
        raise StageInputError(f"{path}: no transfer set '{name}'; run notebooks 02 and 03 first.")
    return datasets.load_from_disk(str(path))


# ---------------------------------------------------------------------------------------------
# What the notebooks show
# ---------------------------------------------------------------------------------------------
def examples(cfg: Config, dsd: datasets.DatasetDict, method: str, n: int = 3, per_sentence: int = 3) -> pd.DataFrame:
    """A few generated sentences: rule samples next to their original, or GPT-2 samples."""
    res = load_augmented(cfg, method)
    ds = res.dataset
    if method == "rules":
        train = training_sentences(cfg, dsd)
        origins = np.asarray(column(ds, "origin"))
        rows = []
        for row in sorted(set(origins[: 50 * n].tolist()))[:n]:
            rows.append({"original": train[int(row)]["sentence"], "augmented": ""})
            for j in np.flatnonzero(origins == row)[:per_sentence]:
                rows.append({"original": "", "augmented": ds[int(j)]["sentence"]})
        return pd.DataFrame(rows)
    return pd.DataFrame({"generated": column(ds.select(range(min(n * per_sentence, len(ds)))), "sentence")})


def counts_table(results: dict[str, AugmentResult]) -> pd.DataFrame:
    """Per method: samples drawn, unique, kept (unique and not a training sentence), seconds."""
    return pd.DataFrame([{"method": m, "generated": r.stats["generated"], "unique": r.stats["unique"],
                          "kept": r.stats["kept"], "duplicates (%)":
                          round(100 * (1 - r.stats["unique"] / max(r.stats["generated"], 1)), 1)}
                         for m, r in results.items()])


def lengths_frame(cfg: Config, dsd: datasets.DatasetDict, results: dict[str, AugmentResult],
                  max_rows: int = 20_000) -> pd.DataFrame:
    """Long table ``source, words`` of sentence lengths (words) for real and generated text
    (at most ``max_rows`` per source)."""
    frames = [pd.DataFrame({"source": "train (real)",
                            "words": [len(s.split()) for s in column(training_sentences(cfg, dsd), "sentence")]})]
    for m, r in results.items():
        sub = r.dataset.select(range(min(max_rows, len(r.dataset))))
        frames.append(pd.DataFrame({"source": m, "words": [len(s.split()) for s in column(sub, "sentence")]}))
    return pd.concat(frames, ignore_index=True)


def length_summary(lengths: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, 90th percentile and max length (words) per source."""
    g = lengths.groupby("source", sort=False)["words"]
    return pd.DataFrame({"mean": g.mean().round(2), "median": g.median(), "p90": g.quantile(0.9),
                         "max": g.max()}).reset_index()


def plot_lengths(lengths: pd.DataFrame, task: str):
    """Density of sentence lengths (words) per source: real vs generated."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .. import figures  # noqa: F401  (Agg backend, theme)

    fig, ax = plt.subplots(figsize=(7, 4))
    clip = int(lengths["words"].quantile(0.99)) + 1
    sns.histplot(lengths[lengths["words"] <= clip], x="words", hue="source", stat="density", common_norm=False,
                 discrete=True, element="step", fill=False, ax=ax)
    ax.set(xlabel="sentence length (words)", ylabel="density", title=f"{task}: real vs generated sentence lengths")
    fig.tight_layout()
    return fig


def logits_array(transfer: datasets.Dataset) -> np.ndarray:
    """The ``teacher_logits`` column as a ``(rows, num_labels)`` float32 array (read from Arrow)."""
    if transfer._indices is not None:
        transfer = transfer.flatten_indices(keep_in_memory=True)
    col = transfer.data.column("teacher_logits").combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(transfer), -1)


def teacher_confidence(transfer_sets: dict[str, datasets.Dataset] | datasets.Dataset) -> pd.DataFrame:
    """Per row: ``source`` (``train``, ``rules``, ``gpt2``), the teacher's confidence
    ``max softmax(logits)`` and its predicted class. Given several transfer sets, a row that
    is in more than one (the training rows, shared augmentations) is taken once."""
    if isinstance(transfer_sets, datasets.Dataset):
        transfer_sets = {"set": transfer_sets}
    frames = []
    for ts in transfer_sets.values():
        logits = torch.from_numpy(logits_array(ts))
        src = column(ts, "source") if "source" in ts.column_names else ["train"] * len(ts)
        frames.append(pd.DataFrame({"source": src, "key": list(row_keys(ts)),
                                    "confidence": torch.softmax(logits, dim=-1).max(-1).values.numpy(),
                                    "prediction": logits.argmax(-1).numpy()}))
        frames[-1]["copy"] = frames[-1].groupby(["source", "key"]).cumcount()  # repeated sentences within a set
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["source", "key", "copy"])
    return df.drop(columns=["key", "copy"]).reset_index(drop=True)


def confidence_summary(conf: pd.DataFrame) -> pd.DataFrame:
    """Per source: rows, mean/median teacher confidence and share predicted as each class."""
    g = conf.groupby("source", sort=False)
    out = pd.DataFrame({"rows": g.size(), "mean confidence": g["confidence"].mean().round(3),
                        "median confidence": g["confidence"].median().round(3)})
    for c in sorted(conf["prediction"].unique()):
        out[f"share class {c}"] = g["prediction"].apply(lambda p, c=c: float((p == c).mean())).round(3)
    return out.reset_index()


def plot_confidence(conf: pd.DataFrame, task: str):
    """Distribution of the teacher's confidence on real vs generated sentences."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .. import figures  # noqa: F401

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.histplot(conf, x="confidence", hue="source", stat="density", common_norm=False, bins=20,
                 element="step", fill=False, ax=ax)
    ax.set(xlabel="teacher confidence (max softmax probability)", ylabel="density",
           title=f"{task}: teacher confidence on real vs generated sentences")
    fig.tight_layout()
    return fig
