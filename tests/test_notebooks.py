"""The notebooks stay paired, thin and parameterised, and nbval catches a changed output."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

from kdnb.config import PROJECT_ROOT
from kdnb.pipeline import NOTEBOOKS_DIR, notebooks
from kdnb.store_notebooks import QUIET

NOTEBOOKS = notebooks()


def test_numbering_and_pairs():
    stems = [nb.stem for nb in NOTEBOOKS]
    assert stems[0] == "01_data_prep" and "03_teacher" in stems and "04_students" in stems
    assert stems == sorted(stems)
    for nb in NOTEBOOKS:
        assert nb.with_suffix(".py").exists(), f"{nb.name} has no jupytext .py pair"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_is_in_sync_with_its_py_and_carries_smoke_outputs(path):
    import jupytext

    stored = nbformat.read(path, as_version=4)
    paired = jupytext.read(path.with_suffix(".py"))
    src = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]  # noqa: E731
    assert src(stored) == src(paired), f"{path.name} differs from its .py: run `make notebooks`"
    params = [c for c in stored.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'profile = "smoke"' in params[0].source
    checked = [c for c in stored.cells if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked and all(c.outputs for c in checked), f"{path.name}: checked cells must carry stored outputs"


def _run_nbval(nb_path):
    env = {**os.environ, **QUIET}  # as `make test` runs nbval
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(nb_path)], capture_output=True, text=True, cwd=nb_path.parent, timeout=600, env=env)


def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    nb = nbformat.read(NOTEBOOKS_DIR / "01_data_prep.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = {"output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "fig")}
    params.source = params.source.replace("overrides = {}", f"overrides = {json.dumps(out)}")
    good = tmp_path / "good.ipynb"
    nbformat.write(nb, good)
    checked = next(c for c in nb.cells if c.source.startswith("# NBVAL_CHECK_OUTPUT"))
    stream = next(o for o in checked.outputs if o.output_type == "stream")
    assert "8551" in stream.text
    stream.text = stream.text.replace("8551", "8552")
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)

    ok = _run_nbval(good)
    assert ok.returncode == 0, ok.stdout[-2000:]
    broken = _run_nbval(bad)
    assert broken.returncode == 1 and "8552" in broken.stdout
