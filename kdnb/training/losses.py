"""Knowledge-distillation losses, kept apart from the training loop (as in TextBrewer).

Shapes: ``student_logits`` and ``teacher_logits`` are ``(batch, num_labels)`` float tensors;
``labels`` are ``(batch,)`` integer class ids. Every loss returns a scalar tensor (mean over
the batch).
"""

from __future__ import annotations

from typing import Callable, Optional

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


def mse_sum_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance between student and teacher logits, summed over the classes.

    Tang et al. (2019), eq. 2, as written: ``L_distill = ||z^B - z^S||_2^2`` per example
    (summed over the ``C`` logits), averaged over the batch: ``C`` times :func:`mse_logits`.
    With ``C`` classes the mean over the logits divides the gradient by ``C`` (57 on Sara); with
    Adadelta, whose first steps are about ``sqrt(ε)/sqrt(E[g²] + ε)`` times the gradient, such
    small gradients keep the updates tiny for many steps.

    Returns:
        scalar tensor (per-example sum, batch mean).

    Raises:
        ValueError: if the two tensors differ in shape.
    """
    _same_shape(student_logits, teacher_logits)
    diff = student_logits - teacher_logits.to(student_logits.dtype)
    return diff.pow(2).sum(-1).mean()


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
    _same_shape(student_logits, teacher_logits, temperature)
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
    _same_shape(student_logits, teacher_logits, temperature)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary cross-entropy with the gold labels, ``(batch, C)`` × ``(batch,)`` → scalar."""
    return F.cross_entropy(student_logits, labels)


def _same_shape(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> None:
    """Raise ValueError unless student and teacher logits have one shape and ``temperature`` > 0."""
    if a.shape != b.shape:
        raise ValueError(f"student logits {tuple(a.shape)} and teacher logits {tuple(b.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def logit_loss(name: str, temperature: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The KD loss on logits named in params as a 2-argument callable: ``mse`` (mean over the
    logits, as castorini/d-bert's ``nn.MSELoss``), ``mse_sum`` (summed over the logits, Tang et al.
    2019 eq. 2 as written), ``kl`` or ``ce`` (at ``temperature``).

    Raises:
        ValueError: unknown name.
    """
    if name == "mse":
        return mse_logits
    if name == "mse_sum":
        return mse_sum_logits
    if name == "kl":
        return lambda s, t: kl_divergence(s, t, temperature)
    if name == "ce":
        return lambda s, t: soft_cross_entropy(s, t, temperature)
    raise ValueError(f"unknown KD loss {name!r}; expected one of mse, mse_sum, kl, ce")


# ---------------------------------------------------------------------------------------------
# The KD-method zoo (issue 5): α-mix, PKD, Aguilar et al., noisy teacher. Loop-free: layers are
# stacked along a leading dimension and reduced with tensor operations.
# ---------------------------------------------------------------------------------------------
def masked_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the gold labels over the labelled rows only.

    Rows with ``label < 0`` (the augmented sentences of a transfer set carry ``-1``) are
    skipped; the mean is over the labelled rows, and a batch without any gold label gives 0
    (not NaN), so hard-label terms can be mixed into training on augmented transfer sets.

    Args:
        student_logits: ``(B, C)``.
        labels: ``(B,)`` integer class ids, ``-1`` for unlabelled rows.

    Returns:
        Scalar tensor (nats per labelled example).

    Raises:
        ValueError: ``labels`` is not ``(B,)`` for ``B`` rows of logits.
    """
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}")
    labelled = labels >= 0
    per_row = F.cross_entropy(student_logits.float(), labels.clamp(min=0), reduction="none")
    return (per_row * labelled).sum() / labelled.sum().clamp(min=1)


def alpha_mix(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Weighted average of the soft-target and the hard-target objectives.

    Hinton et al. (2015), "Distilling the knowledge in a neural network", §2 (last paragraph):
    ``L = α · T² · KL(softmax(z^T/T) || softmax(z^S/T)) + (1 − α) · CE(y, softmax(z^S))``, the
    hard term at temperature 1. The soft term is :func:`kl_divergence` (the cross-entropy of
    the paper minus the constant entropy of the soft targets: same gradients, 0 at a match);
    the hard term is :func:`masked_cross_entropy` (rows labelled ``-1`` are skipped).

    Args:
        student_logits, teacher_logits: ``(B, C)``.
        labels: ``(B,)`` gold class ids (``-1``: none).
        alpha: weight of the soft term in [0, 1].
        temperature: ``T > 0`` of the soft term.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: shapes differ, ``alpha`` outside [0, 1] or ``temperature <= 0``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = kl_divergence(student_logits, teacher_logits, temperature)
    return alpha * soft + (1.0 - alpha) * masked_cross_entropy(student_logits, labels)


def patient_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """PKD "patient" loss on the normalised [CLS] states of matched layers.

    Sun et al. (2019), "Patient knowledge distillation for BERT model compression", eq. 3:
    ``L_PT = Σ_j ‖ h^S_j / ‖h^S_j‖₂ − h^T_{g(j)} / ‖h^T_{g(j)}‖₂ ‖₂²``, summed over the matched
    layers ``j`` and averaged over the batch (the paper sums over the training examples):
    ``reduction="sum"``. ``reduction="mean"`` is the form of the PKD and Pea-KD code (Cho & Kang
    2020), ``F.mse_loss(normalize(h^S), normalize(h^T))``: averaged over layers, examples and
    hidden units, which their β values assume (it is the sum form divided by ``L · H``). Where
    the student is narrower than the teacher, pass its states through a learned linear map to
    the teacher's width first (:class:`kdnb.models.bert_student.DistillationModel` does; the
    paper's student has the teacher's width, so it needs none).

    Args:
        student_cls, teacher_cls: ``(L, B, H)`` — [CLS] states of ``L`` matched layer pairs.
        reduction: ``sum`` (in [0, 4·L]) or ``mean`` (in [0, 4/H]).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: shapes differ, the tensors are not 3-D or an unknown ``reduction``.
    """
    if student_cls.shape != teacher_cls.shape or student_cls.dim() != 3:
        raise ValueError(f"student [CLS] {tuple(student_cls.shape)} and teacher [CLS] {tuple(teacher_cls.shape)} "
                         "must both be (layers, batch, hidden)")
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    if reduction == "mean":
        return F.mse_loss(s, t)
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return (s - t).pow(2).sum(-1).mean(-1).sum()


def pkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    student_cls: Optional[torch.Tensor],
    teacher_cls: Optional[torch.Tensor],
    alpha: float,
    beta: float,
    temperature: float = 1.0,
    reduction: str = "sum",
) -> torch.Tensor:
    """The PKD objective: ``L_PKD = (1 − α) · L_CE + α · L_DS + β · L_PT``.

    Sun et al. (2019) eq. 4 (eq. 2 plus the patient term of eq. 3): ``L_CE`` the gold-label
    cross-entropy (:func:`masked_cross_entropy`; 0 for a batch without gold labels), ``L_DS``
    the distillation loss at temperature ``T`` (here ``T² · KL``, same gradients as the paper's
    soft cross-entropy), ``L_PT`` :func:`patient_loss` with ``reduction`` (``mean``: the PKD and
    Pea-KD code, which Pea-KD trains with). The patient term is left out when ``beta`` is 0 or
    no layers are matched (``student_cls`` None or of 0 layers).

    Args:
        student_logits, teacher_logits: ``(B, C)``; labels ``(B,)`` (``-1``: none).
        student_cls, teacher_cls: ``(L, B, H)`` matched [CLS] states, or None.
        alpha: in [0, 1]; beta: ``>= 0`` weight of the patient term.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: bad shapes, ``alpha`` outside [0, 1], ``beta < 0`` or ``temperature <= 0``.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    loss = alpha_mix(student_logits, teacher_logits, labels, alpha, temperature)
    if beta > 0 and student_cls is not None and student_cls.shape[0] > 0:
        loss = loss + beta * patient_loss(student_cls, teacher_cls, reduction)
    return loss


def attention_kl(
    student_attentions: torch.Tensor,
    teacher_attentions: torch.Tensor,
    attention_mask: torch.Tensor,
    layer_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """KL divergence between the teacher's and the student's self-attention distributions.

    Aguilar et al. (2020), "Knowledge distillation from internal representations", §3
    (matching internal representations, the KL term): for each matched layer and each query
    token ``i``, ``KL(a^T_i ‖ a^S_i) = Σ_k a^T_ik · log(a^T_ik / a^S_ik)``. The paper's student
    has the teacher's number of heads; here student and teacher may differ (3 vs 12), so each
    model's attention probabilities are first averaged over its heads (still a distribution
    per query row). Padding query rows are left out; the result is averaged over the real
    query tokens of the batch and summed over layers, each weighted by ``layer_weights``.

    Args:
        student_attentions: ``(L, B, A_s, T, T)`` attention probabilities (rows sum to 1).
        teacher_attentions: ``(L, B, A_t, T, T)``.
        attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding.
        layer_weights: ``(L,)`` weight of each layer (the schedules of
            :func:`aguilar_weights`); None: all 1.

    Returns:
        Scalar tensor (nats), 0 when the head-averaged distributions agree.

    Raises:
        ValueError: the layer, batch or token dimensions differ.
    """
    if (student_attentions.dim() != 5 or teacher_attentions.dim() != 5
            or student_attentions.shape[:2] != teacher_attentions.shape[:2]
            or student_attentions.shape[-2:] != teacher_attentions.shape[-2:]
            or attention_mask.shape != student_attentions.shape[1:2] + student_attentions.shape[-1:]):
        raise ValueError(f"attentions {tuple(student_attentions.shape)} (student), {tuple(teacher_attentions.shape)} "
                         f"(teacher) and mask {tuple(attention_mask.shape)}: expected (L, B, heads, T, T) twice "
                         "with the same L, B, T and a (B, T) mask")
    eps = torch.finfo(torch.float32).tiny
    p_s = student_attentions.float().mean(2).clamp(min=eps)  # (L, B, T, T)
    p_t = teacher_attentions.float().mean(2).clamp(min=eps)
    kl_rows = (p_t * (p_t.log() - p_s.log())).sum(-1)  # (L, B, T): one KL per query row
    rows = attention_mask.to(kl_rows.dtype)            # (B, T)
    per_layer = (kl_rows * rows).sum((-1, -2)) / rows.sum().clamp(min=1)  # (L,)
    return _weighted_sum(per_layer, layer_weights)


def _weighted_sum(per_layer: torch.Tensor, layer_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """``Σ_l w_l · x_l`` for a ``(L,)`` tensor (``w = 1`` when None).

    Raises:
        ValueError: ``layer_weights`` is not ``(L,)``.
    """
    if layer_weights is None:
        return per_layer.sum()
    if layer_weights.shape != per_layer.shape:
        raise ValueError(f"layer_weights {tuple(layer_weights.shape)} must be {tuple(per_layer.shape)} (one per layer)")
    return (per_layer * layer_weights.to(per_layer)).sum()


def cls_cosine(
    student_cls: torch.Tensor, teacher_cls: torch.Tensor, layer_weights: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``1 − cos(h^S_[CLS], h^T_[CLS])``, averaged over the batch, summed over matched layers
    (each weighted by ``layer_weights``, ``(L,)``; None: all 1).

    Aguilar et al. (2020), §3 (matching internal representations, the cosine term on the
    [CLS] activations). A student narrower than the teacher is first mapped to the teacher's
    width by a learned linear layer (the paper's student has the teacher's width).

    Args:
        student_cls, teacher_cls: ``(L, B, H)``.
        layer_weights: ``(L,)`` or None.

    Returns:
        Scalar tensor in [0, 2·Σw].

    Raises:
        ValueError: shapes differ, the tensors are not 3-D or ``layer_weights`` is not ``(L,)``.
    """
    if student_cls.shape != teacher_cls.shape or student_cls.dim() != 3:
        raise ValueError(f"student [CLS] {tuple(student_cls.shape)} and teacher [CLS] {tuple(teacher_cls.shape)} "
                         "must both be (layers, batch, hidden)")
    per_layer = (1.0 - F.cosine_similarity(student_cls.float(), teacher_cls.float(), dim=-1)).mean(-1)
    return _weighted_sum(per_layer, layer_weights)


def aguilar_weights(schedule: str, n_layers: int, progress: float, internal_fraction: float) -> tuple[torch.Tensor, float]:
    """Which losses are on at a point of training, for Aguilar et al. (2020)'s layer schedules.

    §4 (training algorithms) of Aguilar et al. (2020): the internal layers are distilled bottom
    up, then the classifier. The first ``internal_fraction`` of the training steps is split
    into ``n_layers`` equal stages (the paper moves on when a layer's loss converges; fixed
    stages keep runs comparable and resumable):

    * ``progressive`` (PID): stage ``k`` trains only matched layer ``k``; afterwards only the
      logit (soft-target) loss;
    * ``stacked`` (SID): stage ``k`` trains layers ``1..k`` together; afterwards all layers
      plus the logit loss.

    Args:
        schedule: ``progressive`` | ``stacked``.
        n_layers: matched layer pairs ``L``.
        progress: fraction of the training steps done, in [0, 1].
        internal_fraction: fraction of the steps spent on the internal stages, in [0, 1).

    Returns:
        ``(layer_weights, logit_weight)``: a ``(L,)`` float tensor of 0/1 and a float.

    Raises:
        ValueError: unknown schedule or out-of-range arguments.
    """
    if schedule not in ("progressive", "stacked"):
        raise ValueError(f"schedule must be progressive or stacked, got {schedule!r}")
    if n_layers < 1 or not 0.0 <= internal_fraction < 1.0:
        raise ValueError(f"need n_layers >= 1 and internal_fraction in [0, 1), got {n_layers}, {internal_fraction}")
    layers = torch.arange(n_layers)
    if progress >= internal_fraction:
        return (torch.zeros(n_layers) if schedule == "progressive" else torch.ones(n_layers)), 1.0
    stage = min(n_layers - 1, int(progress / internal_fraction * n_layers))
    on = (layers == stage) if schedule == "progressive" else (layers <= stage)
    return on.float(), 0.0


def noisy_logits(
    teacher_logits: torch.Tensor, sigma: float, p: float = 1.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Teacher logits perturbed with multiplicative Gaussian noise (a "noisy teacher").

    Sau & Balasubramanian (2016), "Deep model compression: distilling knowledge from noisy
    teachers", §3: ``z' = (1 + ξ) ⊙ z`` with ``ξ ~ N(0, σ²)`` drawn per logit, applied to a
    fraction ``p`` of the rows of each batch (the others keep ``z``); a regulariser akin to
    training with several teachers.

    Args:
        teacher_logits: ``(B, C)``.
        sigma: standard deviation of ``ξ`` (``>= 0``; 0 returns the logits unchanged).
        p: probability that a row is perturbed, in [0, 1].
        generator: optional ``torch.Generator`` for reproducible noise.

    Returns:
        ``(B, C)`` tensor (a new tensor; the input is not modified).

    Raises:
        ValueError: ``sigma < 0`` or ``p`` outside [0, 1].
    """
    if sigma < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need sigma >= 0 and p in [0, 1], got sigma={sigma}, p={p}")
    z = teacher_logits.float()
    xi = torch.randn(z.shape, generator=generator, device=z.device) * sigma
    rows = (torch.rand(z.shape[:1], generator=generator, device=z.device) < p).float().unsqueeze(-1)
    return z * (1.0 + xi * rows)
