"""The Pea-KD comparison of the ``peakd`` profile (RTE) on a GPU machine without notebook tooling
(issue 18): the teacher fine-tuned and the comparison trained through kdnb's own functions, as
notebooks 03–04 do with ``make report TASK=rte PROFILE=peakd``.

==============================  ==========================================================
stage                           function
==============================  ==========================================================
teacher fine-tuning             :func:`kdnb.training.teacher.fine_tune_teacher` (best dev checkpoint)
teacher logits                  :func:`kdnb.augment.label_transfer_sets` (RTE: ``none``)
Pea-KD comparison               :func:`kdnb.experiments.peakd_comparison` (variants × seeds)
==============================  ==========================================================

``--teacher DIR`` takes the packaged BERT as fp16 safetensors (``benchmarks/gpu_prepare.sh``),
loaded into float32; it is both the teacher's starting point and, with ``peakd.init:
pretrained``, the students' (the paper's pre-trained initialisation). Writes ``<out>/<name>.csv``
(the comparison table, as ``outputs/rte/peakd.csv``) and ``<out>/<name>.json`` (teacher, stage
times, device, overrides).

Example::

    python benchmarks/peakd_gpu_run.py --teacher outputs/gpu_carry/teacher_fp16 \\
        --data-dir outputs/gpu_carry/data --out "$OUT" --name h200_rte_peakd
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="rte")
    ap.add_argument("--profile", default="peakd")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--teacher", default=None, help="a BERT folder (fp16 is loaded into fp32)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="rte_peakd_run")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from gpu_profile_run import fp32_teacher

    from kdnb import augment as A
    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.experiments import peakd_comparison
    from kdnb.pipeline import parse_overrides
    from kdnb.training.teacher import fine_tune_teacher

    overrides = parse_overrides(args.set)
    cfg = load_config(args.task, args.profile, data_dir=args.data_dir, overrides=overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"task": args.task, "profile": args.profile, "overrides": overrides, "stages": {},
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    t0 = time.time()
    if args.teacher:
        info = fp32_teacher(args.teacher, cfg.out / "teacher_fp32")
        overrides = {**overrides, "teacher.model_name_or_path": info["fp32_dir"]}
        cfg = load_config(args.task, args.profile, data_dir=args.data_dir, overrides=overrides)
    dsd = load_task(cfg.task, cfg.data_path)
    t = time.time()
    tres = fine_tune_teacher(cfg, dsd)
    res["stages"]["teacher fine-tuning"] = round(time.time() - t, 1)
    res["teacher"] = {"dev": round(100 * tres.dev_score, 2), "dev_last": round(100 * tres.dev_last, 2),
                      "best_epoch": tres.best_epoch, "epochs": cfg.teacher.epochs}
    t = time.time()
    A.label_transfer_sets(cfg, dsd)
    transfer = A.load_transfer_set(cfg, cfg.augment.transfer_set)
    res["stages"]["teacher logits"] = round(time.time() - t, 1)
    t = time.time()
    pea = peakd_comparison(cfg, transfer, dsd)
    res["stages"]["Pea-KD comparison"] = round(time.time() - t, 1)
    res["elapsed_s"] = round(time.time() - t0, 1)
    res["peakd"] = dataclasses.asdict(cfg.peakd)
    pea.table.to_csv(out / f"{args.name}.csv", index=False)
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    print(pea.table.to_string(index=False), flush=True)
    print(json.dumps(res, indent=2, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
