"""GPT-2 augmentation (Tang & Lin 2019; Sučík 2020, §3) → ``<out>/augmented/gpt2_model/`` and
``<out>/augmented/gpt2/``.

A GPT-2 language model is fine-tuned on the training sentences (thesis: ``gpt2-medium``, AdamW
5e-5, weight decay 1e-3, 1 epoch, batch 16), or, with ``model_name_or_path: scratch``, a small
GPT-2 is built from ``GPT2Config`` with a byte-level BPE trained on the training sentences and
trained by the same code. Each new sentence starts with a subword drawn from the distribution of
sentence-initial subwords of the training set and is sampled (KV cache, batched) until
end-of-text or ``max_length`` subwords; duplicates and training sentences are dropped until
``n_sentences`` unique ones exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import warnings
from typing import Optional, Sequence

import datasets
import numpy as np
import torch

from .. import store
from ..config import Config
from ..data import content_hash
from ..errors import ConfigError, StageInputError
from ..utils import Timer, atomic_path, set_seed, tqdm
from .shards import (
    AugmentResult,
    augmented_artefact,
    augmented_dir,
    column,
    row_key,
    row_keys,
    training_sentences,
    write_shard,
)

# ---------------------------------------------------------------------------------------------
# GPT-2 augmentation (Sučík 2020, §3)
# ---------------------------------------------------------------------------------------------
EOS = "<|endoftext|>"
SAMPLER_VERSION = 2  # in the samples' reuse key: 2 = _sample_batch (finished rows leave the batch)
SMALL_LM_PARAMS = 20_000_000


@contextlib.contextmanager
def _cpu_threads_for(model, device: torch.device):
    """Run a small model (< 20M parameters) on the CPU with one intra-op thread.

    Its matrix products are too small to share: with two threads on a busy 2-core machine,
    sampling 256 sentences took 54 s instead of 3.8 s with one (spin-waiting OpenMP threads).
    """
    n = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_LM_PARAMS
    if device.type == "cpu" and small and n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _scratch_tokenizer(sentences: Sequence[str], vocab_size: int):
    """A GPT-2-style byte-level BPE (special token ``<|endoftext|>``) trained on ``sentences``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(list(sentences), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=EOS)


def build_gpt2(cfg: Config, sentences: Sequence[str]):
    """The GPT-2 language model and tokenizer to fine-tune, per ``augment.gpt2.model_name_or_path``.

    A hub id or folder (thesis: ``gpt2-medium``) is loaded with ``AutoModelForCausalLM`` /
    ``AutoTokenizer.from_pretrained``; ``scratch`` builds a GPT-2 from ``GPT2Config``
    (``scratch_n_layer`` × ``scratch_n_embd``, ``scratch_n_head`` heads, context ``max_length``)
    with a byte-level BPE of ``scratch_vocab_size`` trained on ``sentences`` — for machines
    without GPT-2 weights. Both are then trained by :func:`train_gpt2`.

    Returns:
        ``(model, tokenizer, description)``.

    Raises:
        ConfigError: the named model cannot be loaded (e.g. offline and not cached).
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
    )

    g = cfg.augment.gpt2
    if g.model_name_or_path == "scratch":
        tok = _scratch_tokenizer(sentences, g.scratch_vocab_size)
        conf = GPT2Config(vocab_size=len(tok), n_positions=g.max_length, n_embd=g.scratch_n_embd,
                          n_layer=g.scratch_n_layer, n_head=g.scratch_n_head, bos_token_id=tok.eos_token_id,
                          eos_token_id=tok.eos_token_id)
        set_seed(cfg.seed)
        model = GPT2LMHeadModel(conf)
        desc = (f"small GPT-2 built from GPT2Config ({g.scratch_n_layer} layers, {g.scratch_n_embd} hidden, "
                f"{g.scratch_n_head} heads, BPE vocabulary {len(tok)}) and trained on the training sentences "
                "only (no pre-trained GPT-2 weights)")
        return model, tok, desc
    try:
        tok = AutoTokenizer.from_pretrained(g.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(g.model_name_or_path)
    except OSError as e:
        raise ConfigError(
            f"key 'augment.gpt2.model_name_or_path': cannot load {g.model_name_or_path!r} ({e}). Offline, give a "
            "local folder with the GPT-2 weights, or 'scratch' to train a small GPT-2 on the training sentences."
        ) from None
    if tok.eos_token is None:
        tok.eos_token = EOS
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, f"pre-trained {g.model_name_or_path}, fine-tuned on the training sentences"


def encode_for_lm(tokenizer, sentences: Sequence[str], max_length: int) -> list[list[int]]:
    """Subword ids of each sentence, cut to ``max_length - 1``, followed by end-of-text."""
    enc = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [ids[: max_length - 1] + [eos] for ids in enc if ids]


class _LMCollate:
    """Right-pad id lists; ``labels`` are the ids with -100 on padding (GPT-2 shifts them)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def first_subword_distribution(encoded: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, probabilities)`` of the sentence-initial subwords of the training sentences."""
    firsts = np.array([ids[0] for ids in encoded if ids], dtype=np.int64)
    ids, counts = np.unique(firsts, return_counts=True)
    return ids, counts / counts.sum()


def _gpt2_model_key(cfg: Config, train: datasets.Dataset) -> str:
    g = dataclasses.asdict(cfg.augment.gpt2)
    for k in ("n_sentences", "generate_batch_size", "temperature", "top_k", "top_p", "save_steps"):
        g.pop(k)
    if g["gradient_accumulation_steps"] == 1:  # as Config.section_hash: keys saved before it existed
        g.pop("gradient_accumulation_steps")
    blob = repr(sorted(g.items())) + cfg.section_hash("task", "seed", "train_limit", "mixed_precision")
    return hashlib.sha256(blob.encode()).hexdigest()[:16] + f"-{content_hash(train)}"


def train_gpt2(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> dict:
    """Fine-tune (or, ``scratch``, train) the GPT-2 LM on the training sentences.

    AdamW (``augment.gpt2.learning_rate``, ``weight_decay``), linear decay without warm-up,
    ``epochs`` × batches of ``batch_size`` sentences, each sentence followed by end-of-text;
    dev perplexity after every epoch. Runs through :func:`kdnb.training.fit.fit` (accelerate,
    per-epoch checkpoint and resume). Saves ``<out>/augmented/gpt2_model/``
    (``save_pretrained``) and ``gpt2_model.json``; reused while the parameters match.

    Returns:
        The saved record: ``description``, ``n_params``, ``dev_perplexity``, ``curve``,
        ``seconds``, ``reused``.
    """
    from transformers import get_linear_schedule_with_warmup

    from ..training.fit import fit, make_accelerator

    g = cfg.augment.gpt2
    train = training_sentences(cfg, dsd)
    if "sentence2" in train.column_names:
        raise ConfigError(f"augment: GPT-2 generation makes single sentences; task {cfg.task!r} has sentence pairs "
                          "(use transfer_set: rules).")
    mdir = cfg.out / "augmented" / "gpt2_model"
    key = _gpt2_model_key(cfg, train)
    art = store.Artefact("gpt2_model", mdir, key, cfg.out, field="config_hash")
    saved = art.saved(force)
    if saved:
        return {**saved, "reused": True}

    sentences = column(train, "sentence")
    model, tok, desc = build_gpt2(cfg, sentences)
    enc = encode_for_lm(tok, sentences, g.max_length)
    dev_enc = encode_for_lm(tok, column(dsd["dev"], "sentence"), g.max_length)
    collate = _LMCollate(tok.eos_token_id)
    accelerator = make_accelerator(cfg.mixed_precision, g.gradient_accumulation_steps)
    set_seed(cfg.seed)
    no_decay = ("bias", "ln_", "LayerNorm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(x in n for x in no_decay)],
         "weight_decay": g.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(x in n for x in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=g.learning_rate)
    steps = g.epochs * math.ceil(len(enc) / g.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps)

    @torch.no_grad()
    def dev_perplexity(m) -> float:
        total, n = 0.0, 0
        loader = torch.utils.data.DataLoader([{"input_ids": x} for x in dev_enc], batch_size=64, collate_fn=collate)
        for b in loader:
            b = {k: v.to(accelerator.device) for k, v in b.items()}
            with accelerator.autocast():
                logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            lab = b["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), lab, ignore_index=-100,
                                                    reduction="sum")
            total += float(nll)
            n += int((lab != -100).sum())
        return math.exp(total / max(n, 1))

    mdir.parent.mkdir(parents=True, exist_ok=True)
    with _cpu_threads_for(model, accelerator.device):
        fr = fit(model, train_set=[{"input_ids": x} for x in enc], collate_fn=collate, batch_size=g.batch_size,
                 loss_fn=lambda m, b: m(**b).loss, optimizer=optimizer, scheduler=scheduler, epochs=g.epochs,
                 evaluate=dev_perplexity, seed=cfg.seed, ckpt_dir=mdir.with_name("gpt2_model.checkpoint"),
                 accelerator=accelerator, lengths=[len(x) for x in enc], desc="GPT-2 LM",
                 save_steps=g.save_steps, num_workers=cfg.num_workers, select_best="min")
    model = accelerator.unwrap_model(model)
    curve = [{("dev_perplexity" if k == "dev_score" else k): v for k, v in r.items()} for r in fr.curve]
    first_ids, first_p = first_subword_distribution(enc)
    rec = {"model": g.model_name_or_path, "description": desc,
           "n_params": sum(p.numel() for p in model.parameters()), "dev_perplexity": fr.best_score,
           "curve": curve, "seconds": round(fr.seconds, 2), "training_sentences": len(enc),
           "first_subwords": {"ids": first_ids.tolist(), "p": first_p.tolist()}}
    with atomic_path(mdir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return {**art.finish(rec), "reused": False}


def load_gpt2(cfg: Config):
    """The trained GPT-2 LM and tokenizer from ``<out>/augmented/gpt2_model``.

    Raises:
        StageInputError: :func:`train_gpt2` has not run.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mdir = cfg.out / "augmented" / "gpt2_model"
    if not mdir.is_dir():
        raise StageInputError(f"{mdir}: no trained GPT-2; run notebooks/02_augmentation first.")
    return AutoModelForCausalLM.from_pretrained(mdir), AutoTokenizer.from_pretrained(mdir)


def _generation_device(cfg: Config, device: Optional[str]) -> torch.device:
    """``device`` if given, else accelerate's device for this process (its own GPU under
    ``accelerate launch``, else the GPU, else the CPU)."""
    if device:
        return torch.device(device)
    from accelerate import PartialState

    return PartialState().device


@torch.no_grad()
def sample_sentences(model, tokenizer, first_ids: np.ndarray, *, max_length: int, batch_size: int,
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                     seed: int = 0) -> dict[str, list]:
    """Sample one sentence per entry of ``first_ids`` (its first subword) from the LM.

    Batched sampling with the KV cache (:func:`_sample_batch`); each row stops at end-of-text
    or ``max_length`` subwords (first included) and leaves the batch, which stops when all its
    rows have. The prompts need no length bucketing: every prompt is one subword, so a batch
    holds no padding. RNG:
    ``torch.manual_seed(seed)`` before the first batch (so a shard is reproducible on the same
    hardware).

    Returns:
        ``{"sentence", "first_subword", "n_subwords", "ended"}`` lists: the decoded text (runs
        of whitespace collapsed), its first subword id, its length in subwords (without
        end-of-text) and whether it ended with end-of-text rather than at ``max_length``.
    """
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    torch.manual_seed(seed)
    out: dict[str, list] = {"sentence": [], "first_subword": [], "n_subwords": [], "ended": []}
    for b in range(0, len(first_ids), batch_size):
        inp = torch.as_tensor(np.asarray(first_ids[b:b + batch_size]), dtype=torch.long, device=device)
        for ids, ended in zip(*_sample_batch(model, inp, eos, max_length, temperature, top_k, top_p)):
            text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            out["sentence"].append(" ".join(text.split()))
            out["first_subword"].append(ids[0])
            out["n_subwords"].append(len(ids))
            out["ended"].append(ended)
    return out


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k, then nucleus (top-p, Holtzman et al. 2020) filtering of ``(B, V)`` logits: the
    tokens outside are set to -inf (as transformers' TopK/TopP logits warpers; ``top_k`` 0 and
    ``top_p`` 1.0 leave the logits as they are)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return logits


def _sample_batch(model, first: torch.Tensor, eos: int, max_length: int, temperature: float, top_k: int,
                  top_p: float) -> tuple[list[list[int]], list[bool]]:
    """Ancestral sampling with the KV cache from one first subword per row, ``first`` ``(B,)``.

    A row stops at end-of-text or at ``max_length`` subwords (the first included) and leaves the
    batch then: its rows are dropped from the input and the cache
    (``DynamicCache.batch_select_indices``), so the finished sentences of a batch cost nothing
    more — ``model.generate`` keeps computing them until the batch's longest row ends (on CPU
    about 2–3× the work for CoLA-like samples of ≈ 15 subwords at ``max_length`` 64). All rows
    of the batch are at the same position, so no attention mask is needed. Draws from the
    global torch RNG (``torch.multinomial``).

    Returns:
        ``(ids, ended)``: per row its subword ids without end-of-text, and whether it ended with
        end-of-text (False: cut at ``max_length``).
    """
    import inspect

    # the cache's keyword: `cache` in recent transformers, `past_key_values` before
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    seqs = [[int(t)] for t in first.tolist()]
    ended = [False] * len(seqs)
    alive = torch.arange(len(seqs))
    step_ids = first[:, None]
    past = None
    for _ in range(max_length - 1):
        o = model(input_ids=step_ids, use_cache=True, logits_to_keep=1, **{key: past})
        logits = _filter_logits(o.logits[:, -1, :].float() / temperature, top_k, top_p)
        nxt = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
        past = getattr(o, key)
        stop = nxt == eos
        for r, t, s in zip(alive.tolist(), nxt.tolist(), stop.tolist()):
            if s:
                ended[r] = True
            else:
                seqs[r].append(t)
        if bool(stop.any()):
            keep = (~stop).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, nxt = alive[keep.cpu()], nxt[keep]
            past.batch_select_indices(keep)
        step_ids = nxt[:, None]
    return seqs, ended


def augment_gpt2(cfg: Config, dsd: datasets.DatasetDict, force: bool = False,
                 device: Optional[str] = None) -> AugmentResult:
    """Generate ``augment.gpt2.n_sentences`` unique new sentences with the GPT-2 LM (thesis §3).

    Trains the LM first if needed (:func:`train_gpt2`). Shard ``k`` holds ``shard_size``
    samples whose first subwords are drawn (``numpy`` RNG seeded ``(seed, k)``) from the
    training set's sentence-initial subwords, continued by :func:`sample_sentences` with seed
    ``(seed, k)``; shards are added until ``n_sentences`` unique sentences that are not training
    sentences exist (at most 5× that many samples are drawn; fewer kept gives a warning).
    The LM runs on accelerate's device for this process; with ``mixed_precision`` bf16/fp16 on
    a GPU its weights are cast to that type once (not autocast: decoding reads every weight
    for each new subword, so half-size weights halve the memory traffic that bounds it). A new
    set logs the LM's training and the sampling time as the stage ``augment_gpt2``
    (:func:`kdnb.store.record_time`).

    Returns:
        :class:`AugmentResult`; ``stats`` has ``generated``, ``unique``, ``kept``, ``ended``
        (share ending in end-of-text), ``seconds``, ``sentences_per_second``, ``model``.
    """
    g = cfg.augment.gpt2
    train = training_sentences(cfg, dsd)
    lm = train_gpt2(cfg, dsd, force=force)
    out = augmented_dir(cfg, "gpt2")
    # The samples depend on these (the batch size too: it sets the order of the RNG draws), not on
    # n_sentences: shard k is drawn with its own seed, so a larger n_sentences yields a superset
    # (and an interrupted run may resume under a new n_sentences).
    gen_keys = {k: getattr(g, k) for k in ("temperature", "top_k", "top_p", "max_length", "generate_batch_size")}
    gen_keys["sampler"] = SAMPLER_VERSION
    shard_meta = {"config_hash": f"{lm['config_hash']}-{cfg.augment.shard_size}-"
                  + hashlib.sha256(repr(sorted(gen_keys.items())).encode()).hexdigest()[:12]}
    meta = {"config_hash": f"{shard_meta['config_hash']}-{g.n_sentences}"}
    art = augmented_artefact(cfg, "gpt2", meta["config_hash"])
    saved = art.saved(force)
    if saved:
        return AugmentResult("gpt2", datasets.load_from_disk(str(out)), saved["stats"], reused=True, artefact=art)

    model, tok = load_gpt2(cfg)
    dev = _generation_device(cfg, device)
    model.to(dev).eval()
    if dev.type == "cuda" and cfg.mixed_precision in ("bf16", "fp16"):
        model.to(torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16)
    first_ids = np.array(lm["first_subwords"]["ids"], dtype=np.int64)
    first_p = np.array(lm["first_subwords"]["p"], dtype=np.float64)
    root = out.with_name(out.name + ".shards")
    store.open_dir(root, shard_meta, force)
    S = cfg.augment.shard_size
    max_shards = math.ceil(5 * g.n_sentences / S)
    seen = set(row_keys(train))
    uniq: set[int] = set()
    keep: list[int] = []
    shards, offset, n_built, gen_seconds = [], 0, 0, 0.0

    with Timer() as timer, _cpu_threads_for(model, dev):
        bar = tqdm(total=g.n_sentences, desc="GPT-2 generation", leave=False)
        for k in range(max_shards):
            def make(k=k) -> datasets.Dataset:
                rng = np.random.default_rng([cfg.seed, k])
                firsts = rng.choice(first_ids, size=S, p=first_p)
                seed = int(rng.integers(0, 2**31 - 1))
                return datasets.Dataset.from_dict(sample_sentences(
                    model, tok, firsts, max_length=g.max_length, batch_size=g.generate_batch_size,
                    temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=seed))

            with Timer() as t_shard:
                shard, built = write_shard(root, k, make)
            if built:
                n_built += len(shard)
                gen_seconds += t_shard.seconds
            shards.append(shard)
            before = len(keep)
            for i, s in enumerate(column(shard, "sentence")):
                h = row_key(s)
                if not s or h in uniq:
                    continue
                uniq.add(h)
                if h not in seen:
                    keep.append(offset + i)
                    if len(keep) == g.n_sentences:
                        break
            offset += len(shard)
            bar.update(len(keep) - before)
            if len(keep) >= g.n_sentences:
                break
        bar.close()
        if len(keep) < g.n_sentences:
            warnings.warn(f"GPT-2 generation: only {len(keep)} unique new sentences in {offset} samples "
                          f"(asked for {g.n_sentences}).", stacklevel=2)
        allgen = datasets.concatenate_datasets(shards)
        ended = float(np.mean(column(allgen, "ended"))) if len(allgen) else 0.0
        ds = allgen.select(keep)
        ds = ds.add_column("source", ["gpt2"] * len(ds)).add_column("origin", [-1] * len(ds))
    stats = {"generated": offset, "unique": len(uniq), "kept": len(ds), "ended": round(ended, 4),
             "seconds": round(timer.seconds, 2),
             "sentences_per_second": round(n_built / gen_seconds, 1) if gen_seconds else None,
             "device": str(dev), "model": lm["model"], "description": lm["description"],
             "lm_seconds": lm["seconds"], "lm_dev_perplexity": lm["dev_perplexity"], "lm_n_params": lm["n_params"]}
    cols = ["sentence", "source", "origin", "first_subword", "n_subwords"]
    ds = art.save_dataset(ds.select_columns(cols), {"stats": stats}, shards=root)
    store.record_time(cfg, "augment_gpt2", stats["seconds"] + (lm["seconds"] or 0))  # LM training + sampling
    return AugmentResult("gpt2", ds, stats, reused=False, artefact=art)
