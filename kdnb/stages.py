"""The study's stages, declared once: the notebook each one runs, the stages it reads from and
what it writes under ``outputs/<task>/``.

:mod:`kdnb.pipeline` runs them in this order (``--only`` takes a stage's name, number or
notebook), checks before a stage runs alone that what it reads exists, and prints each stage as
it starts and its time; ``make stages`` prints this table (``python -m kdnb.stages``).

=========  ===================  =================================================================
stage      notebook             reads → writes
=========  ===================  =================================================================
data       01_data_prep         ``<data_dir>/<task>`` → split statistics, class balance
augment    02_augmentation      training set → augmented sentences (rules, GPT-2; Arrow shards)
teacher    03_teacher           training set, augmented sentences → fine-tuned teacher, transfer
                                set(s) labelled with its logits
students   04_students          teacher, transfer set → BiLSTM and BERT students, experiments
probing    05_probing           teacher, students → SentEval probing scores per layer
analysis   06_analysis          teacher, students → results, runtimes, predictions, efficiency
=========  ===================  =================================================================
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .errors import KdnbError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class Stage:
    """One stage of the study.

    Attributes:
        name: short name (``teacher``); ``number`` and ``notebook`` follow from the order.
        notebook: the notebook's stem (``03_teacher``) in ``notebooks/``.
        summary: what it does, one line.
        reads: the earlier stages whose products it cannot run without, whatever the profile
            (the students that probing and the analysis find depend on the parameters; their
            absence is reported where they are read).
        reads_when: ``(stage, predicate)`` pairs: stages it reads under the parameters for which
            ``predicate(cfg)`` (a :class:`kdnb.config.Config`) is true — the teacher reads notebook
            02's sentences when its transfer sets hold augmented ones.
        products: paths under ``outputs/<task>/`` every run of the stage writes (others depend
            on the profile: ablations, probing, optuna); a stage run alone checks that the
            products of the stages it reads exist.
    """

    name: str
    notebook: str
    summary: str
    reads: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    reads_when: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    def reads_under(self, cfg: Any = None) -> tuple[str, ...]:
        """:attr:`reads`, plus the stages of :attr:`reads_when` whose predicate holds for ``cfg``
        (none without ``cfg``)."""
        return self.reads + tuple(r for r, when in self.reads_when if cfg is not None and when(cfg))

    @property
    def number(self) -> str:
        return self.notebook[:2]

    @property
    def path(self) -> Path:
        return NOTEBOOKS_DIR / f"{self.notebook}.ipynb"


def _augments(cfg: Any) -> bool:
    """True when a transfer set the run labels holds notebook 02's sentences."""
    from .augment import methods_needed

    return bool(methods_needed(cfg))


STAGES: tuple[Stage, ...] = (
    Stage("data", "01_data_prep", "TSVs → DatasetDict; split statistics, class balance, lengths",
          products=("data_stats.csv", "class_balance.csv")),
    Stage("augment", "02_augmentation", "new sentences: rule-based (Tang et al. 2019) and GPT-2 (Sučík 2020)",
          products=("augmentation_lengths.csv",)),
    Stage("teacher", "03_teacher", "fine-tune the teacher; label the transfer set(s) with its logits",
          reads_when=(("augment", _augments),),
          products=("teacher/result.json", "teacher/model", "teacher_confidence_by_source.csv")),
    Stage("students", "04_students", "distil the BiLSTM and BERT students; ablations (transfer set, KD loss, Pea-KD)",
          reads=("teacher",), products=("students",)),
    Stage("probing", "05_probing", "SentEval probing tasks per layer of the teacher and the students",
          reads=("teacher",)),
    Stage("analysis", "06_analysis", "results, runtimes, predictions compared, efficiency, size maps",
          reads=("teacher",), products=("results.csv", "runtimes.csv", "mistake_classes.csv")),
)


def stage(key: str) -> Stage:
    """The stage named ``key``: its name (``teacher``), number (``03``) or notebook (``03_teacher``).

    Raises:
        KdnbError: no such stage (the message lists them).
    """
    for s in STAGES:
        if key in (s.name, s.number, s.notebook, f"{s.notebook}.ipynb"):
            return s
    raise KdnbError(f"unknown stage {key!r}; the stages are " +
                    ", ".join(f"{s.number} {s.name}" for s in STAGES) + " (name, number or notebook).")


def select(only: Optional[Sequence[str]] = None) -> list[Stage]:
    """The stages to run, in the declared order: all, or those named in ``only``.

    Raises:
        KdnbError: an unknown name in ``only``.
    """
    if not only:
        return list(STAGES)
    chosen = {stage(k).name for k in only}
    return [s for s in STAGES if s.name in chosen]


def missing_inputs(s: Stage, out: Path, running: Sequence[Stage] = (), cfg: Any = None) -> list[tuple[Stage, Path]]:
    """The products of the stages ``s`` reads (:meth:`Stage.reads_under` ``cfg``) that are not
    under ``out`` and that no stage in ``running`` (those run before it now) will write:
    ``(stage, path)`` pairs."""
    by_name = {x.name: x for x in STAGES}
    now = {x.name for x in running}
    return [(by_name[r], out / p) for r in s.reads_under(cfg) if r not in now
            for p in by_name[r].products if not (out / p).exists()]


def needed(s: Stage, out: Path, running: Sequence[Stage] = (), cfg: Any = None) -> list[Stage]:
    """The stages to run before ``s`` on ``out``: those whose products it misses
    (:func:`missing_inputs`) and, in turn, those whose products they miss; in run order."""
    found: dict[str, Stage] = {}
    todo = [x for x, _ in missing_inputs(s, out, running, cfg)]
    while todo:
        x = todo.pop()
        if x.name not in found:
            found[x.name] = x
            todo += [y for y, _ in missing_inputs(x, out, running, cfg)]
    return [x for x in STAGES if x.name in found]


def table() -> str:
    """The stages as a text table (``make stages``)."""
    rows = [f"  {s.number} {s.name:<9} {s.notebook + '.ipynb':<22} {s.summary}" +
            (f"\n  {'':<12} reads: {', '.join(s.reads)}" if s.reads else "") +
            (f"\n  {'':<12} writes: {', '.join(s.products)}" if s.products else "")
            for s in STAGES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
    sys.exit(0)
