"""The notebooks stay paired, thin and parameterised, and nbval catches a changed output."""

import os
import re
import subprocess
import sys

import nbformat
import pytest

from kdnb.config import PROJECT_ROOT
from kdnb.pipeline import NOTEBOOKS_DIR, notebooks
from kdnb.stages import STAGES
from kdnb.store_notebooks import QUIET

NOTEBOOKS = notebooks()


def test_numbering_and_pairs():
    stems = [nb.stem for nb in NOTEBOOKS]
    assert stems[0] == "01_data_prep" and "03_teacher" in stems and "04_students" in stems
    assert stems == sorted(stems)
    for nb in NOTEBOOKS:
        assert nb.with_suffix(".py").exists(), f"{nb.name} has no jupytext .py pair"
    # every numbered notebook is a declared stage (kdnb.stages), and every stage's notebook exists
    assert sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")) == NOTEBOOKS
    assert [s.number for s in STAGES] == [nb.stem[:2] for nb in NOTEBOOKS]


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


SANITIZE = NOTEBOOKS_DIR / "nbval_sanitize.cfg"


def _start_nbval(nb_path, threads=None):
    env = {**os.environ, **QUIET}  # as `make test` runs nbval
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    # -vv: nbval's diff of a checked cell in full (pytest cuts long assertion diffs otherwise)
    return subprocess.Popen([sys.executable, "-m", "pytest", "-vv", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-sanitize-with", str(SANITIZE), str(nb_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=nb_path.parent, env=env)


def _run_nbval(*nb_paths) -> list[subprocess.CompletedProcess]:
    """nbval on each notebook, side by side (one thread each when more than one); one completed
    process (``returncode``, ``stdout`` with stderr) per notebook, in order."""
    procs = [_start_nbval(p, threads=1 if len(nb_paths) > 1 else None) for p in nb_paths]
    outputs = [p.communicate(timeout=600)[0] for p in procs]  # waits: returncode is set after this
    return [subprocess.CompletedProcess(p.args, p.returncode, out) for p, out in zip(procs, outputs)]


def _with_overrides(name, tmp_path, **extra):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = {"output_dir": str(tmp_path / "out"), "figures_dir": str(tmp_path / "fig"), **extra}
    params.source = params.source.replace("overrides = {}", f"overrides = {out!r}")  # a Python literal (False, not false)
    return nb


def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    good = tmp_path / "good.ipynb"
    nbformat.write(_with_overrides("01_data_prep.ipynb", tmp_path / "good"), good)
    nb = _with_overrides("01_data_prep.ipynb", tmp_path / "bad")  # its own output folder: both run at once
    checked = next(c for c in nb.cells if c.source.startswith("# NBVAL_CHECK_OUTPUT"))
    stream = next(o for o in checked.outputs if o.output_type == "stream")
    assert "67349" in stream.text  # SST-2's training sentences
    stream.text = stream.text.replace("67349", "67348")
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)

    ok, broken = _run_nbval(good, bad)
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert broken.returncode == 1 and "67348" in broken.stdout


def test_the_makefile_replays_with_the_sanitizers_into_a_fresh_output_folder():
    make = (PROJECT_ROOT / "Makefile").read_text()
    assert "--nbval-sanitize-with notebooks/nbval_sanitize.cfg" in make and "rm -rf $(SMOKE_OUT)" in make
    dry = subprocess.run(["make", "-n", "test", "PY=python"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    from kdnb.store_notebooks import smoke_task

    assert f"rm -rf outputs/{smoke_task()}-smoke" in dry.stdout, dry.stdout


def test_the_sanitizers_keep_one_decimal_and_drop_progress_bars():
    from nbval.plugin import get_sanitize_patterns  # as nbval reads the file

    patterns = get_sanitize_patterns(SANITIZE.read_text())
    assert len(patterns) == 3
    text = "dev accuracy: 81.34 %\ntrain_loss 0.69312\nteacher 100%|#####| 3/3 [00:01<00:00, 2.1it/s]\n"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    assert text == "dev accuracy: 81.3 %\ntrain_loss 0.6\nPROGRESS-BAR\n"


def test_nbval_fails_when_the_teacher_does_not_learn(tmp_path):
    """The learning mutation: the stored 03_teacher pins a teacher above the majority class; with
    a learning rate of 1e-12 (no learning) its checked cell differs and nbval fails."""
    # no augmented sets in the fresh output folder: label the training set only, and one epoch (the
    # transfer-set and curve cells then differ too, but raise nothing, so the learning table is compared)
    # and 64 training sentences (4 steps): the learning table still compares the teacher with the majority class
    nb = _with_overrides("03_teacher.ipynb", tmp_path, **{"teacher.learning_rate": 1e-12, "teacher.epochs": 1,
                                                          "train_limit": 64, "augment.transfer_set": "none",
                                                          "augment.ablation": False})
    checked = [c for c in nb.cells if c.source.startswith("# NBVAL_CHECK_OUTPUT") and "learning_table" in c.source]
    assert checked and "True" in checked[0].outputs[0].text, "the stored teacher must have learned"
    bad = tmp_path / "03_no_learning.ipynb"
    nbformat.write(nb, bad)
    (broken,) = _run_nbval(bad)
    assert broken.returncode == 1
    # the checked teacher cells are among what fails: the learning table's and the dev score's
    assert "learning_table" in broken.stdout and "Cell execution caused an exception" not in broken.stdout, \
        broken.stdout[-3000:]
    # nbval's diff line of the learning table: the replay's teacher row says learned = False
    assert re.search(r"^\s*[-+] teacher +\S+ +\S+ +False\b", broken.stdout, re.M), broken.stdout[-3000:]


def test_the_stored_students_notebook_pins_three_models_that_learned():
    """What nbval compares in 04_students: the teacher, the BiLSTM and the BERT student each above
    the majority class by kdnb.analysis.learning.MARGIN and following the teacher (a stored run in which
    one of them predicts the majority class would make the replay blind to its loss)."""
    nb = nbformat.read(NOTEBOOKS_DIR / "04_students.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("# NBVAL_CHECK_OUTPUT") and "learning_table" in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}
    assert {"teacher", "bilstm", "bert_student"} <= set(rows), text
    for model in ("teacher", "bilstm", "bert_student"):
        score, majority, learned, *_, follows = rows[model][1:]
        assert learned == "True" and follows == "True" and float(score) > float(majority), rows[model]
