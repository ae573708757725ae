"""Run a task's ``gpu`` profile end to end without notebooks and record scores and times (issue 16).

The stages of notebooks 01–04 through kdnb's own functions, with ``load_config(task, profile,
overrides)`` (default profile ``gpu``: ``params/profiles/gpu.yaml``):

==============================  ==========================================================
stage                           function
==============================  ==========================================================
teacher fine-tuning             :func:`kdnb.training.teacher.fine_tune_teacher` (best dev checkpoint)
GPT-2 training                  :func:`kdnb.augment.train_gpt2` (best dev perplexity)
GPT-2 sampling                  :func:`kdnb.augment.augment_gpt2`
teacher logits                  :func:`kdnb.augment.label_transfer_sets` (``none`` and the set)
BiLSTM on the training set      :func:`kdnb.training.bilstm.distill_bilstm` on ``none`` (the baseline)
BiLSTM on the transfer set      :func:`kdnb.training.bilstm.distill_bilstm`
BERT student                    :func:`kdnb.training.bert_student.distill_bert_student`
==============================  ==========================================================

It is meant for a GPU machine without network or notebook tooling (no papermill), where the
packaged teacher is not installed: ``--teacher DIR`` takes a BERT folder (e.g. the fp16
safetensors that ``benchmarks/gpu_prepare.sh`` writes, 45 MB), loads it into float32 (measured on
an H200: identical CoLA dev predictions to the original weights) and saves that under the run's
output folder as ``teacher.model_name_or_path``. Writes ``<out>/<name>.json`` and
``<out>/<name>.md`` after every stage (a run cut off by a time limit keeps the stages it
finished; a stage whose outputs exist under the output folder with the same parameters is
reused, and says so): per stage the wall time (s) and peak GPU memory (MiB); the teacher's and each
student's dev score (the kept, best checkpoint, and the last evaluation) in % and the
students' retention (student / teacher, %). Exit status 1 if a stage failed (the json names it).

Examples::

    python benchmarks/gpu_profile_run.py --task cola                  # the whole gpu profile
    python benchmarks/gpu_profile_run.py --task cola --teacher outputs/gpu_carry/teacher_fp16 \\
        --set augment.gpt2.n_sentences=200000 bilstm.epochs=6 bert_student.epochs=10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fp32_teacher(src: str | Path, dst: str | Path) -> dict:
    """Load the BERT encoder in ``src`` (any float dtype, e.g. fp16 safetensors) into float32 and
    save it with its tokenizer to ``dst``, for ``teacher.model_name_or_path``.

    Returns:
        ``{"source", "fp32_dir", "encoder_params", "source_dtype"}``.

    Raises:
        FileNotFoundError: ``src`` is not a folder.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"--teacher {src}: no such folder (benchmarks/gpu_prepare.sh writes one)")
    from safetensors import safe_open

    dtypes = set()
    for f in src.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            dtypes |= {str(st.get_slice(k).get_dtype()) for k in list(st.keys())[:8]}
    model = AutoModel.from_pretrained(str(src), dtype=torch.float32)
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    return {"source": str(src), "fp32_dir": str(dst), "encoder_params": sum(p.numel() for p in model.parameters()),
            "source_dtype": sorted(dtypes)}


def _git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _pct(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(100 * float(x), 2)


def markdown(res: dict) -> str:
    """The run as Markdown: a header line, the scores table and the stages table."""
    t = res.get("teacher") or {}
    head = (f"{res['task']} with the `{res['profile']}` profile on {res['device']} ({res['mixed_precision']}, "
            f"CUDA graphs {res['cuda_graphs']}, {res['num_workers']} loader workers), torch {res['torch']}, "
            f"{res['date']}, commit {res['commit']}; overrides: {res['overrides'] or 'none'}. "
            f"Dev {res['metric']} in %.\n\n")
    lines = ["| model | transfer set | rows | epochs | dev (kept) | best epoch | dev (last) | "
             "retention kept / last | cuda graphs |", "|---|---|---|---|---|---|---|---|---|"]
    if t:
        lines.append(f"| teacher | training set | {t['rows']:,} | {t['epochs']} | {t['dev']} | {t['best_epoch']} | "
                     f"{t['dev_last']} | | |")
    for s in res["students"]:
        cg = s.get("cuda_graphs")
        cg = f"{cg['captures']} captures" + (f", eager: {cg['eager_reason']}" if cg.get("eager_reason") else "") \
            if cg else "–"
        lines.append(f"| {s['model']} | {s['transfer_set']} | {s['rows']:,} | {s['epochs']} | {s['dev']} | "
                     f"{s['best_epoch']} | {s['dev_last']} | {s['retention']} % / {s['retention_last']} % | {cg} |")
    g = res.get("gpt2")
    extra = ""
    if g:
        extra = (f"\n\nGPT-2: {g['description']}, {g['n_params']:,} parameters, dev perplexity "
                 f"{g['dev_perplexity']:.1f}; {g.get('kept', 0):,} new sentences kept of {g.get('generated', 0):,} "
                 f"samples.")
    st = ["| stage | wall (s) | peak GPU (MiB) |", "|---|---|---|"]
    st += [f"| {s['stage']} | {s['wall_s']} | {s['peak_gpu_mb'] if s['peak_gpu_mb'] is not None else '–'} |"
           for s in res["stages"]]
    st.append(f"| **total** | {res['elapsed_s']} | |")
    failed = f"\n\nFailed: {res['errors']}" if res["errors"] else ""
    return head + "\n".join(lines) + extra + "\n\n" + "\n".join(st) + failed + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="cola", help="cola, sst2 or sara (GPT-2 makes single sentences)")
    ap.add_argument("--profile", default="gpu", help="params/profiles/<profile>.yaml (default gpu)")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="parameter overrides as in python -m kdnb.pipeline (values in YAML)")
    ap.add_argument("--teacher", default=None, help="a BERT folder (fp16 is loaded into fp32) instead of "
                    "teacher.model_name_or_path")
    ap.add_argument("--data-dir", default=None, help="folder with the task's data (default: params' data_dir)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where <name>.json/.md go")
    ap.add_argument("--name", default=None, help="file stem (default <task>_<profile>_run)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the BiLSTM on the training set alone")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import datasets
    import torch
    import transformers

    from kdnb import augment as A
    from kdnb.config import load_config
    from kdnb.data import load_task, task_spec
    from kdnb.pipeline import parse_overrides
    from kdnb.training.bert_student import distill_bert_student
    from kdnb.training.bilstm import distill_bilstm
    from kdnb.training.teacher import fine_tune_teacher
    from kdnb.utils import atomic_path, write_json

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    overrides = parse_overrides(args.set)
    cfg = load_config(args.task, args.profile, data_dir=args.data_dir, overrides=overrides)  # validate first
    t_start = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out = Path(args.out)
    name = args.name or f"{args.task}_{args.profile}_run"
    res: dict[str, Any] = {
        "task": args.task, "profile": args.profile, "overrides": overrides, "device": gpu or "cpu",
        "mixed_precision": cfg.mixed_precision if gpu else "no", "cuda_graphs": cfg.cuda_graphs and bool(gpu),
        "num_workers": cfg.num_workers, "torch": torch.__version__, "transformers": transformers.__version__,
        "datasets": datasets.__version__, "python": platform.python_version(), "commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "metric": task_spec(args.task).metric,
        "output_dir": str(cfg.out), "teacher": None, "gpt2": None, "students": [], "stages": [], "errors": [],
        "finished": False, "elapsed_s": 0.0,
    }

    def dump() -> None:
        res["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"{name}.json", res)
        with atomic_path(out / f"{name}.md") as tmp:
            tmp.write_text(markdown(res))

    def stage(label: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` timed (wall s, peak GPU MiB); an error is recorded and re-raised."""
        print(f"[gpu_profile_run] {label} ...", flush=True)
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as e:
            res["errors"].append(f"{label}: {type(e).__name__}: {e}"[:500])
            dump()
            raise
        if gpu:
            torch.cuda.synchronize()
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None
        res["stages"].append({"stage": label, "wall_s": round(time.perf_counter() - t0, 2), "peak_gpu_mb": peak})
        print(f"[gpu_profile_run] {label}: {res['stages'][-1]['wall_s']} s", flush=True)
        dump()
        return value

    try:
        if args.teacher:
            res["teacher_load"] = stage("teacher to fp32", lambda: fp32_teacher(args.teacher, cfg.out / "teacher_fp32"))
            overrides = {**overrides, "teacher.model_name_or_path": res["teacher_load"]["fp32_dir"]}
            cfg = load_config(args.task, args.profile, data_dir=args.data_dir, overrides=overrides)
        dsd = load_task(cfg.task, cfg.data_path)
        tres = stage("teacher fine-tuning", lambda: fine_tune_teacher(cfg, dsd))
        res["teacher"] = {"dev": _pct(tres.dev_score), "dev_last": _pct(tres.dev_last), "best_epoch": tres.best_epoch,
                          "epochs": cfg.teacher.epochs, "rows": len(A.transfer_input(cfg, dsd, "none")),
                          "seconds": round(tres.seconds, 2), "n_params": tres.n_params,
                          "reused": tres.reused}
        sets = ["none"] + ([cfg.augment.transfer_set] if cfg.augment.transfer_set != "none" else [])
        if "gpt2" in cfg.augment.transfer_set:
            lm = stage("GPT-2 training", lambda: A.train_gpt2(cfg, dsd))
            res["gpt2"] = {k: lm.get(k) for k in ("description", "n_params", "dev_perplexity", "seconds")}
            gen = stage("GPT-2 sampling", lambda: A.augment_gpt2(cfg, dsd))
            res["gpt2"].update({k: gen.stats.get(k) for k in ("generated", "unique", "kept", "ended", "seconds")})
            res["gpt2"]["sampling_seconds"] = res["gpt2"].pop("seconds")
            res["gpt2"]["seconds"] = lm.get("seconds")
        if "rules" in cfg.augment.transfer_set:
            stage("rules", lambda: A.augment_rules(cfg, dsd))
        transfer = dict(stage("teacher logits", lambda: A.label_transfer_sets(cfg, dsd)))
        if "none" not in transfer:  # labelled by label_transfer_sets in any case, returned only when asked for
            transfer["none"] = A.load_transfer_set(cfg, "none")
        teacher_dev = res["teacher"]["dev"]

        def record(model: str, set_name: str, r, epochs: int, cuda_graphs=None) -> None:
            dev, last = _pct(r.dev_score), _pct(r.dev_last)
            res["students"].append({
                "model": model, "transfer_set": set_name, "rows": len(transfer[set_name]), "epochs": epochs,
                "dev": dev, "dev_last": last, "best_epoch": r.best_epoch,
                "retention": round(100 * dev / teacher_dev, 1) if teacher_dev else None,
                "retention_last": round(100 * last / teacher_dev, 1) if teacher_dev and last is not None else None,
                "seconds": round(r.seconds, 2), "epoch_seconds": r.epoch_seconds,
                "rows_per_s": round(len(transfer[set_name]) * len(r.epoch_seconds or []) / r.seconds, 1)
                if r.seconds else None, "n_params": r.n_params, "cuda_graphs": cuda_graphs,
                "reused": r.reused})
            dump()

        for s in sets if not args.no_baseline else sets[1:]:
            r = stage(f"BiLSTM ({s})", lambda s=s: distill_bilstm(cfg, transfer[s], dsd, name=f"bilstm_{s}"))
            record("BiLSTM", s, r, cfg.bilstm.epochs)
        if cfg.bert_student.enabled:
            s = sets[-1]
            r = stage(f"BERT student ({s})", lambda: distill_bert_student(cfg, transfer[s], dsd, name=f"bert_student_{s}"))
            saved = json.loads((cfg.out / "students" / f"bert_student_{s}" / "result.json").read_text())
            record("BERT student " + re.sub(r".*\) ", "", saved["model"]), s, r, cfg.bert_student.epochs,
                   saved.get("cuda_graphs"))
        res["finished"] = True
    except Exception:  # noqa: BLE001 (recorded in the json; the exit status says so)
        import traceback

        traceback.print_exc()
    finally:
        dump()
    print(markdown(res), flush=True)
    print(f"[gpu_profile_run] wrote {out / name}.json and .md", flush=True)
    return 0 if res["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
