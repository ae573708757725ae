"""Shared fixtures: a smoke-profile config writing into a temp dir, small data dirs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kdnb.config import PROJECT_ROOT, load_config  # noqa: E402

SHARED_DATA = (PROJECT_ROOT / "../shared/data").resolve()


@pytest.fixture
def one_thread():
    """Identical float results need the same number of intra-op threads in every run."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def smoke_cfg(tmp_path):
    """The smoke profile for CoLA, writing outputs and figures under ``tmp_path``."""
    return load_config("cola", "smoke", overrides={"output_dir": str(tmp_path / "out"),
                                                    "figures_dir": str(tmp_path / "fig")})


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """A writable copy of the shared data sets (CoLA, SST-2, Sara, RTE) to corrupt in tests."""
    dst = tmp_path / "data"
    for task in ("cola", "sst2", "sara", "rte"):
        shutil.copytree(SHARED_DATA / task, dst / task)
        for f in (dst / task).iterdir():
            f.chmod(0o644)
    return dst


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_run(cfg, name: str, kind: str, **record):
    """A finished run of the store without training: its model file (empty) and ``result.json``
    (``record``; scores and sizes default to 0), what :func:`kdnb.report.metrics` reads."""
    from kdnb import store

    run = store.Run(kind, name, store.run_dir(cfg, name), key="fake")
    run.dir.mkdir(parents=True, exist_ok=True)
    (run.dir / store.KINDS[kind][0]).touch()
    return run.finish({"dev_score": 0.0, "test_score": None, "n_params": 0, "seconds": 0.0, **record})
