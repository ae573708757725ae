"""Run the study's stages in order with papermill: ``python -m kdnb.pipeline --task cola``.

The stages and their notebooks are declared once in :mod:`kdnb.stages`. Before any notebook
runs, the merged parameters are validated and the task's data files are read once, so a bad
parameter, an unknown task or stage, a missing data directory, a corrupted TSV line, or (with
``--only``) a missing product of an earlier stage stops the run with a one-paragraph message and
exit status 2, before anything is written. Each notebook is executed into a temporary file and
renamed into ``outputs/<task>/notebooks/`` only when it succeeds; a failing notebook stops the
run with exit status 1 and is kept outside ``outputs/`` for inspection. After each stage its
wall time is logged (:func:`kdnb.store.record_time`) and ``metrics.json`` is rewritten from the
run store (:func:`kdnb.report.write_metrics`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from .config import load_config
from .data import load_task
from .errors import ConfigError, KdnbError
from .report import write_html_report, write_metrics
from .stages import NOTEBOOKS_DIR, Stage, missing_inputs, needed, select
from .store import record_time
from .utils import PROGRESS_ENV, atomic_path, get_logger

KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
"""Arguments of every notebook kernel: its own log stays quiet — not ipykernel's warning that the
kernel talks to papermill over local TCP without encryption (once per notebook), nor its error
"KeyboardInterrupt caught in kernel." when jupyter_client's shutdown, which interrupts the
kernel first, meets it still handling a message (seen on a loaded machine). A cell's error
reaches papermill through the notebook, not through this log."""


def notebooks(only: Optional[Sequence[str]] = None) -> list[Path]:
    """The stages' notebooks (:data:`kdnb.stages.STAGES`) in run order, optionally only those of
    the stages named in ``only`` (name, number or notebook)."""
    return [s.path for s in select(only)]


def strip_progress(nb) -> int:
    """Drop progress-bar updates and tqdm's "IProgress not found" warning from the stderr outputs
    of an executed notebook (an ``nbformat`` node, changed in place): a progress bar redraws
    itself with carriage returns, so every stderr line holding a ``\r`` is an update (a CoLA
    report's notebook 04 held ≈ 3,000 of them). Other stderr text (warnings, logs) stays; an
    output left empty is removed.

    Returns:
        The number of outputs removed.
    """
    removed = 0
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept_outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines, skip_import = [], False
                for line in out.get("text", "").split("\n"):
                    if skip_import and line.lstrip().startswith("from .autonotebook import"):
                        skip_import = False
                        continue
                    skip_import = "TqdmWarning: IProgress not found" in line
                    if skip_import or "\r" in line:
                        continue
                    lines.append(line)
                text = "\n".join(lines)
                if not text.strip():
                    removed += 1
                    continue
                out["text"] = text
            kept_outputs.append(out)
        cell["outputs"] = kept_outputs
    return removed


def run(task: str, profile: str = "cpu", data_dir: Optional[str] = None, force: bool = False,
        only: Optional[Sequence[str]] = None, overrides: Optional[dict] = None, quiet: bool = False) -> Path:
    """Validate, then execute the stages for ``task`` × ``profile``; return the output dir.

    Logs each stage as it starts and its wall time when done; the long loops inside draw
    progress bars with ETA on this process's terminal (:func:`kdnb.utils.tqdm`; ``quiet``: none).

    Raises:
        KdnbError: bad parameters or data, an unknown stage, or a stage run alone (``only``)
            whose inputs are missing (nothing has been written yet).
        StageFailed: a notebook raised (its outputs are not written).
    """
    import nbformat
    import papermill as pm

    log = get_logger()
    cfg = load_config(task, profile, data_dir=data_dir, overrides=overrides)
    load_task(cfg.task, cfg.data_path)  # fail fast on bad data, before any output exists
    stages = select(only)
    _check_inputs(stages, cfg)
    # every notebook reads these merged parameters (not its own merge of task × profile)
    params = {"task": task, "profile": profile, "force": force, "config": str(cfg.save())}
    out_dir = cfg.out / "notebooks"
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "off" if quiet else "terminal"  # inherited by the notebooks' kernels
    try:
        for i, stage in enumerate(stages, 1):
            nb = stage.path
            log.info(f"{task}/{profile}: stage {i}/{len(stages)} {stage.name} ({nb.name}): {stage.summary}")
            t0 = time.perf_counter()
            scratch = Path(tempfile.mkdtemp(prefix="kdnb-"))
            executed = scratch / nb.name
            try:
                pm.execute_notebook(str(nb), str(executed), parameters=params, cwd=str(NOTEBOOKS_DIR),
                                    kernel_name="python3", progress_bar=False, extra_arguments=KERNEL_ARGS)
            except pm.PapermillExecutionError as e:
                raise StageFailed(nb.name, executed, f"{e.ename}: {e.evalue}") from None
            done = nbformat.read(executed, as_version=4)
            strip_progress(done)  # the terminal showed the bars; the stored notebook keeps results
            with atomic_path(out_dir / nb.name) as tmp:
                nbformat.write(done, str(tmp))
            shutil.rmtree(scratch, ignore_errors=True)
            seconds = time.perf_counter() - t0
            record_time(cfg, f"notebook {nb.stem}", seconds)
            write_metrics(cfg)  # metrics.json from the store, after every stage
            log.info(f"{task}/{profile}: stage {stage.name} done in {seconds / 60:.1f} min")
    finally:  # this process (e.g. a test) keeps its own setting
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous
    log.info(f"report: {write_html_report(cfg)}")
    return cfg.out


def _check_inputs(stages: Sequence[Stage], cfg) -> None:
    """Raise :class:`KdnbError` when a stage reads products that neither exist under ``cfg.out``
    nor come from a stage run before it now (``--only`` on a fresh output folder); the message
    names every stage to add, those that the missing stages need in turn included."""
    task, profile = cfg.task, cfg.profile
    for i, stage in enumerate(stages):
        missing = missing_inputs(stage, cfg.out, stages[:i], cfg)
        if missing:
            direct = [s.name for s in select() if s.name in {m.name for m, _ in missing}]
            add = {s.name for s in needed(stage, cfg.out, stages[:i], cfg)}
            run = [s.name for s in select() if s.name in add or s in stages]
            raise KdnbError(
                f"stage '{stage.name}' reads what stage(s) {', '.join(direct)} write, and "
                f"{', '.join(str(p) for _, p in missing)} {'is' if len(missing) == 1 else 'are'} missing: run "
                f"{'them' if len(add) > 1 else 'it'} too (python -m kdnb.pipeline --task {task} --profile {profile} "
                f"--only {' '.join(run)}), or the whole report (make report TASK={task} PROFILE={profile}).")


def parse_overrides(items: Sequence[str]) -> dict:
    """``["teacher.epochs=1", "bilstm.loss=kl"]`` → ``{"teacher.epochs": 1, "bilstm.loss": "kl"}``.

    Raises:
        ConfigError: an item without ``=``.
    """
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. teacher.epochs=1.")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item!r}: no key before '=' (expected KEY=VALUE, e.g. teacher.epochs=1).")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: key '{key.strip()}': the value is not valid YAML ({e}).") from None
    return out


class StageFailed(Exception):
    """A notebook raised; ``executed`` is its partly executed copy (outside ``outputs/``)."""

    def __init__(self, name: str, executed: Path, error: str):
        super().__init__(f"notebook {name} failed with {error}")
        self.name, self.executed, self.error = name, executed, error


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdnb.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True, help="cola, sst2, sara, rte (a file params/<task>.yaml)")
    ap.add_argument("--profile", default="cpu", help="cpu (default), smoke or thesis (params/profiles/)")
    ap.add_argument("--data-dir", default=None, help="folder with the data sets (default: params' data_dir)")
    ap.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these stages, by name or number (e.g. teacher students, or 03 04); see make stages")
    ap.add_argument("--quiet", action="store_true", help="no progress bars (each notebook's start and time still)")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="override parameters, e.g. --set teacher.epochs=1 bilstm.loss=kl (values in YAML)")
    args = ap.parse_args(argv)
    try:
        out = run(args.task, args.profile, args.data_dir, args.force, args.only, parse_overrides(args.set),
                  quiet=args.quiet)
    except KdnbError as e:
        print(f"kdnb: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"kdnb: error: {e}. The failed stage wrote nothing under outputs/ (earlier stages' "
              f"outputs are kept and reused on the next run); its executed notebook, with the full "
              f"traceback, is at {e.executed}.", file=sys.stderr)
        return 1
    get_logger().info(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
