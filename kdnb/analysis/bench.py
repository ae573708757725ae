"""Efficiency benchmark: parameters and inference time per example of teacher and students.

All models are timed in one process, on the same sentences, with the same thread setting:
``analysis.bench_batch_size`` (256) sentences per batch — by default the first 256 of the CoLA
dev set — under two input settings:

* ``padded to 64``: every sentence padded (or cut) to ``analysis.bench_max_length`` (64)
  WordPiece tokens, the BiLSTM unrolled over all 64 steps;
* ``real lengths``: BERT-family models pad only to the longest sentence in the batch, the
  BiLSTM runs on packed sequences of the true lengths.

The time per batch is the median of ``bench_repeats`` timed batches after ``bench_warmup``
warm-up batches (BERT-large on CPU: ``bench_large_repeats`` timed batches after a warm-up on
16 examples, since one batch of 256 takes about a minute on two cores); time per example =
batch time / batch size, in milliseconds. PyTorch's intra-op threads are pinned
(``analysis.bench_threads``, default: every core this process may use) and reported.
Speed-ups are ratios of per-example times within the same device and input setting.

Models (Sučík 2020 distils a 340M-parameter BERT-large teacher into 2.4M-parameter students;
the project's issue 7 quotes its BiLSTM at 1.0 ms vs 750 ms per example for BERT-large):

* ``BERT-large``: built from ``BertConfig`` (24 layers, 1024 hidden, 16 heads) with random
  weights — **timing only**, it is never scored;
* ``teacher``: the fine-tuned teacher of notebook 03 (the packaged 6-layer MiniLM-L6 BERT in
  the ``cpu``/``smoke`` profiles);
* ``BERT student``: a trained one from ``<out>/students/<name>/model/`` when it exists, else the
  thesis' size (5 layers, hidden 204, intermediate 750, 3 heads) from ``BertConfig`` with random
  weights — **timing only**;
* ``BiLSTM``: the trained student of notebook 04 (random weights of the same size if absent);
* the students quantised to int8 with PyTorch dynamic quantisation (``nn.Linear`` and ``nn.LSTM``
  weights int8, activations quantised on the fly; CPU only), timed and — when trained — scored
  on the task's dev set beside their float32 versions.
"""

from __future__ import annotations

import copy
import io
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import store
from ..config import Config
from ..data import load_task, score
from ..models.common import count_parameters

PADDED, REAL = "padded to {n}", "real lengths"
SCHEMA = 2
"""Version of the efficiency table's columns; a saved table of another version is re-measured."""
LARGE_WARMUP_EXAMPLES = 16
"""BERT-large on CPU is warmed up on this many examples (a full batch of 256 takes ~1 min on 2 cores)."""


# ---- parameters ---------------------------------------------------------------------------------

def serialized_mb(model: nn.Module) -> float:
    """Size of ``model.state_dict()`` saved with ``torch.save``, in MB (10^6 bytes); this counts
    int8 weights of quantised modules at one byte each."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 1e6


# ---- the models ---------------------------------------------------------------------------------

@dataclass
class BenchModel:
    """One model to time.

    Attributes:
        name: row label in the table.
        model: the ``nn.Module`` (eval mode).
        kind: ``bert`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; returns
            ``.logits``) or ``bilstm`` (inputs ``input_ids``, ``lengths``).
        weights: ``trained`` or ``random (timing only)``.
        scored: compute the dev score (only for trained models).
        base: for a quantised copy, the name of its float32 model.
    """

    name: str
    model: nn.Module
    kind: str
    weights: str
    scored: bool = False
    base: Optional[str] = None
    quantised: bool = False
    n_params: int = 0
    n_non_embedding: int = 0
    extra: dict = field(default_factory=dict)


def bert_large(num_labels: int, vocab_size: int = 30522) -> nn.Module:
    """BERT-large (Devlin et al. 2019: 24 layers, hidden 1024, 16 heads, intermediate 4096;
    ≈335M parameters) for sequence classification, random weights — for timing only."""
    from transformers import BertConfig, BertForSequenceClassification

    conf = BertConfig(vocab_size=vocab_size, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096, num_labels=num_labels)
    return BertForSequenceClassification(conf).eval()


def thesis_bert_student(num_labels: int, vocab_size: int = 30522) -> nn.Module:
    """The thesis' BERT student size (Sučík 2020, §"BERT student model": L=5, d_h=204, d_I=750,
    A=3; 2.42M non-embedding parameters) with random weights — for timing only."""
    from transformers import BertConfig, BertForSequenceClassification

    conf = BertConfig(vocab_size=vocab_size, hidden_size=204, num_hidden_layers=5, num_attention_heads=3,
                      intermediate_size=750, num_labels=num_labels)
    return BertForSequenceClassification(conf).eval()


def load_bilstm(path: Path) -> nn.Module:
    """A :class:`~kdnb.models.bilstm.BiLSTMStudent` rebuilt from a saved ``model.pt`` state dict (the
    sizes are read from the tensors' shapes)."""
    from ..models.bilstm import BiLSTMStudent

    sd = torch.load(path, map_location="cpu", weights_only=True)
    vocab, dim = sd["embedding.weight"].shape
    hidden = sd["lstm.weight_hh_l0"].shape[1]
    fc, num_labels = sd["fc.weight"].shape[0], sd["out.weight"].shape[0]
    mode = "multichannel" if "static_embedding.weight" in sd else "non-static"
    model = BiLSTMStudent(vocab, dim, num_labels, hidden, fc, embedding_mode=mode)
    model.load_state_dict(sd)
    return model.eval()


def quantise(model: nn.Module) -> nn.Module:
    """int8 dynamic quantisation (PyTorch ``quantize_dynamic``) of the ``nn.Linear`` and
    ``nn.LSTM`` layers of a copy of ``model``; embeddings stay float32."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 flags the quantised-tensor API as deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear, nn.LSTM}, dtype=torch.qint8)


def collect_models(cfg: Config, tokenizer, num_labels: int, *, bert_large_too: bool,
                   quantised: bool) -> list[BenchModel]:
    """The models of the benchmark (see the module docstring), in table order."""
    from transformers import AutoModelForSequenceClassification

    from ..models.teacher import resolve_model_path

    vocab = len(tokenizer)
    out: list[BenchModel] = []
    if bert_large_too:
        out.append(BenchModel("BERT-large (24 layers)", bert_large(num_labels, vocab), "bert", "random (timing only)"))
    tdir = store.run_dir(cfg, "teacher") / "model"
    if tdir.is_dir():
        teacher = AutoModelForSequenceClassification.from_pretrained(tdir).eval()
        out.append(BenchModel("teacher", teacher, "bert", "trained", scored=True))
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(cfg.teacher.model_name_or_path), num_labels=num_labels).eval()
        out.append(BenchModel("teacher", teacher, "bert", "pre-trained, untuned head (timing only)"))
    layers = teacher.config.num_hidden_layers
    out[-1].name = f"teacher ({layers} layers, {cfg.teacher.model_name_or_path.split(':')[-1]})"
    students: list[BenchModel] = []
    for run in store.runs(cfg, "students"):  # the kind each student's manifest names (kdnb.store)
        sdir, name = store.run_dir(cfg, run["name"]), run["name"]
        if run["kind"] == "bert_student" and name == "bert_student":
            # notebook 04's BERT student (kdnb.training.bert_student); the KD-ablation students share its size
            from ..training.bert_student import load_bert_student

            sizes = store.record(cfg, name).get("sizes") or {}
            m = load_bert_student(cfg, name, teacher)
            label = f"BERT student (L={sizes.get('num_layers')}, H={sizes.get('hidden_size')})"
            students.append(BenchModel(label, m, "bert", "trained", scored=True))
        elif run["kind"] == "bilstm" and not (sdir / "tokenizer").is_dir():
            # (a BiLSTM with its own tokenizer/ reads word2vec words, not the WordPieces timed here)
            try:
                m = load_bilstm(sdir / "model.pt")
            except (KeyError, RuntimeError):
                continue  # the siamese BiLSTM of a sentence-pair task: another input
            label = "BiLSTM" if name == "bilstm" else f"BiLSTM ({name})"
            students.append(BenchModel(label, m, "bilstm", "trained", scored=True))
    if not any(s.kind == "bert" for s in students):
        students.append(BenchModel("BERT student (thesis size, 5 layers)",
                                   thesis_bert_student(num_labels, vocab), "bert", "random (timing only)"))
    if not any(s.kind == "bilstm" for s in students):
        from ..models.bilstm import BiLSTMStudent

        bc = cfg.bilstm
        dim = teacher.config.hidden_size
        m = BiLSTMStudent(vocab, dim, num_labels, bc.hidden_size, bc.fc_size, embedding_mode=bc.embedding_mode).eval()
        students.append(BenchModel("BiLSTM", m, "bilstm", "random (timing only)"))
    for s in students:
        out.append(s)
        if quantised:
            out.append(BenchModel(f"{s.name} int8", quantise(s.model), s.kind, s.weights, scored=s.scored,
                                  base=s.name, quantised=True))
    for bm in out:
        src = next((b for b in out if b.name == bm.base), bm) if bm.quantised else bm
        bm.n_params, bm.n_non_embedding = count_parameters(src.model), count_parameters(src.model, embeddings=False)
    return out


# ---- inputs -------------------------------------------------------------------------------------

def make_inputs(tokenizer, sentences: list[str], max_length: int) -> dict[str, dict[str, dict]]:
    """Batches for both input settings and both model kinds.

    Returns:
        ``{setting: {"bert": {...}, "bilstm": {...}}}`` where ``setting`` is
        ``"padded to <max_length>"`` or ``"real lengths"``; BERT inputs have ``input_ids``,
        ``attention_mask``, ``token_type_ids`` of shape ``(B, T)`` (with [CLS]/[SEP]); BiLSTM
        inputs have ``input_ids`` ``(B, T)`` (WordPiece ids without special tokens) and
        ``lengths`` ``(B,)``. Padded: ``T = max_length`` and every BiLSTM length is ``T``.
    """
    padded = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    real = tokenizer(sentences, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    pieces = tokenizer(sentences, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    pieces = [p or [tokenizer.unk_token_id] for p in pieces]
    pad = tokenizer.pad_token_id or 0

    def lstm_batch(seqs, width, full):
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        lengths = torch.full((len(seqs),), width) if full else torch.tensor([len(s) for s in seqs])
        return {"input_ids": ids, "lengths": lengths}

    return {
        PADDED.format(n=max_length): {"bert": dict(padded), "bilstm": lstm_batch(pieces, max_length, True)},
        REAL: {"bert": dict(real), "bilstm": lstm_batch(pieces, max(map(len, pieces)), False)},
    }


def _forward(bm: BenchModel, batch: dict) -> torch.Tensor:
    if bm.kind == "bilstm":
        return bm.model(batch["input_ids"], batch["lengths"])
    return bm.model(**batch).logits


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


# ---- timing -------------------------------------------------------------------------------------

def time_batches(fn: Callable[[], object], warmup: int, repeats: int,
                 sync: Callable[[], None] = lambda: None) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; wall seconds per call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def default_threads() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bench_sentences(cfg: Config) -> list[str]:
    """The first ``analysis.bench_batch_size`` dev sentences of CoLA (``bench_sentences: cola``)
    or of the task (``task``); repeated cyclically if the dev set is smaller."""
    task = "cola" if cfg.analysis.bench_sentences == "cola" else cfg.task
    dev = load_task(task, cfg.data_path)["dev"]
    sents = list(dev["sentence"])
    n = cfg.analysis.bench_batch_size
    return [sents[i % len(sents)] for i in range(n)]


def dev_score(cfg: Config, bm: BenchModel, tokenizer, dev, batch_size: int = 256) -> float:
    """The task's metric of ``bm`` on the task's dev set (CPU), as a fraction."""
    preds = []
    sents = list(dev["sentence"])
    seconds = list(dev["sentence2"]) if "sentence2" in dev.column_names else None  # pair tasks (RTE)
    with torch.inference_mode():
        for i in range(0, len(sents), batch_size):
            chunk = sents[i:i + batch_size]
            if bm.kind == "bilstm":
                batch = make_inputs(tokenizer, chunk, cfg.bilstm.max_length)[REAL]["bilstm"]
            else:  # pairs as the teacher reads them: [CLS] a [SEP] b [SEP]
                pair = [seconds[i:i + batch_size]] if seconds is not None else []
                batch = dict(tokenizer(chunk, *pair, padding="longest", truncation=True,
                                       max_length=cfg.teacher.max_length, return_tensors="pt"))
            preds.append(_forward(bm, batch).argmax(-1).numpy())
    return score(cfg.task, np.asarray(dev["label"]), np.concatenate(preds))


def _fingerprint(cfg: Config) -> dict:
    files = [cfg.out / "teacher" / "model" / "model.safetensors", *sorted((cfg.out / "students").glob("*/model.pt"))]
    return {str(p.relative_to(cfg.out)): [p.stat().st_size, int(p.stat().st_mtime)] for p in files if p.is_file()}


def efficiency_table(cfg: Config, force: bool = False, *, bert_large_too: Optional[bool] = None,
                     repeats: Optional[int] = None, threads: Optional[int] = None,
                     gpu: Optional[bool] = None) -> pd.DataFrame:
    """Benchmark the models (module docstring) and return the efficiency table.

    The table is saved to ``<out>/efficiency.csv`` (and ``efficiency.json`` with the machine,
    threads and raw timings) and reused while the ``analysis`` parameters, the thread count and
    the saved models are unchanged (``force`` re-measures). Keyword arguments override the
    ``analysis.bench_*`` parameters for this call.

    Returns:
        One row per model × device × input setting: ``model, weights, device, threads, input,
        batch, ms/example`` (median, ms), ``speed-up vs BERT-large`` (same device and input),
        ``speed-up vs teacher``, ``parameters (M)``, ``non-embedding parameters (M)``,
        ``size (MB)`` (saved state dict) and ``dev score (%)`` (trained models only; the task's
        metric on its dev set, CPU).

    Raises:
        DataError: the data of the benchmark sentences cannot be read.
    """
    from transformers import AutoTokenizer

    from ..models.teacher import resolve_model_path

    a = cfg.analysis
    bert_large_too = a.bench_bert_large if bert_large_too is None else bert_large_too
    repeats = a.bench_repeats if repeats is None else repeats
    threads = threads or a.bench_threads or default_threads()
    gpu = (a.bench_gpu if gpu is None else gpu) and torch.cuda.is_available()
    key = {"schema": SCHEMA, "analysis": cfg.section_hash("analysis", "bilstm", "teacher"),
           "bert_large": bert_large_too,
           "repeats": repeats, "threads": threads, "gpu": gpu, "models": _fingerprint(cfg), "torch": torch.__version__}
    art = store.Artefact("efficiency", cfg.out / "efficiency.csv", key, cfg.out, record=cfg.out / "efficiency.json",
                         field="key")
    if art.saved(force):
        return pd.read_csv(art.path)

    tdir = store.run_dir(cfg, "teacher") / "model"
    tok_path = tdir if tdir.is_dir() else resolve_model_path(cfg.teacher.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    task_dsd = load_task(cfg.task, cfg.data_path)
    num_labels = task_dsd["dev"].features["label"].num_classes
    inputs = make_inputs(tokenizer, bench_sentences(cfg), a.bench_max_length)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        models = collect_models(cfg, tokenizer, num_labels, bert_large_too=bert_large_too, quantised=a.bench_quantize)
        rows, raw = [], []
        devices = ["cpu"] + (["cuda"] if gpu else [])
        for device in devices:
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            for bm in models:
                if device == "cuda" and bm.quantised:
                    continue  # dynamic quantisation runs on CPU only
                bm.model.to(device)
                large = bm.name.startswith("BERT-large")
                reps = a.bench_large_repeats if large and device == "cpu" else repeats
                for setting, per_kind in inputs.items():
                    batch = _to(per_kind[bm.kind], device) if bm.kind == "bert" else {
                        "input_ids": per_kind["bilstm"]["input_ids"].to(device),
                        "lengths": per_kind["bilstm"]["lengths"]}  # lengths stay on CPU for packing

                    def run(bm=bm, batch=batch):
                        with torch.inference_mode():
                            _forward(bm, batch)

                    if large and device == "cpu":  # warm up on a slice: a full batch takes a minute
                        small = {k: v[:LARGE_WARMUP_EXAMPLES] for k, v in batch.items()}
                        time_batches(lambda: run(batch=small), a.bench_warmup, 0, sync)
                        times = time_batches(run, 0, reps, sync)
                    else:
                        times = time_batches(run, a.bench_warmup, reps, sync)
                    per_ex = 1000 * statistics.median(times) / a.bench_batch_size
                    raw.append({"model": bm.name, "device": device, "input": setting, "seconds": times})
                    rows.append({"model": bm.name, "weights": bm.weights, "device": device,
                                 "threads": threads if device == "cpu" else None, "input": setting,
                                 "batch": a.bench_batch_size, "ms/example": per_ex,
                                 "parameters (M)": bm.n_params / 1e6,
                                 "non-embedding parameters (M)": bm.n_non_embedding / 1e6,
                                 "size (MB)": serialized_mb(bm.model.cpu()) if device == "cpu" else None})
                bm.model.to("cpu")
        scores = {bm.name: 100 * dev_score(cfg, bm, tokenizer, task_dsd["dev"]) for bm in models if bm.scored}
    finally:
        torch.set_num_threads(old_threads)

    df = pd.DataFrame(rows)
    df["dev score (%)"] = df["model"].map(scores)
    df = add_speedups(df)
    cols = ["model", "weights", "device", "threads", "input", "batch", "ms/example", "speed-up vs BERT-large",
            "speed-up vs BERT-large padded", "speed-up vs teacher", "parameters (M)",
            "non-embedding parameters (M)", "size (MB)", "dev score (%)"]
    df = df[cols]
    from ..report import save_table

    save_table(cfg, df, "efficiency")
    art.finish({"machine": platform_info(threads), "sentences": cfg.analysis.bench_sentences, "raw": raw})
    return df


def add_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Add the speed-up columns — the reference model's ms/example divided by the row's, on the
    same device (NaN where the reference was not measured):

    * ``speed-up vs BERT-large``: BERT-large with the same input setting;
    * ``speed-up vs BERT-large padded``: BERT-large padded to the maximum length (the usual way
      a BERT model is served), so a student's gain from real lengths counts too;
    * ``speed-up vs teacher``: the teacher with the same input setting.
    """
    df = df.copy()

    def ref_times(prefix: str) -> pd.Series:
        ref = df[df["model"].str.startswith(prefix)].set_index(["device", "input"])["ms/example"]
        return ref[~ref.index.duplicated()]

    large, teacher = ref_times("BERT-large"), ref_times("teacher")
    padded = next((i for i in df["input"] if str(i).startswith("padded")), None)
    keys = list(zip(df["device"], df["input"]))
    df["speed-up vs BERT-large"] = [large.get(k, np.nan) / v for k, v in zip(keys, df["ms/example"])]
    df["speed-up vs BERT-large padded"] = [large.get((d, padded), np.nan) / v
                                           for d, v in zip(df["device"], df["ms/example"])]
    df["speed-up vs teacher"] = [teacher.get(k, np.nan) / v for k, v in zip(keys, df["ms/example"])]
    return df


def platform_info(threads: int) -> dict:
    """The machine the benchmark ran on: CPU model, cores usable, PyTorch threads, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_usable": default_threads(), "torch_threads": threads,
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """The efficiency table rounded for display (ms to 3 significant digits, speed-ups to ×1)."""
    out = df.copy()
    out["ms/example"] = out["ms/example"].map(lambda v: float(f"{v:.3g}"))
    for c in ("speed-up vs BERT-large", "speed-up vs BERT-large padded", "speed-up vs teacher"):
        out[c] = out[c].round(1)
    for c in ("parameters (M)", "non-embedding parameters (M)", "size (MB)", "dev score (%)"):
        out[c] = out[c].round(2)
    return out


def headline(df: pd.DataFrame, device: str = "cpu") -> list[str]:
    """One sentence per student on ``device``: its speed-up over BERT-large (padded, same input)
    and over the teacher, float32 and int8 — the numbers the report quotes."""
    lines = []
    sub = df[df["device"] == device]
    if sub.empty:
        return lines
    threads = sub["threads"].iloc[0]
    for name in dict.fromkeys(sub["model"]):
        if name.startswith(("BERT-large", "teacher")):
            continue
        r = sub[sub["model"] == name].set_index("input")
        parts = []
        for setting, row in r.iterrows():
            parts.append(f"{setting}: {row['ms/example']:.3g} ms/example, ×{row['speed-up vs BERT-large padded']:.0f} "
                         f"vs BERT-large padded, ×{row['speed-up vs teacher']:.1f} vs the teacher")
        where = f"{device}, {int(threads)} threads" if device == "cpu" else device
        lines.append(f"{name} ({where}) — " + "; ".join(parts))
    return lines
