"""The run store: one object per trained model of the study (the teacher, a BiLSTM, a BERT
student, a Pea-KD student) and per computed artefact (transfer sets, teacher logits, probing
features...) that owns its path, its key, reuse and its records.

A stage asks for a :class:`Run` (kind, name, folder, key), returns ``run.saved(force)`` when a
finished run with the same key is on disk, else trains and returns ``run.finish(record)``.
Either way the caller gets one :class:`RunResult`: the result record (``result.json``), the
learning curve (``learning_curve.csv``) and whether it was reused. ``finish`` also writes
``manifest.json`` naming the run's kind, key and loader, which :mod:`kdnb.analysis.bench` reads
instead of guessing a model's kind from the files in its folder (a run saved before manifests
existed gets one when it is next reused).

A computed artefact that is not a model (teacher logits, augmented and transfer sets, POS tags,
the GPT-2 LM, word vectors, probing features and probes, the efficiency table) is an
:class:`Artefact`: kind, path, key and record, with the same ``saved(force)`` / ``finish(...)``
protocol; each one finished or reused is listed in ``<out>/manifest.json`` with its kind and
loader. The stage functions return them with their values (``AugmentResult.artefact``,
``TransferSets.artefacts``, ``ProbingRun.artefacts``). :func:`open_dir` is the one way a
resumable computation claims its folder of partial results (shards). ``python -m kdnb.store --task cola --profile cpu`` (``make inventory``) lists a run's
models and artefacts (:func:`inventory`).

The wall time of every stage that is not one model's training (data preparation, augmentation,
teacher logits, the experiments, probing, each notebook) is logged by the stage function itself
in ``<out>/stage_times.json`` (:func:`record_time`, the decorator :func:`timed`); a model's training time is in
its ``result.json``. :func:`kdnb.report.metrics` builds ``metrics.json`` from these records, so
no notebook keeps books.

Folder layout (``<out>`` = :attr:`kdnb.config.Config.out`): the teacher in ``<out>/teacher``,
students in ``<out>/students/<name>``, the exploration's students in ``<out>/optuna/<name>`` and
``<out>/explore/<name>`` (:func:`run_dir`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pandas as pd

from .config import Config
from .utils import atomic_path, read_json, write_json

KINDS: dict[str, tuple[str, str]] = {  # the loaders' signatures differ: (cfg), (path), (cfg, name)
    "teacher": ("model", "kdnb.models.teacher:load_teacher"),
    "bilstm": ("model.pt", "kdnb.analysis.bench:load_bilstm"),
    "bert_student": ("model.pt", "kdnb.training.bert_student:load_bert_student"),
    "peakd": ("model.pt", "kdnb.training.peakd:load_student"),
}
"""``kind → (the artefact a finished run has, the loader: "module:function")``."""

GROUPS = ("students", "optuna", "explore")
"""The folders under ``<out>`` that hold students: the study's, the optuna trials', the grid's."""

# record keys older result.json files may lack, and what they mean then
_DEFAULTS = {"dev_last": None, "best_epoch": None, "epoch_seconds": None, "method": None,
             "n_params_non_embedding": 0, "assistant_seconds": 0.0, "ptp_counts": None, "ptp_epochs": None}


def run_dir(cfg: Config, name: str, group: str = "students") -> Path:
    """``<out>/teacher`` for the teacher, else ``<out>/<group>/<name>``.

    Raises:
        ValueError: an unknown ``group`` or a ``name`` that is not one folder name.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"a run's name is one folder name, got {name!r}")
    return cfg.out / "teacher" if name == "teacher" else cfg.out / group / name


@dataclass
class RunResult:
    """A finished run: what its ``result.json`` records, its learning curve, where it lives.

    The record's keys read as attributes (``result.dev_score``, ``result.n_params``,
    ``result.method``...); scores are fractions (MCC, accuracy or micro-F1).

    Attributes:
        kind: one of :data:`KINDS`.
        name: the run's folder name (``teacher``, ``bilstm``, ``bert_student-seed43``...).
        dir: its folder.
        record: ``result.json``.
        curve: ``learning_curve.csv`` (one row per evaluation: ``epoch``, ``train_loss``, ``dev_score``...).
        reused: loaded from disk (True) or trained now.
    """

    kind: str
    name: str
    dir: Path
    record: dict
    curve: pd.DataFrame
    reused: bool

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        record = self.__dict__.get("record", {})
        if key in record:
            return record[key]
        if key in _DEFAULTS:
            return _DEFAULTS[key]
        raise AttributeError(f"{self.kind} run {self.name!r} records no {key!r} (result.json keys: "
                             f"{', '.join(sorted(record))})")

    @property
    def model_dir(self) -> Path:
        """The saved model: ``model/`` (teacher, ``save_pretrained``) or ``model.pt`` (students)."""
        return self.dir / KINDS[self.kind][0]


@dataclass
class Run:
    """One trained model in the store, before or after training.

    Attributes:
        kind: one of :data:`KINDS`.
        name: folder name.
        dir: folder (:func:`run_dir`).
        key: what the run's outputs depend on (its parameters, the upstream runs' keys and the
            data's fingerprint); a saved run is reused only under the same key, and a killed run
            resumes only under it (:func:`kdnb.training.fit.fit`'s ``resume_key``).
    """

    kind: str
    name: str
    dir: Path
    key: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def saved(self, force: bool = False) -> Optional[RunResult]:
        """The finished run on disk under this key (None: none, another key, or ``force``)."""
        rec = read_json(self.dir / "result.json")
        if force or not rec or rec.get("config_hash") != self.key or not (self.dir / KINDS[self.kind][0]).exists():
            return None
        if not (self.dir / "manifest.json").is_file():
            self._write_manifest()
        return self._result(rec, reused=True)

    def finish(self, record: dict) -> RunResult:
        """Write ``record`` (with the key as ``config_hash``) as ``result.json`` and the manifest.

        Call it last: the model, curve and predictions must already be in :attr:`dir`.
        """
        record = {"config_hash": self.key, **record}
        write_json(self.dir / "result.json", record)
        self._write_manifest()
        return self._result(record, reused=False)

    def _write_manifest(self) -> None:
        artefact, loader = KINDS[self.kind]
        write_json(self.dir / "manifest.json", {"kind": self.kind, "name": self.name, "key": self.key,
                                                "model": artefact, "loader": loader})

    def _result(self, record: dict, reused: bool) -> RunResult:
        curve = self.dir / "learning_curve.csv"
        return RunResult(self.kind, self.name, self.dir, record,
                         pd.read_csv(curve) if curve.is_file() else pd.DataFrame(), reused)


def manifest(path: Path) -> Optional[dict]:
    """``<path>/manifest.json`` (``kind``, ``name``, ``key``, ``model``, ``loader``), or None."""
    return read_json(path / "manifest.json")


def runs(cfg: Config, group: str = "students", kind: Optional[str] = None) -> list[dict]:
    """The manifests of the runs in ``<out>/<group>/`` (of ``kind`` only, if given), by name."""
    root = cfg.out / group
    found = [manifest(p) for p in sorted(root.glob("*"))] if root.is_dir() else []
    return [m for m in found if m and (kind is None or m["kind"] == kind)]


def record(cfg: Config, name: str = "teacher", group: str = "students") -> dict:
    """The ``result.json`` of run ``name`` (``{}`` when it has not finished): what later stages read
    of an earlier run (the teacher's key for theirs, its dev score for retention)."""
    return read_json(run_dir(cfg, name, group) / "result.json") or {}


def finished(cfg: Config, name: str, kind: str, group: str = "students") -> Optional[RunResult]:
    """The finished run ``name`` on disk, whatever its key (its record and its model are there),
    for the stages that read a model another stage trained; None when it is not."""
    run = Run(kind, name, run_dir(cfg, name, group), key="")
    rec = read_json(run.dir / "result.json")
    return run._result(rec, reused=True) if rec and (run.dir / KINDS[kind][0]).exists() else None


# ---- computed artefacts ---------------------------------------------------------------------

ARTEFACTS: dict[str, str] = {
    "pos_tags": "datasets:load_from_disk",                          # (path)
    "augmented_set": "kdnb.augment.shards:load_augmented",          # (cfg, method)
    "gpt2_model": "kdnb.augment.gpt2:load_gpt2",                    # (cfg)
    "teacher_logits": "datasets:load_from_disk",                    # (path): rows + ``teacher_logits``
    "transfer_set": "kdnb.augment.transfer:load_transfer_set",      # (cfg, name)
    "assistant_logits": "numpy:load",                               # (path)
    "teacher_states": "kdnb.training.peakd:teacher_states",         # (cfg, transfer_set, dev)
    "ptp_model": "torch:load",                                      # (path): the student's BERT state dict
    "word_vectors": "kdnb.models.embeddings:word2vec_embeddings",   # (cfg, transfer_set)
    "probing_features": "kdnb.analysis.probing.encoders:features",  # (cfg, encoder, data)
    "probes": "kdnb.utils:read_json",                               # (path)
    "efficiency": "pandas:read_csv",                                # (path)
}
"""``kind → loader ("module:function")`` of the computed artefacts that are not models; the
comment gives each loader's arguments."""


@dataclass
class Artefact:
    """One computed artefact that is not a model (a labelled transfer set, teacher logits,
    probing features, word vectors, the efficiency table...): its kind, where it lives, what it
    is computed from (its key), reuse and its record.

    The record is a JSON file beside (or inside) the artefact: the key itself (``field`` None) or
    ``{field: key, ...}`` with what the computation adds (``stats``, ``seconds``...). A saved
    artefact is reused only while its record says the same key. Each finished or reused artefact
    is listed in ``<root>/manifest.json`` (``artefacts``: path → kind, record, loader, key), the
    output folder's inventory (:func:`inventory`, ``python -m kdnb.store --task <task>``).

    Attributes:
        kind: one of :data:`ARTEFACTS`.
        path: the artefact (a file or a folder).
        key: what it is computed from (a string or a JSON-able dict).
        record: its record file (default ``<path>.json``: ``transfer/none`` → ``transfer/none.json``).
        field: the record's field holding the key (None: the record is the key).
        root: the output folder whose ``manifest.json`` lists it (:attr:`kdnb.config.Config.out`).
    """

    kind: str
    path: Path
    key: Any
    root: Path
    record: Optional[Path] = None
    field: Optional[str] = None

    def __post_init__(self):
        if self.kind not in ARTEFACTS:
            raise ValueError(f"kind must be one of {', '.join(ARTEFACTS)}, got {self.kind!r}")
        self.path = Path(self.path)
        self.record = Path(self.record) if self.record else self.path.with_name(self.path.name + ".json")

    def saved(self, force: bool = False) -> Optional[dict]:
        """The record of the artefact on disk under this key (None: none, another key, or
        ``force``); listed in the manifest when found (outputs saved before it existed)."""
        rec = read_json(self.record)
        if force or not rec or not self.path.exists() or (rec.get(self.field) if self.field else rec) != self.key:
            return None
        self._register()
        return rec

    def finish(self, extra: Optional[dict] = None) -> dict:
        """Write the record (the key, or ``{field: key, **extra}``) and list the artefact in the
        manifest; returns the record. Call it last: the artefact must be complete on disk."""
        rec = {self.field: self.key, **(extra or {})} if self.field else self.key
        write_json(self.record, rec)
        self._register()
        return rec

    def save_dataset(self, ds, extra: Optional[dict] = None, shards: Optional[Path] = None):
        """Save the ``datasets.Dataset`` ``ds`` at :attr:`path` (Arrow, swapped in whole), then
        :meth:`finish` with ``extra`` and remove the folder of partial ``shards`` it was built
        from, if any. Returns the saved set, memory-mapped."""
        import datasets

        with atomic_path(self.path) as tmp:
            ds.save_to_disk(str(tmp))
        self.finish(extra)
        if shards is not None:
            shutil.rmtree(shards, ignore_errors=True)
        return datasets.load_from_disk(str(self.path))

    def claim(self, force: bool = False) -> None:
        """Claim the folder :attr:`path` for partial results (per-layer features) under this key:
        kept if its record says the same key, else (or with ``force``) emptied first
        (:func:`open_dir`; the record must be ``<path>/meta.json``)."""
        if self.record != self.path / "meta.json":
            raise ValueError(f"{self.path}: a claimed folder keeps its record as meta.json, not {self.record}")
        open_dir(self.path, self.key, force)

    def _register(self) -> None:
        def rel(p: Path) -> str:
            try:
                return str(p.resolve().relative_to(Path(self.root).resolve()))
            except ValueError:
                return str(p.resolve())

        mfile = Path(self.root) / "manifest.json"
        m = read_json(mfile) or {}
        entry = {"kind": self.kind, "record": rel(self.record), "loader": ARTEFACTS[self.kind],
                 "key": self.key if isinstance(self.key, str) else hashlib.sha256(
                     json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:12]}
        arts = m.setdefault("artefacts", {})
        if arts.get(rel(self.path)) != entry:
            arts[rel(self.path)] = entry
            m["artefacts"] = dict(sorted(arts.items()))
            write_json(mfile, m)


def artefacts(cfg: Config, kind: Optional[str] = None) -> dict[str, dict]:
    """The artefacts ``<out>/manifest.json`` lists (of ``kind`` only, if given) that are still on
    disk: ``path relative to <out> → {kind, record, loader, key}``."""
    listed = (read_json(cfg.out / "manifest.json") or {}).get("artefacts", {})
    return {p: e for p, e in listed.items()
            if (kind is None or e["kind"] == kind) and (cfg.out / p).exists()}


def open_dir(root: Path, meta: Any, force: bool = False) -> None:
    """Claim ``root`` for the partial results of a resumable computation (shards, per-layer
    features) made from ``meta``: kept if its ``meta.json`` says the same, else (or with
    ``force``) emptied first; then ``meta.json`` is written."""
    if root.exists() and (force or read_json(root / "meta.json") != meta):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "meta.json", meta)


# ---- stage times ----------------------------------------------------------------------------

def times_path(cfg: Config) -> Path:
    """``<out>/stage_times.json``: ``{stage: seconds}`` in the order the stages first ran."""
    return cfg.out / "stage_times.json"


def stage_times(cfg: Config) -> dict[str, float]:
    """The logged wall times (seconds) of this run's stages (``{}`` before any)."""
    return read_json(times_path(cfg)) or {}


def record_time(cfg: Config, stage: str, seconds: float, reused: bool = False) -> None:
    """Log the wall time (seconds, rounded to 0.01) of ``stage``. ``reused``: the stage only
    loaded saved outputs, so the time of the run that made them, if logged, is kept."""
    times = stage_times(cfg)
    if reused and stage in times:
        return
    times[stage] = round(float(seconds), 2)
    write_json(times_path(cfg), times)


F = TypeVar("F", bound=Callable[..., Any])


def timed(stage: str) -> Callable[[F], F]:
    """Decorate a stage function ``f(cfg, ...)``: each call that returns logs its wall time as
    ``stage`` (:func:`record_time`) in ``cfg``'s run; a result whose ``reused`` is true (it
    only loaded saved outputs) keeps the time of the run that made them."""
    def wrap(f: F) -> F:
        @functools.wraps(f)
        def run(cfg: Config, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = f(cfg, *args, **kwargs)
            record_time(cfg, stage, time.perf_counter() - t0, reused=bool(getattr(out, "reused", False)))
            return out
        return typing.cast(F, run)
    return wrap


# ---- inventory ------------------------------------------------------------------------------

def inventory(cfg: Config) -> pd.DataFrame:
    """What ``<out>`` holds: one row per trained model (its manifest and ``result.json``) and per
    listed artefact, with ``what`` (``model``/``artefact``), ``kind``, ``path`` (relative to
    ``<out>``), ``key``, ``loader`` and, for models, ``dev_score`` (fraction) and ``seconds``."""
    rows = []
    for path in [cfg.out / "teacher"] + [p for g in GROUPS for p in sorted((cfg.out / g).glob("*"))]:
        m = manifest(path)
        if m:
            rec = read_json(path / "result.json") or {}
            rows.append({"what": "model", "kind": m["kind"], "path": str(path.relative_to(cfg.out)), "key": m["key"],
                         "loader": m["loader"], "dev_score": rec.get("dev_score"), "seconds": rec.get("seconds")})
    for p, e in artefacts(cfg).items():
        rows.append({"what": "artefact", "kind": e["kind"], "path": p, "key": e["key"], "loader": e["loader"]})
    return pd.DataFrame(rows, columns=["what", "kind", "path", "key", "dev_score", "seconds", "loader"])


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m kdnb.store --task cola --profile cpu`` (``make inventory``): print
    :func:`inventory` of that run's output folder."""
    import argparse

    from .config import load_config

    ap = argparse.ArgumentParser(prog="python -m kdnb.store", description="list the models and artefacts of a run")
    ap.add_argument("--task", required=True)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_config(args.task, args.profile, data_dir=args.data_dir)
    inv = inventory(cfg)
    print(f"{cfg.out}: models {int((inv['what'] == 'model').sum())}, artefacts {int((inv['what'] == 'artefact').sum())}")
    if len(inv):
        inv["dev_score"] = (100 * inv["dev_score"].astype(float)).round(1)
        inv["seconds"] = inv["seconds"].astype(float).round(1)
        inv["key"] = inv["key"].str[:16]  # enough to tell runs apart; the manifests hold the whole key
        print(inv.rename(columns={"dev_score": "dev (%)"}).to_string(index=False, na_rep=""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
