"""What every student shares: the PKD layer map and the one parameter counter."""

from __future__ import annotations

import math

from torch import nn


def layer_map(student_layers: int, teacher_layers: int, include_last: bool = True) -> list[int]:
    """The teacher layer ``g(j)`` each student layer ``j = 1..L`` learns from (1-based).

    ``g(j) = round(j · N / L)`` with halves rounded up: the uniform "skip" mapping of PKD (Sun
    et al. 2019, §3.1, PKD-Skip: every ``N/L``-th layer), e.g. 5 → 6 layers gives 1, 2, 4, 5, 6
    and 4 → 6 layers 2, 3, 5, 6. A student deeper than its teacher (Pea-KD's SPS doubles a
    student's effective depth) maps many-to-one, never below layer 1. ``include_last=False``
    drops ``j = L``, whose output the logits already distil (PKD; Pea-KD's intermediate layers).

    Raises:
        ValueError: fewer than one student or teacher layer.
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"need >= 1 student layers ({student_layers}) and teacher layers ({teacher_layers})")
    last = student_layers if include_last else student_layers - 1
    return [max(1, math.floor(j * teacher_layers / student_layers + 0.5)) for j in range(1, last + 1)]


def count_parameters(model: nn.Module, trainable_only: bool = False, embeddings: bool = True) -> int:
    """Number of parameters, a tensor shared between modules counted once (SPS).

    Args:
        trainable_only: only those with ``requires_grad``.
        embeddings: False leaves out every ``nn.Embedding`` table (BERT's word, position and
            token-type embeddings; the BiLSTM's word embeddings, both channels), as the thesis
            does when it sizes its students at 2.4M "trainable, non-embedding" parameters and
            Pea-KD its students. Parameters of dynamically quantised modules are packed and not
            counted here; count the float model instead.
    """
    skip = set()
    if not embeddings:
        skip = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip and (p.requires_grad or not trainable_only))
