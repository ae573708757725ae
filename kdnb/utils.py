"""Small shared helpers: atomic writes, seeding, timing, JSON records."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs) for a reproducible run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _aside(path: Path) -> Path:
    """Where :func:`atomic_path` keeps the old version of a directory while it swaps in the new one."""
    return path.parent / f".{path.name}.old"


def recover_path(path: str | os.PathLike) -> Path:
    """Undo a swap of :func:`atomic_path` that a kill interrupted between its two renames.

    If ``path`` is missing but its old version was renamed aside, rename it back: the previous
    (complete) version is usable again. Readers of directories written with ``atomic_path``
    (checkpoints) call this before they look at ``path``. Returns ``path``.
    """
    path = Path(path)
    old = _aside(path)
    if not path.exists() and not path.is_symlink() and old.exists():
        os.replace(old, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Works for files and directories: write everything to the yielded path; if the block
    raises, the temporary is removed and ``path`` is left as it was (no half-written output).
    A file is swapped in by one ``os.replace``. A directory cannot be replaced by one rename,
    so the old one is first renamed aside (``.<name>.old``), the new one renamed into place,
    and only then the old one deleted: a kill at any point leaves either the old or the new
    directory complete, and :func:`recover_path` puts the old one back if the kill fell
    between the two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()  # the caller creates a file or a directory here
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = _aside(path)
            if old.exists():  # left by a kill after an earlier swap: path is the newer, complete one
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            recover_path(path)
            if path.is_dir() and not path.is_symlink():  # the recovered old directory
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read JSON from ``path``; return ``default`` if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Timer:
    """Context manager measuring wall time in seconds (``.seconds`` after the block)."""

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def elapsed(self) -> float:
        """Seconds since the block was entered (while it runs)."""
        return time.perf_counter() - self._t0

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


PROGRESS_ENV = "KDNB_PROGRESS"  # "terminal" (set by kdnb.pipeline), "off" (its --quiet) or unset


def tqdm(*args, **kwargs):
    """A progress bar for kdnb's long loops (training, sampling, logits, probing): ``tqdm``'s,
    drawn where the user watches.

    * ``KDNB_PROGRESS=terminal`` (``python -m kdnb.pipeline`` / ``make report`` sets it for the
      notebooks' kernels): a text bar with rate and ETA on the kernel's own stderr — the terminal
      the pipeline runs in (ipykernel echoes it there; :func:`kdnb.pipeline.strip_progress` then
      keeps it out of the executed notebook), redrawn at most once a second;
    * ``KDNB_PROGRESS=off`` (``--quiet`` / ``QUIET=1``): no bar;
    * unset (JupyterLab, scripts): ``tqdm.auto``'s (a widget where ipywidgets is installed).

    Arguments are ``tqdm``'s.
    """
    mode = os.environ.get(PROGRESS_ENV, "")
    if mode == "off":
        kwargs["disable"] = True
    if mode == "terminal":
        from tqdm.std import tqdm as text_bar

        kwargs.setdefault("file", sys.__stderr__ or sys.stderr)
        kwargs.setdefault("mininterval", 1.0)
        return text_bar(*args, **kwargs)
    from tqdm.auto import tqdm as auto_bar

    return auto_bar(*args, **kwargs)


class _CurrentStdout(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is when a record is emitted (a notebook
    kernel's, a test's captured one), not to the one it was created with."""

    @property
    def stream(self):  # noqa: D401
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler sets it; the current one is used
        pass


def get_logger() -> logging.Logger:
    """kdnb's logger (``logging.getLogger("kdnb")``): INFO and above on the current stdout as
    ``[kdnb] message`` (``[kdnb] warning: …`` for warnings), set up once. Stage starts and times,
    resumed checkpoints and CUDA-graph reports go through it; change its level with
    ``logging.getLogger("kdnb").setLevel(...)``."""
    log = logging.getLogger("kdnb")
    if not any(isinstance(h, _CurrentStdout) for h in log.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(_Format())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"[kdnb] {level}{record.getMessage()}"
