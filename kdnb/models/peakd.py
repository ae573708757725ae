"""Pea-KD's students (Cho & Kang 2020): truncated BERTs and Shuffled Parameter Sharing.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from ..config import Config
from ..errors import ConfigError

# ---- the students: truncated teacher, SPS ---------------------------------------------------

def truncated_student(teacher, k: int):
    """A ``k``-layer copy of a BERT classifier: embeddings, layers ``0..k−1``, pooler and
    classifier copied from ``teacher`` (a transformers ``BertForSequenceClassification``).

    Returns:
        A new ``BertForSequenceClassification`` (the teacher is left unchanged).

    Raises:
        ConfigError: ``k`` outside ``1..teacher layers`` (naming ``peakd.layers``).
    """
    import copy

    from transformers import BertForSequenceClassification

    n = teacher.config.num_hidden_layers
    if not 1 <= k <= n:
        raise ConfigError(f"key 'peakd.layers': a student truncates the {n}-layer teacher, so depths must be in "
                          f"1..{n}; got {k}.")
    conf = copy.deepcopy(teacher.config)
    conf.num_hidden_layers = k
    student = BertForSequenceClassification(conf)
    wanted = student.state_dict()
    missing = student.load_state_dict({name: t for name, t in teacher.state_dict().items() if name in wanted},
                                      strict=False).missing_keys
    if missing:
        raise RuntimeError(f"student keys not found in the teacher: {missing}")
    return student


def sps_source_layers(k: int) -> list[int]:
    """The layers (0-based) whose parameters SPS shares: all ``k`` for ``k ≤ 3`` (Pea-KD's 1-,
    2- and 3-layer students), the top ``⌊k/2⌋`` above (the paper's 6-layer student: its top 3).

    Raises:
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(range(k)) if k <= 3 else list(range(k - k // 2, k))


def _shared_shuffled_layer(src: nn.Module, config, layer_idx: int) -> nn.Module:
    """A ``BertLayer`` whose parameters are those of ``src`` (the same modules, not copies) with
    the self-attention's ``query`` and ``key`` projections exchanged."""
    from transformers.models.bert.modeling_bert import BertLayer

    layer = BertLayer(config, layer_idx=layer_idx)  # its fresh parameters are replaced below
    sa, src_sa = layer.attention.self, src.attention.self
    sa.query, sa.key, sa.value = src_sa.key, src_sa.query, src_sa.value  # the shuffle: Q ↔ K
    layer.attention.output = src.attention.output
    layer.intermediate = src.intermediate
    layer.output = src.output
    return layer


def apply_sps(model, source_layers: Optional[Sequence[int]] = None):
    """Shuffled Parameter Sharing (Pea-KD §"Shuffled Parameter Sharing") on a transformers BERT
    classifier, in place: for each layer ``i`` of ``source_layers`` (default
    :func:`sps_source_layers`), a layer sharing layer ``i``'s parameters with query and key
    swapped is appended on top of the encoder, in order. A ``k``-layer student thus runs
    ``k + len(source_layers)`` layers with exactly the parameters of ``k``.

    Returns:
        ``model`` (``config.num_hidden_layers`` updated, ``config.sps_source_layers`` recorded).

    Raises:
        ValueError: a source layer index outside the encoder, or SPS applied twice.
    """
    encoder = model.bert.encoder
    k = len(encoder.layer)
    if getattr(model.config, "sps_source_layers", None):
        raise ValueError("SPS is already applied to this model")
    sources = sps_source_layers(k) if source_layers is None else list(source_layers)
    if not sources or any(not 0 <= i < k for i in sources):
        raise ValueError(f"source_layers must be indices in 0..{k - 1}, got {sources}")
    shared = [_shared_shuffled_layer(encoder.layer[i], model.config, k + j) for j, i in enumerate(sources)]
    encoder.layer = nn.ModuleList(list(encoder.layer) + shared)
    model.config.num_hidden_layers = len(encoder.layer)
    model.config.sps_source_layers = sources
    return model


def build_student(teacher, k: int, sps: bool):
    """The ``k``-layer student of :func:`truncated_student` of ``teacher`` (for Pea-KD: the
    pre-trained model, :func:`pretrained_source`), with :func:`apply_sps` if ``sps``."""
    student = truncated_student(teacher, k)
    return apply_sps(student) if sps else student


def pretrained_source(cfg: Config, num_labels: int):
    """The BERT the students are cut from with ``peakd.init: pretrained``: the model the
    teacher was fine-tuned from (``teacher.model_name_or_path``, resolved by
    :func:`kdnb.models.teacher.resolve_model_path`: the packaged MiniLM-L6 BERT by default) loaded with
    ``AutoModelForSequenceClassification`` and ``num_labels`` classes — pre-trained encoder, a
    fresh classifier drawn from the current torch RNG (seed before calling). Pea-KD (Cho & Kang
    2020, experimental set-up) and PKD (Sun et al. 2019, §4.1) initialise from the pre-trained
    BERT, not the fine-tuned teacher.

    Returns:
        A transformers ``BertForSequenceClassification`` (CPU, train mode).

    Raises:
        ConfigError: the model is not found (naming ``teacher.model_name_or_path``).
    """
    from transformers import AutoModelForSequenceClassification

    from .teacher import resolve_model_path

    path = resolve_model_path(cfg.teacher.model_name_or_path)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except OSError as e:
        raise ConfigError(f"key 'teacher.model_name_or_path': cannot load the pre-trained model {path} for "
                          f"peakd.init: pretrained ({e}); set peakd.init: teacher to start from the fine-tuned "
                          "teacher instead.") from None


def count_unique_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Number of parameters, each shared tensor counted once (``nn.Module.parameters`` already
    yields a shared ``Parameter`` once); ``embeddings=False`` leaves out ``bert.embeddings``
    (word, position and segment embeddings: how Pea-KD and the thesis size their students)."""
    skip = {id(p) for p in model.bert.embeddings.parameters()} if not embeddings else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)
