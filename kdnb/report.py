"""The run's record (``<out>/metrics.json``), the thesis reference numbers, tables and figures.

``metrics.json`` holds, per model, its parameter count, dev score, test score (where the test
set is labelled) and retention (student dev score / teacher dev score), plus the wall time of
each stage in seconds. It is built from the run store (:func:`metrics`: the models' ``result.json``
and the logged stage times, :mod:`kdnb.store`) and rewritten after every stage; no notebook
records anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from . import store
from .config import Config
from .data import task_spec
from .utils import atomic_path, get_logger, write_json

# Sučík (2020), "Learning small sentence classifiers from BERT using teacher-student knowledge
# distillation" (MInf Project (Part 2) Report, University of Edinburgh; repository
# samsucik/knowledge-distil-bert). Scores in % (CoLA MCC, SST-2 accuracy, Sara micro-F1);
# "params_m": millions of parameters as the thesis counts them — BERT-large teacher: all 340M;
# students: trainable non-embedding parameters. Every number names the version of the thesis it
# comes from (THESIS_VERSIONS):
#   [T]  teacher dev/test: ../shared/data/README.md ("Reference results on these splits"), the
#        published report's numbers.
#   [S]  student dev scores: the repository's draft analysis, experiments/analysis/General
#        plotting.ipynb, dict `best_model_scores` (commit e1919afc15d0ef0f559c67f10559d12faea9d85f),
#        the data of the figure "Evaluation-set scores of the teacher and the best students";
#        Sara's 87.1 / 86.5 are also in the draft text (latex/s1513472-minf2.tex, commit
#        23aee7862d995261a6539cc9b988a6aa57f0e1e3, §"Choosing student size": Sara).
#   [P]  student test scores: the published report's final test-set results (BERT student /
#        BiLSTM: CoLA 29.8 / 27.9, SST-2 87.8 / 92.2, Sara 86.4 / 86.4), as transcribed in
#        kdnb issue 18; the draft (commit 23aee786) has none.
#   [Z]  student types and sizes: latex/s1513472-minf2.tex (commit 23aee786), Table "Configuration
#        for the best students on each task" (tab:best-students); 340M teacher and "2.41M, 140x
#        smaller" BiLSTM in §"BiLSTM student model", 2.42M BERT student (L=5, d_h=204, d_I=750,
#        A=3) in §"BERT student model". On CoLA the best students were scaled up: the BERT
#        student 4× wider (W=4, D=1: 76.4M), the BiLSTM 2× wider and 2× deeper (W=2, D=2: 15.4M).
THESIS_TITLE = "Learning small sentence classifiers from BERT using teacher-student knowledge distillation"
THESIS_SOURCE = (f"Sučík (2020), '{THESIS_TITLE}', MInf Project (Part 2) Report, University of Edinburgh; "
                 "github.com/samsucik/knowledge-distil-bert")
THESIS_VERSIONS = {
    "T": "published report (via ../shared/data/README.md)",
    "S": "draft analysis, repo commit e1919afc (General plotting.ipynb)",
    "P": "published report (final test-set results)",
    "Z": "draft report, repo commit 23aee786 (tab:best-students)",
}
"""Which version of the thesis each kind of number comes from (see the source notes above)."""
_BERT_BASE, _BILSTM_BASE = "BERT student L=5 H=204 I=750 A=3", "BiLSTM 1×300 per direction, FC 400"
THESIS_REFERENCE: dict[str, dict[str, dict]] = {
    "cola": {
        "teacher": {"dev": 59.9, "test": 54.6, "params_m": 340.0, "type": "teacher", "model": "BERT-large, fine-tuned",
                    "dev_version": "T", "test_version": "T"},
        "bert_student": {"dev": 45.0, "test": 29.8, "params_m": 76.4, "type": "bert_student",
                         "model": f"{_BERT_BASE}, ×4 wider (W=4, D=1)", "dev_version": "S", "test_version": "P"},
        "bilstm": {"dev": 44.2, "test": 27.9, "params_m": 15.4, "type": "bilstm",
                   "model": f"{_BILSTM_BASE}, ×2 wider, ×2 deeper (W=2, D=2)", "dev_version": "S", "test_version": "P"},
    },
    "sst2": {
        "teacher": {"dev": 91.5, "test": 93.1, "params_m": 340.0, "type": "teacher", "model": "BERT-large, fine-tuned",
                    "dev_version": "T", "test_version": "T"},
        "bert_student": {"dev": 89.3, "test": 87.8, "params_m": 2.4, "type": "bert_student", "model": _BERT_BASE,
                         "dev_version": "S", "test_version": "P"},
        "bilstm": {"dev": 91.2, "test": 92.2, "params_m": 2.4, "type": "bilstm", "model": _BILSTM_BASE,
                   "dev_version": "S", "test_version": "P"},
    },
    "sara": {
        "teacher": {"dev": 87.5, "test": 88.3, "params_m": 340.0, "type": "teacher", "model": "BERT-large, fine-tuned",
                    "dev_version": "T", "test_version": "T"},
        "bert_student": {"dev": 87.1, "test": 86.4, "params_m": 2.4, "type": "bert_student", "model": _BERT_BASE,
                         "dev_version": "S", "test_version": "P"},
        "bilstm": {"dev": 86.5, "test": 86.4, "params_m": 2.4, "type": "bilstm", "model": _BILSTM_BASE,
                   "dev_version": "S", "test_version": "P"},
    },
}
"""Per task, the thesis' teacher and best students: ``dev``, ``test`` (%), ``params_m`` (M, the
thesis' count), ``type`` (``teacher`` | ``bert_student`` | ``bilstm``), ``model`` (architecture
and size), ``dev_version`` / ``test_version`` (keys of :data:`THESIS_VERSIONS`)."""
THESIS_MODEL_ALIASES = {"bert": "bert_student", "bert_s": "bert_student", "bilstm_student": "bilstm"}
"""Names kdnb may record a model under → the key of :data:`THESIS_REFERENCE`."""

# Runtimes of the thesis' steps on one GPU (GTX TITAN X / RTX 2080 Ti; augmentation sampling
# and logits on 4 GPUs), from Table "The runtimes for all steps of knowledge distillation with
# augmented transfer datasets" (tab:runtimes, latex/s1513472-minf2.tex, commit 23aee786...).
THESIS_RUNTIMES: dict[str, dict[str, str]] = {
    "teacher fine-tuning": {"cola": "~30 min", "sst2": "~4 h", "sara": "~55 min"},
    "GPT-2 fine-tuning": {"cola": "3 min", "sst2": "31 min", "sara": "1 min"},
    "augmentation (GPT-2 sampling)": {"cola": "17 h", "sst2": "15 h", "sara": "4 h"},
    "teacher logits": {"cola": "~1 h", "sst2": "~8 h", "sara": "~2 h"},
    "BiLSTM student training": {"cola": "~5 h", "sst2": "~8 h", "sara": "~6 h"},
    "BERT student training": {"cola": "~15 h", "sst2": "~26 h", "sara": "~22 h"},
}


def thesis_reference(task: str, model: str) -> dict:
    """The thesis' row of the same model type as ``model`` on ``task`` (``{}`` where it has
    none): ``teacher`` ↔ its teacher, ``bilstm*`` ↔ its BiLSTM, ``bert*`` ↔ its BERT student
    (names such as ``bilstm_kl`` or ``bert`` are matched by their prefix or alias). Other
    models (e.g. ``peakd-*``, a pre-trained teacher) get ``{}``."""
    ref = THESIS_REFERENCE.get(task, {})
    key = THESIS_MODEL_ALIASES.get(model, model)
    if key in ref:
        return ref[key]
    for prefix in ("bilstm", "bert"):
        if key.startswith(prefix):
            return ref.get("bert_student" if prefix == "bert" else prefix, {})
    return {}


def metrics_path(cfg: Config) -> Path:
    return cfg.out / "metrics.json"


STUDY_STAGES = {"teacher": "teacher_fine_tuning", "bilstm": "bilstm_training", "bert_student": "bert_student_training"}
"""The study's models (the run names of the teacher and the students of notebook 04) → the
stage their training time is shown as."""


def _study_runs(cfg: Config) -> dict[str, tuple[Any, Any, dict]]:
    """``{name: (main run, SeedRuns or None, labels)}`` for the study's models that are enabled
    in ``cfg`` and finished on disk, in :data:`STUDY_STAGES` order; ``labels`` describe the model
    as ``cfg`` names it (type, loss, transfer set) and, for students, what the run's record says
    of its size and transfer set."""
    from .training.runs import saved_seeds

    out: dict[str, tuple[Any, Any, dict]] = {}
    teacher = store.finished(cfg, "teacher", "teacher")
    if teacher is not None:
        out["teacher"] = (teacher, None, {"model": cfg.teacher.model_name_or_path})
    bc = cfg.bert_student
    students = {
        "bilstm": (cfg.bilstm.enabled, {"model": "BiLSTM (Tang et al. 2019)", "loss": cfg.bilstm.loss}),
        "bert_student": (bc.enabled, {
            "model": f"BERT student L={bc.num_layers} H={bc.hidden_size} (Sučík 2020), init {bc.init}",
            "loss": f"{bc.method or bc.loss} at T={bc.temperature:g}"}),
    }
    for name, (enabled, labels) in students.items():
        seeds = saved_seeds(cfg, name, name) if enabled else None
        if seeds is not None:
            main = seeds.main
            if name == "bert_student":
                labels["n_params_non_embedding"] = main.n_params_non_embedding
            labels.update(transfer_set=cfg.augment.transfer_set, transfer_rows=main.record.get("transfer_set_size"))
            out[name] = (main, seeds, labels)
    return out


def metrics(cfg: Config) -> dict[str, Any]:
    """The run's record, built from the store: what ``metrics.json`` holds.

    ``models``: per finished model of the study (:data:`STUDY_STAGES`; students enabled in
    ``cfg``), from its ``result.json``: ``n_params``, ``dev`` and ``test`` (the kept, best dev
    checkpoint's; fractions), ``dev_last``, ``best_epoch``, ``retention`` (dev / teacher dev;
    None without a teacher or with a teacher dev score of 0), labels (``model``, and for
    students ``loss``, ``transfer_set``, ``transfer_rows``; the BERT student's
    ``n_params_non_embedding``) and for students ``seeds``: per-seed scores over
    ``student_seeds`` with their mean and sample std, and retention mean ± std
    (:meth:`kdnb.training.runs.SeedRuns.summary`). ``stages_seconds``: the logged stage times
    (:func:`kdnb.store.stage_times`) and each model's training time (its record's ``seconds``).
    """
    runs = _study_runs(cfg)
    t_dev = (runs["teacher"][0].dev_score or None) if "teacher" in runs else None
    models: dict[str, dict] = {}
    for name, (run, seeds, labels) in runs.items():
        models[name] = {"n_params": int(run.n_params), "dev": run.dev_score, "test": run.test_score, **labels,
                        "dev_last": run.dev_last, "best_epoch": run.best_epoch,
                        "retention": run.dev_score / t_dev if t_dev else None}
        if seeds is not None:
            models[name]["seeds"] = {"retention_mean": None, "retention_std": None, **seeds.summary(t_dev)}
    stages = dict(store.stage_times(cfg))
    for name, (run, _, _) in runs.items():
        stages[STUDY_STAGES[name]] = round(float(run.seconds), 2)
    return {"task": cfg.task, "profile": cfg.profile, "metric": task_spec(cfg.task).metric,
            "models": models, "stages_seconds": stages}


def write_metrics(cfg: Config) -> dict[str, Any]:
    """Write :func:`metrics` to ``<out>/metrics.json`` (atomically) and return it. The pipeline
    does after every stage, notebook 06 before its tables."""
    m = metrics(cfg)
    write_json(metrics_path(cfg), m)
    return m


def teacher_dev(cfg: Config) -> float:
    """The fine-tuned teacher's dev score (fraction; the kept checkpoint's): what retention is
    measured against.

    Raises:
        StageInputError: no finished teacher in ``<out>/teacher`` (run notebook 03).
    """
    from .errors import StageInputError

    teacher = store.finished(cfg, "teacher", "teacher")
    if teacher is None:
        raise StageInputError(f"{cfg.out / 'teacher'}: no fine-tuned teacher; run notebook 03 first "
                              f"(make report TASK={cfg.task} ARGS='--only teacher').")
    return teacher.dev_score


def retention_text(dev: float, teacher_dev: Optional[float]) -> str:
    """``"retention 54.2 %"`` (student dev / teacher dev), or why there is none (a teacher dev
    score of 0, e.g. MCC 0 for a one-class teacher)."""
    return f"retention {100 * dev / teacher_dev:.1f} %" if teacher_dev else "no retention (teacher dev score 0)"


def seed_line(seed_runs: Any, teacher_dev: Optional[float]) -> str:
    """One line on a student's seeds for the notebooks: ``dev per seed; mean ± std; retention``
    (scores in %), or that the report used one seed and is noise on a small dev set."""
    sm = seed_runs.summary(teacher_dev)
    if len(sm["seeds"]) == 1:
        return (f"one seed ({sm['seeds'][0]}): a single run; `seeds` in params (e.g. PROFILE=seeds) gives "
                "mean ± std over several")
    per = ", ".join(f"{s}: {100 * d:.1f}" for s, d in zip(sm["seeds"], sm["dev"]))
    ret = (f"; retention {100 * sm['retention_mean']:.1f} ± {100 * sm['retention_std']:.1f} %"
           if sm.get("retention_mean") is not None else "")
    return f"{len(sm['seeds'])} seeds ({per}): dev {100 * sm['dev_mean']:.1f} ± {100 * sm['dev_std']:.1f} %{ret}"


def results_table(cfg: Config) -> pd.DataFrame:
    """One row per model of this run, beside the thesis' row of the *same student type*
    (teacher ↔ teacher, BiLSTM ↔ BiLSTM, BERT student ↔ BERT student; :func:`thesis_reference`).

    Columns: ``model``, ``parameters (M)`` (all), ``dev <metric> (%)`` of the kept (best dev)
    checkpoint, ``dev <metric>, last epoch (%)`` and ``best epoch`` (the kept checkpoint's),
    ``test <metric> (%)`` (labelled test sets, kept checkpoint), ``retention (%)`` (kept student
    dev / kept teacher dev); ``seeds`` and, with several, the mean and sample std over them of
    dev, test and retention; ``non-embedding parameters (M)`` (where recorded: the thesis' way of
    counting students); then the thesis' row: ``thesis model`` (type and size), ``thesis dev
    (%)``, ``thesis test (%)``, ``thesis parameters (M)``, ``size vs thesis`` (ours / thesis,
    non-embedding for students, all for the teacher: how far apart the sizes are), and
    ``thesis version`` (which version of the thesis the dev and test numbers come from,
    :data:`THESIS_VERSIONS`). Models the thesis has no counterpart for have empty thesis cells.
    """
    m = metrics(cfg)
    label = task_spec(cfg.task).metric_label
    rows = []
    for name, e in m["models"].items():
        r = thesis_reference(cfg.task, name)
        seeds = e.get("seeds") or {}
        non_emb = e.get("n_params_non_embedding")
        ours_m = (e["n_params"] if r.get("type") == "teacher" else non_emb)
        rows.append({
            "model": name,
            "parameters (M)": round(e["n_params"] / 1e6, 2),
            f"dev {label} (%)": _pct(e["dev"]),
            f"dev {label}, last epoch (%)": _pct(e.get("dev_last")),
            "best epoch": e.get("best_epoch"),
            f"test {label} (%)": _pct(e.get("test")),
            "retention (%)": _pct(e.get("retention")),
            "seeds": len(seeds.get("seeds", [])) or 1,
            f"dev {label} mean (%)": _pct(seeds.get("dev_mean")),
            f"dev {label} std (%)": _pct(seeds.get("dev_std")),
            f"test {label} mean (%)": _pct(seeds.get("test_mean")),
            f"test {label} std (%)": _pct(seeds.get("test_std")),
            "retention mean (%)": _pct(seeds.get("retention_mean")),
            "retention std (%)": _pct(seeds.get("retention_std")),
            "non-embedding parameters (M)": round(non_emb / 1e6, 2) if non_emb else None,
            "thesis model": r.get("model"),
            "thesis dev (%)": r.get("dev"),
            "thesis test (%)": r.get("test"),
            "thesis parameters (M)": r.get("params_m"),
            "size vs thesis": (f"{ours_m / 1e6 / r['params_m']:.2g}×" if r.get("params_m") and ours_m else None),
            "thesis version": _versions(r),
        })
    return pd.DataFrame(rows)


def _versions(r: dict) -> Optional[str]:
    """``dev: <version>; test: <version>`` for a :data:`THESIS_REFERENCE` row (None if empty)."""
    if not r:
        return None
    return f"dev: {THESIS_VERSIONS[r['dev_version']]}; test: {THESIS_VERSIONS[r['test_version']]}"


def _pct(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(100 * x, 1)


def save_table(cfg: Config, df: pd.DataFrame, name: str) -> Path:
    """Write ``df`` to ``<out>/<name>.csv`` atomically and return the path."""
    path = cfg.out / f"{name}.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def save_figure(cfg: Config, fig, name: str) -> Path:
    """Save a matplotlib figure as ``<figures>/<task>_<name>.png`` (and ``.pdf``), atomically."""
    png = cfg.figure_path(name, "png")
    for path in (png, cfg.figure_path(name, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    return png


def thesis_table(task: str) -> pd.DataFrame:
    """The thesis' final numbers for ``task`` (:data:`THESIS_REFERENCE`): one row per model with
    its type and size, dev and test score (%), size (M parameters; students: non-embedding) and
    the version of the thesis each score comes from."""
    cols = ["model", "thesis model", "thesis dev (%)", "thesis test (%)", "thesis parameters (M)", "dev from",
            "test from"]
    rows = [{"model": name, "thesis model": r["model"], "thesis dev (%)": r.get("dev"), "thesis test (%)": r.get("test"),
             "thesis parameters (M)": r.get("params_m"), "dev from": THESIS_VERSIONS[r["dev_version"]],
             "test from": THESIS_VERSIONS[r["test_version"]]} for name, r in THESIS_REFERENCE.get(task, {}).items()]
    return pd.DataFrame(rows, columns=cols)


# ---- runtimes -------------------------------------------------------------------------------------

def _stage_row(stage: str) -> str:
    """Map a recorded stage name onto a row of :data:`THESIS_RUNTIMES` (or keep it)."""
    s = stage.lower()
    if s.startswith("notebook ") or "ablation" in s or "probing" in s:
        return stage
    if "rules" in s:
        return "augmentation (rules, Tang et al. 2019)"
    if "teacher" in s and ("fine" in s or "tun" in s):
        return "teacher fine-tuning"
    if "logit" in s:
        return "teacher logits"
    if "gpt" in s and ("fine" in s or "tun" in s) and "sampl" not in s and "augment" not in s:
        return "GPT-2 fine-tuning"
    if "augment" in s or "sampl" in s or "gpt" in s:
        return "augmentation (GPT-2 sampling)"
    if s.startswith("bilstm") or "lstm" in s:
        return "BiLSTM student training"
    if s.startswith("bert"):
        return "BERT student training"
    return stage


def runtimes_table(cfg: Config) -> pd.DataFrame:
    """Wall time of each stage of this run (:func:`metrics`: logged by the stage functions and the
    pipeline, and the models' records) beside the thesis' runtimes (:data:`THESIS_RUNTIMES`; full
    scale on GPUs).

    kdnb's ``augment_gpt2`` stage (GPT-2 fine-tuning and sampling together) is shown on the
    thesis' sampling row, whose fine-tuning row then stays empty.

    Returns:
        Columns ``stage``, ``recorded as``, ``seconds``, ``minutes`` and ``thesis (GPU)``: the
        thesis' steps first (``seconds`` empty where this run has no such stage), then this
        run's other stages, then the per-notebook totals.
    """
    stages = metrics(cfg)["stages_seconds"]
    ours: dict[str, list[tuple[str, float]]] = {}
    for name, sec in stages.items():
        ours.setdefault(_stage_row(name), []).append((name, float(sec)))
    rows = []
    for row in [*THESIS_RUNTIMES, *(r for r in ours if r not in THESIS_RUNTIMES and not r.startswith("notebook ")),
                *sorted(r for r in ours if r.startswith("notebook "))]:
        got = ours.get(row, [])
        sec = sum(s for _, s in got) if got else None
        rows.append({"stage": row, "recorded as": ", ".join(n for n, _ in got) or None,
                     "seconds": None if sec is None else round(sec, 1),
                     "minutes": None if sec is None else round(sec / 60, 2),
                     "thesis (GPU)": THESIS_RUNTIMES.get(row, {}).get(cfg.task)})
    return pd.DataFrame(rows)


# ---- the HTML report ------------------------------------------------------------------------------

REPORT_TABLES = (("results", "Results (scores in %; retention = student dev / teacher dev; thesis beside ours)"),
                 ("efficiency", "Efficiency (inference time per example, speed-ups, parameters)"),
                 ("runtimes", "Runtimes of the stages"))


def write_html_report(cfg: Config, path: Optional[Path] = None) -> Path:
    """Write ``<out>/report.html``: the executed notebooks of ``<out>/notebooks/`` in order, as
    one page readable without Jupyter.

    The page opens with the tables ``results``, ``efficiency`` and ``runtimes`` (the CSVs
    under ``<out>/`` that notebook 06 writes, where present); then each notebook follows with
    its text and outputs. Code is folded (a closed "code" box above each output), the
    ``parameters`` cells and stderr output (progress bars, warnings) are left out, and figures
    are embedded: an output that is the path of a saved ``.png`` figure is replaced by the
    image itself (base64), so the file stands alone; figures of the run (``<figures>/<task>_*.png``)
    that no cell showed are appended at the end.

    Returns:
        The path written (atomically).

    Raises:
        StageInputError: no executed notebook under ``<out>/notebooks/`` (run ``make report``).
    """
    import base64
    import html
    import re

    import nbformat
    from nbconvert import HTMLExporter

    from .errors import StageInputError

    nb_dir = cfg.out / "notebooks"
    nbs = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise StageInputError(f"{nb_dir}: no executed notebooks; run `make report TASK={cfg.task}` first.")
    path = Path(path) if path is not None else cfg.out / "report.html"
    md, new_code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    spec = task_spec(cfg.task)
    cells = [md(f"# kdnb report: {cfg.task} ({cfg.profile} profile)\n\n"
                f"Knowledge distillation from a fine-tuned BERT teacher into small students, after "
                f"Sučík (2020). Metric: {spec.metric_label}. Teacher: `{cfg.teacher.model_name_or_path}`. "
                f"The tables come first; the executed notebooks follow, code folded.")]
    for name, title in REPORT_TABLES:
        csv = cfg.out / f"{name}.csv"
        if csv.is_file():
            df = pd.read_csv(csv)
            cells.append(md(f"## {title}"))
            cells.append(_html_output_cell(df.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}",
                                                      border=0, classes="dataframe")))
    embedded: set[str] = set()
    png_path = re.compile(r"""^(?:\w*Path)?\(?['"]?([^'"()]+\.png)['"]?\)?$""")
    for nb_path in nbs:
        nb = nbformat.read(nb_path, as_version=4)
        cells.append(md(f"---\n\n# Notebook `{nb_path.stem}`"))
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "injected-parameters" in tags:
                continue
            if cell.cell_type == "markdown":
                cells.append(md(cell.source))
                continue
            if cell.cell_type != "code":
                continue
            src = "\n".join(l for l in cell.source.splitlines() if not l.startswith("# NBVAL"))
            if src.strip():
                cells.append(md(f"<details><summary>code</summary><pre><code>{html.escape(src)}</code></pre>"
                                "</details>"))
            outputs = []
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    continue
                text = out.get("data", {}).get("text/plain", "") if "data" in out else ""
                m = png_path.match(text.strip()) if text else None
                if m:
                    png = _find_figure(cfg, Path(m.group(1)))
                    if png is not None:
                        embedded.add(png.name)
                        outputs.append(nbformat.v4.new_output(
                            "display_data", data={"image/png": base64.b64encode(png.read_bytes()).decode(),
                                                  "text/plain": png.name}))
                        continue
                outputs.append(out)
            if outputs:
                c = new_code("")
                c.outputs = outputs
                cells.append(c)
    others = [png for png in sorted(cfg.figures.glob(f"{cfg.task}_*.png")) if png.name not in embedded]
    if others:  # saved but not shown as a cell's output (e.g. inside an `if`)
        cells.append(md("---\n\n# Other figures of this run"))
        for png in others:
            cells.append(md(f"`{png.name}`"))
            c = new_code("")
            c.outputs = [nbformat.v4.new_output("display_data", data={
                "image/png": base64.b64encode(png.read_bytes()).decode(), "text/plain": png.name})]
            cells.append(c)
    combined = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                                              "display_name": "Python 3"}})
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(combined)
    with atomic_path(path) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return path


def _html_output_cell(html_text: str):
    import nbformat

    c = nbformat.v4.new_code_cell("")
    c.outputs = [nbformat.v4.new_output("display_data", data={"text/html": html_text, "text/plain": ""})]
    return c


def _find_figure(cfg: Config, png: Path) -> Optional[Path]:
    """The saved figure ``png`` (as printed by a notebook), or the file of that name in this
    run's figures directory (the notebook may have run on another machine)."""
    for cand in (png, cfg.figures / png.name):
        if cand.is_file():
            return cand
    return None


# ---- every task: thesis_figures/index.md -------------------------------------------------------

def _markdown(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table (empty cells for missing values)."""
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns)
    return head + "".join("\n| " + " | ".join(r) + " |" for r in cells)


def collect_thesis(tasks: list[str], profile: str, data_dir: Optional[str] = None) -> Path:
    """Gather the reports of ``tasks`` (run before with ``profile``) into the figures folder:
    ``results.csv`` (every task's results table, thesis numbers beside ours) and ``index.md``
    (per task: that table, the runtimes, and links to its figures ``<task>_*.png``). What
    ``make thesis`` writes after running every task.

    Raises:
        FileNotFoundError: a task has no ``metrics.json`` (its report has not run), naming the
            file and the command that makes it.
    """
    from .config import load_config

    overrides = {"data_dir": data_dir} if data_dir else None
    cfgs = [load_config(t, profile, overrides=overrides) for t in tasks]
    missing = [c for c in cfgs if not metrics_path(c).exists()]
    if missing:
        raise FileNotFoundError("no report yet for " + ", ".join(
            f"{c.task} ({metrics_path(c)}: run `make report TASK={c.task} PROFILE={profile}`)" for c in missing))
    figures = cfgs[0].figures
    tables, lines = [], [f"# kdnb — every task's report (profile `{profile}`)", "",
                         "Regenerated by `make thesis`; each task's own report is `outputs/<task>/report.html`.", ""]
    for cfg in cfgs:
        res = results_table(cfg)
        tables.append(res.assign(task=cfg.task))
        lines += [f"## {cfg.task}", "", _markdown(res), ""]
        rt = runtimes_table(cfg)
        if len(rt):
            lines += ["Runtimes:", "", _markdown(rt), ""]
        pngs = sorted(cfg.figures.glob(f"{cfg.task}_*.png"))  # a profile may keep each task's figures apart
        lines += [f"Figures ({len(pngs)}):", ""] + [
            f"- [{p.stem[len(cfg.task) + 1:]}]({os.path.relpath(p, figures)})" for p in pngs] + [""]
    all_results = pd.concat(tables, ignore_index=True)
    all_results = all_results[["task"] + [c for c in all_results.columns if c != "task"]]
    figures.mkdir(parents=True, exist_ok=True)
    with atomic_path(figures / "results.csv") as tmp:
        all_results.to_csv(tmp, index=False)
    with atomic_path(figures / "index.md") as tmp:
        tmp.write_text("\n".join(lines))
    return figures / "index.md"


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m kdnb.report --tasks cola sst2 sara --profile cpu``: :func:`collect_thesis`."""
    import argparse

    ap = argparse.ArgumentParser(description="Collect every task's report into the figures folder.")
    ap.add_argument("--tasks", nargs="+", default=["cola", "sst2", "sara"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    try:
        get_logger().info(f"wrote {collect_thesis(args.tasks, args.profile, args.data_dir)}")
    except FileNotFoundError as e:
        get_logger().error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
