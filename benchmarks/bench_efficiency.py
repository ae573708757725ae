"""Print the efficiency table of kdnb (:mod:`kdnb.analysis.bench`) without running the notebooks.

    python benchmarks/bench_efficiency.py --task cola --profile cpu            # ~4 min on 2 cores
    python benchmarks/bench_efficiency.py --task cola --profile smoke --threads 1
    python benchmarks/bench_efficiency.py --task cola --no-bert-large --set analysis.bench_repeats=5

It times, in this one process and on the same sentences (the first 256 CoLA dev sentences by
default): BERT-large built from its config with random weights (timing only), the teacher
(the fine-tuned one under ``outputs/<task>/teacher`` if it exists, else the packaged model
with an untrained head), the BERT student (a trained one, else the thesis' size with random
weights — timing only), the BiLSTM student, and the students quantised to int8 — padded to
64 tokens and at real lengths, on CPU with the threads pinned, and on the GPU when present.
Trained models are scored on the task's dev set. The table is also written to
``<out>/efficiency.csv`` (``--output-dir`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import yaml

from kdnb.analysis import bench
from kdnb.config import load_config
from kdnb.errors import KdnbError
from kdnb.utils import read_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="cola")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--output-dir", default=None, help="where the run's outputs are (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: all usable cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed batches per model (median)")
    ap.add_argument("--no-bert-large", action="store_true", help="skip BERT-large (~1 min per batch on 2 cores)")
    ap.add_argument("--no-gpu", action="store_true", help="do not time on the GPU even if there is one")
    ap.add_argument("--force", action="store_true", help="re-measure even if a saved table matches")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. --set analysis.bench_large_repeats=2")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    try:
        cfg = load_config(args.task, args.profile, data_dir=args.data_dir, overrides=overrides)
        df = bench.efficiency_table(cfg, force=args.force, bert_large_too=False if args.no_bert_large else None,
                                    repeats=args.repeats, threads=args.threads, gpu=False if args.no_gpu else None)
    except KdnbError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    machine = read_json(cfg.out / "efficiency.json")["machine"]
    print(f"machine: {machine}")
    print(f"sentences: first {cfg.analysis.bench_batch_size} dev sentences of "
          f"{'CoLA' if cfg.analysis.bench_sentences == 'cola' else cfg.task}; scores on the {cfg.task} dev set\n")
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 45):
        print(bench.summary_table(df).drop(columns=["batch"]).to_string(index=False))
    print(f"\nwritten: {cfg.out / 'efficiency.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
