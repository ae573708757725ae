"""Knowledge-distillation losses, kept apart from the training loop (as in TextBrewer).

Shapes: ``student_logits`` and ``teacher_logits`` are ``(batch, num_labels)`` float tensors;
``labels`` are ``(batch,)`` integer class ids. Every loss returns a scalar tensor (mean over
the batch).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and teacher logits.

    Tang et al. (2019), "Distilling task-specific knowledge from BERT into simple neural
    networks", eq. 2: ``L_distill = ||z^B - z^S||_2^2``, here averaged over the batch and the
    ``num_labels`` logits (``torch.nn.functional.mse_loss``, reduction ``mean``).

    Raises:
        ValueError: if the two tensors differ in shape.
    """
    _same_shape(student_logits, teacher_logits)
    return F.mse_loss(student_logits, teacher_logits.to(student_logits.dtype))


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of the student's softened distribution against the teacher's soft targets.

    Hinton et al. (2015), "Distilling the knowledge in a neural network", §2:
    ``L = -T^2 · Σ_c softmax(z^T/T)_c · log softmax(z^S/T)_c``, averaged over the batch.
    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures.

    Raises:
        ValueError: if shapes differ or ``temperature <= 0``.
    """
    _same_shape(student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    soft_targets = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(soft_targets * log_probs).sum(-1).mean() * temperature**2


def kl_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher_T || student_T) · T², Hinton et al. (2015) §2; equals :func:`soft_cross_entropy`
    minus the (constant) entropy of the soft targets, so it is 0 when the distributions match.

    Raises:
        ValueError: if shapes differ or ``temperature <= 0``.
    """
    _same_shape(student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary cross-entropy with the gold labels, ``(batch, C)`` × ``(batch,)`` → scalar."""
    return F.cross_entropy(student_logits, labels)


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"student logits {tuple(a.shape)} and teacher logits {tuple(b.shape)} differ in shape")


def logit_loss(name: str, temperature: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The KD loss on logits named in params (``mse`` | ``kl`` | ``ce``) as a 2-argument callable.

    Raises:
        ValueError: unknown name.
    """
    if name == "mse":
        return mse_logits
    if name == "kl":
        return lambda s, t: kl_divergence(s, t, temperature)
    if name == "ce":
        return lambda s, t: soft_cross_entropy(s, t, temperature)
    raise ValueError(f"unknown KD loss {name!r}; expected one of mse, kl, ce")
