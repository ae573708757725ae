"""Where augmented sentences live and how a generation is written shard by shard.

Every generation is written shard by shard (``<name>.shards/shard-NNNNN``, each renamed into
place when complete and drawn from its own seed ``(seed, shard)``), so a killed run resumes at
the first missing shard and yields the same set; finished outputs are reused while the
``<name>.json`` next to them matches the parameters. Everything stays memory-mapped Arrow.
"""

from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import datasets

from .. import store
from ..config import Config, TransferSet
from ..data import subsample
from ..errors import StageInputError
from ..utils import atomic_path, read_json

METHODS = ("rules", "gpt2")
TRANSFER_SETS: tuple[str, ...] = typing.get_args(TransferSet)


# ---------------------------------------------------------------------------------------------
# Which sets and methods a run needs, and where they live
# ---------------------------------------------------------------------------------------------
def transfer_sets_needed(cfg: Config) -> list[str]:
    """The transfer sets this run labels: ``augment.transfer_set``, plus ``augment.ablation_sets``
    when ``augment.ablation`` is true (in that order, without repeats)."""
    names = [cfg.augment.transfer_set]
    if cfg.augment.ablation:
        names += [n for n in cfg.augment.ablation_sets if n not in names]
    return names


def methods_needed(cfg: Config) -> list[str]:
    """The augmentation methods (``rules``, ``gpt2``) that :func:`transfer_sets_needed` use."""
    names = transfer_sets_needed(cfg)
    return [m for m in METHODS if any(m in n.split("+") for n in names)]


def augmented_dir(cfg: Config, method: str) -> Path:
    """``<out>/augmented/<method>``: the generated, unlabelled sentences (Arrow)."""
    return cfg.out / "augmented" / method


def augmented_artefact(cfg: Config, method: str, key: str) -> store.Artefact:
    """The store object of ``method``'s augmented set: :func:`augmented_dir`, its record
    ``<method>.json`` holding ``key`` as ``config_hash`` (and the ``stats``)."""
    return store.Artefact("augmented_set", augmented_dir(cfg, method), key, cfg.out, field="config_hash")


def transfer_dir(cfg: Config, name: str) -> Path:
    """``<out>/transfer/<name>``: a transfer set labelled with the teacher's logits (Arrow)."""
    return cfg.out / "transfer" / name


def training_sentences(cfg: Config, dsd: datasets.DatasetDict) -> datasets.Dataset:
    """The training rows the whole study uses: ``dsd['train']`` subsampled to ``train_limit``."""
    return subsample(dsd["train"], cfg.train_limit, cfg.seed)


@dataclass
class AugmentResult:
    """One augmentation method's output (also ``<out>/augmented/<method>/`` and ``<method>.json``).

    Attributes:
        dataset: the kept sentences, memory-mapped; columns ``sentence`` (``sentence2`` for
            pairs), ``source`` (the method) and ``origin`` (row of the training set a rule
            sample came from, -1 for GPT-2).
        stats: ``generated`` (samples drawn), ``unique`` (after dropping duplicates),
            ``kept`` (after also dropping training sentences), ``seconds`` and method details.
        reused: the saved output matched the parameters and was loaded instead of rebuilt.
        artefact: its entry in the run store (:class:`kdnb.store.Artefact` of kind
            ``augmented_set``: path, key, record), listed in ``<out>/manifest.json``.
    """

    method: str
    dataset: datasets.Dataset
    stats: dict
    reused: bool
    artefact: store.Artefact


def row_key(*parts: str) -> int:
    """64-bit BLAKE2b of the text(s): the dedup key of a sentence or a sentence pair."""
    return int.from_bytes(hashlib.blake2b("\t".join(parts).encode(), digest_size=8).digest(), "little")


def column(ds: datasets.Dataset, name: str) -> list:
    """Column ``name`` of ``ds`` as a list, read through Arrow/pandas (``list(ds[name])`` walks
    the rows one by one: ~300× slower, 30 s per million rows)."""
    return ds.select_columns([name]).to_pandas()[name].tolist()


def source_counts(ds: datasets.Dataset) -> dict[str, int]:
    """Rows per ``source`` (``train``, ``rules``, ``gpt2``) of a transfer set (all ``train``
    for a set saved before the column existed)."""
    if "source" not in ds.column_names:
        return {"train": len(ds)}
    counts = ds.select_columns(["source"]).to_pandas()["source"].value_counts().sort_index()
    return {k: int(v) for k, v in counts.items()}


def text_columns(ds: datasets.Dataset) -> list[str]:
    return [c for c in ("sentence", "sentence2") if c in ds.column_names]


def row_keys(ds: datasets.Dataset, batch_size: int = 10_000) -> Iterable[int]:
    cols = text_columns(ds)
    for batch in ds.select_columns(cols).iter(batch_size=batch_size):
        yield from (row_key(*t) for t in zip(*(batch[c] for c in cols)))


def write_shard(root: Path, k: int, make: Callable[[], datasets.Dataset]) -> tuple[datasets.Dataset, bool]:
    """Load shard ``k`` of ``root`` if complete, else build it with ``make()`` and save it
    atomically. Returns ``(shard, built)``."""
    path = root / f"shard-{k:05d}"
    if path.is_dir():
        return datasets.load_from_disk(str(path)), False
    part = make()
    with atomic_path(path) as tmp:
        part.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(path)), True


def load_augmented(cfg: Config, method: str) -> AugmentResult:
    """Load what :func:`augment_rules` / :func:`augment_gpt2` saved.

    Raises:
        StageInputError: not generated yet (run notebook 02).
    """
    out = augmented_dir(cfg, method)
    meta = read_json(out.with_name(out.name + ".json"))
    if not out.is_dir() or meta is None:
        raise StageInputError(f"{out}: no '{method}' augmentation; run notebooks/02_augmentation first.")
    art = augmented_artefact(cfg, method, meta["config_hash"])
    return AugmentResult(method, datasets.load_from_disk(str(out)), meta["stats"], reused=True, artefact=art)
