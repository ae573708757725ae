"""kdnb.utils.atomic_path: a directory is swapped in by rename-aside, replace, delete, so a kill
at any point leaves a complete version, and readers (fit's resume) recover the old one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from kdnb.config import PROJECT_ROOT
from kdnb.utils import atomic_path, recover_path

from .test_distill import _fit


def _write_dir(path, text):
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "f.txt").write_text(text)


def test_a_directory_is_replaced_and_nothing_is_left_beside_it(tmp_path):
    _write_dir(tmp_path / "d", "one")
    _write_dir(tmp_path / "d", "two")
    assert (tmp_path / "d" / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_an_error_in_the_block_keeps_the_old_directory(tmp_path):
    _write_dir(tmp_path / "d", "one")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "d") as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "d" / "f.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


_KILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, signal, sys
    from kdnb import utils
    real, calls = os.replace, []
    def replace(a, b):          # SIGKILL right after the old directory was renamed aside
        real(a, b)
        calls.append(b)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    utils.os.replace = replace
    with utils.atomic_path(sys.argv[1]) as tmp:
        tmp.mkdir()
        (tmp / "f.txt").write_text("two")
""")


def test_a_kill_between_the_two_renames_leaves_the_old_directory_recoverable(tmp_path):
    d = tmp_path / "d"
    _write_dir(d, "one")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, str(d)], env=env, capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert not d.exists() and (tmp_path / ".d.old" / "f.txt").read_text() == "one"
    assert recover_path(d) == d and (d / "f.txt").read_text() == "one"
    _write_dir(d, "three")  # the next swap works as usual
    assert (d / "f.txt").read_text() == "three" and not (tmp_path / ".d.old").exists()


def test_a_file_is_replaced_in_one_rename(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("old")
    renames = []
    real = os.replace
    with atomic_path(f) as tmp:
        tmp.write_text("new")
        os.replace = lambda a, b: renames.append((a, b)) or real(a, b)
    os.replace = real
    assert f.read_text() == "new" and renames == [(tmp, f)]


def test_fit_resumes_from_a_checkpoint_whose_swap_was_killed(tmp_path, one_thread):
    whole, w_whole = _fit(tmp_path / "whole", save_steps=5)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", save_steps=5, die_at=15)
    ckpt = tmp_path / "killed"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    os.replace(ckpt, tmp_path / ".killed.old")  # what a kill between the renames of the next save leaves
    (tmp_path / ".killed.x.tmp").mkdir()         # and the unfinished new checkpoint
    resumed, w_resumed = _fit(ckpt, save_steps=5)
    assert (resumed.resumed_epochs, resumed.resumed_batches) == (state["epochs_done"], state["batches_done"]) == (1, 1)
    assert resumed.curve == whole.curve
    assert all(a.equal(b) for a, b in zip(w_whole, w_resumed))


def test_progress_bars_go_to_the_terminal_under_the_pipeline_and_off_when_quiet(monkeypatch):
    import sys

    import tqdm.auto
    import tqdm.std

    from kdnb import utils

    monkeypatch.setenv("TQDM_DISABLE", "0")
    monkeypatch.setenv(utils.PROGRESS_ENV, "terminal")  # what kdnb.pipeline sets for the kernels
    bar = utils.tqdm(range(3), desc="x")
    assert type(bar) is tqdm.std.tqdm and bar.mininterval == 1.0 and not bar.disable
    assert getattr(bar.fp, "_wrapped", bar.fp) is sys.__stderr__  # the kernel's own stderr, not the notebook's
    assert list(bar) == [0, 1, 2]
    monkeypatch.setenv(utils.PROGRESS_ENV, "off")                # --quiet / QUIET=1
    assert utils.tqdm(range(3)).disable
    monkeypatch.delenv(utils.PROGRESS_ENV)                       # JupyterLab, scripts
    assert isinstance(utils.tqdm(range(3), disable=True), tqdm.auto.tqdm)
