import math

import pytest
import torch

from kdnb.training.losses import (
    hard_cross_entropy,
    kl_divergence,
    logit_loss,
    mse_logits,
    mse_sum_logits,
    soft_cross_entropy,
)

S = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
T = torch.tensor([[3.0, 0.0], [1.0, -1.0]])


def test_mse_on_hand_computed_values():
    # squared differences: (2², 2²), (1², 1²) → mean over 4 elements = 10/4
    assert mse_logits(S, T).item() == pytest.approx(2.5)
    assert mse_logits(T, T).item() == 0.0


def test_mse_sum_on_hand_computed_values_and_its_gradient_scale():
    # per example: 2² + 2² = 8 and 1² + 1² = 2 → batch mean 5 (Tang et al. 2019, eq. 2 summed over classes)
    assert mse_sum_logits(S, T).item() == pytest.approx(5.0)
    assert logit_loss("mse_sum")(S, T).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="differ in shape"):
        mse_sum_logits(S, T[:1])
    # with C classes, the mean over the logits has C times smaller gradients (here C = 57, as Sara)
    s = torch.randn(4, 57, requires_grad=True)
    t = torch.randn(4, 57)
    g_mean, = torch.autograd.grad(mse_logits(s, t), s)
    g_sum, = torch.autograd.grad(mse_sum_logits(s, t), s)
    torch.testing.assert_close(g_sum, 57 * g_mean)


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_soft_cross_entropy_on_hand_computed_values():
    temp = 2.0
    expected = 0.0
    for s, t in zip(S.tolist(), T.tolist()):
        p_t = _softmax([v / temp for v in t])
        p_s = _softmax([v / temp for v in s])
        expected += -sum(a * math.log(b) for a, b in zip(p_t, p_s))
    expected = expected / 2 * temp**2
    assert soft_cross_entropy(S, T, temp).item() == pytest.approx(expected, rel=1e-6)


def test_kl_is_zero_on_equal_logits_and_ce_minus_entropy():
    temp = 3.0
    assert kl_divergence(T, T, temp).item() == pytest.approx(0.0, abs=1e-7)
    p_t = torch.softmax(T / temp, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean() * temp**2
    assert kl_divergence(S, T, temp).item() == pytest.approx((soft_cross_entropy(S, T, temp) - entropy).item(), rel=1e-5)


def test_hard_ce_and_errors():
    assert hard_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1])).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="differ in shape"):
        mse_logits(S, T[:1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_cross_entropy(S, T, 0.0)
    with pytest.raises(ValueError, match="unknown KD loss"):
        logit_loss("l1")
    assert logit_loss("kl", 2.0)(S, T).item() == pytest.approx(kl_divergence(S, T, 2.0).item())


# ---- the KD-method zoo: each loss against numbers worked out by hand ---------------------------
from kdnb.training.losses import (  # noqa: E402
    aguilar_weights,
    alpha_mix,
    attention_kl,
    cls_cosine,
    masked_cross_entropy,
    noisy_logits,
    patient_loss,
    pkd_loss,
)

LN2, LN3 = math.log(2), math.log(3)
# teacher p = softmax(ln3, 0) = (3/4, 1/4); student q = softmax(0, 0) = (1/2, 1/2):
# KL(p‖q) = 3/4·ln(3/2) + 1/4·ln(1/2)
KL_34_12 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_masked_cross_entropy_skips_unlabelled_rows():
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]])
    # row 0, label 0: −ln(1/2); row 1, label 1: −ln(1/4); row 2 unlabelled (−1) → mean of two rows
    assert masked_cross_entropy(logits, torch.tensor([0, 1, -1])).item() == pytest.approx((LN2 + math.log(4)) / 2)
    assert masked_cross_entropy(logits, torch.tensor([-1, -1, -1])).item() == 0.0  # no NaN without gold labels
    with pytest.raises(ValueError, match="do not match"):
        masked_cross_entropy(logits, torch.tensor([0, 1]))


def test_alpha_mix_on_hand_computed_values():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor([1])
    # α·KL·T² + (1−α)·CE: KL(3/4,1/4 ‖ 1/2,1/2) at T = 1, CE of label 1 under (1/2, 1/2) = ln 2
    assert alpha_mix(s, t, y, alpha=0.25).item() == pytest.approx(0.25 * KL_34_12 + 0.75 * LN2, rel=1e-6)
    # at T = 2 the soft term sees logits (ln3/2, 0): p = (√3, 1)/(√3 + 1), q = (1/2, 1/2), times T² = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl_t2 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert alpha_mix(s, t, y, alpha=0.5, temperature=2.0).item() == pytest.approx(0.5 * 4 * kl_t2 + 0.5 * LN2, rel=1e-6)
    assert alpha_mix(s, t, y, alpha=1.0).item() == pytest.approx(KL_34_12, rel=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        alpha_mix(s, t, y, alpha=1.5)


def test_patient_loss_on_hand_computed_values():
    # (layers=2, batch=2, hidden=2)
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [1.0, 1.0]]])
    t = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 5.0], [1.0, 0.0]]])
    # layer 1: ‖(.6,.8) − (1,0)‖² = .16 + .64 = .8 and ‖(1,0) − (−1,0)‖² = 4 → batch mean 2.4
    # layer 2: 0 and ‖(1/√2 − 1, 1/√2)‖² = 2 − √2 → batch mean (2 − √2)/2; summed over layers
    assert patient_loss(s, t).item() == pytest.approx(2.4 + (2 - math.sqrt(2)) / 2, rel=1e-6)
    assert patient_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert patient_loss(2.5 * t, t).item() == pytest.approx(0.0, abs=1e-6)  # normalised: scale-free
    with pytest.raises(ValueError, match="layers, batch, hidden"):
        patient_loss(s[0], t[0])


def test_pkd_loss_is_alpha_mix_plus_beta_patient():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor([1])
    cs, ct = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[1.0, 0.0]]])  # patient term 0.8 (above)
    # (1 − α)·CE + α·KL + β·L_PT with α = 0.5, β = 10
    want = 0.5 * LN2 + 0.5 * KL_34_12 + 10 * 0.8
    assert pkd_loss(s, t, y, cs, ct, alpha=0.5, beta=10.0).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        pkd_loss(s, t, y, cs, ct, alpha=0.5, beta=-1.0)


def test_attention_kl_on_hand_computed_values():
    # one layer, one sentence of 2 tokens; student: 1 head, teacher: 2 heads (averaged first)
    student = torch.tensor([[0.5, 0.5], [0.25, 0.75]]).view(1, 1, 1, 2, 2)
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]]).view(1, 1, 2, 2, 2)
    # head mean of the teacher: rows (3/4, 1/4) and (1/4, 3/4); KL of row 1 vs (1/2, 1/2) = KL_34_12,
    # of row 2 vs (1/4, 3/4) = 0 → mean over the two query rows
    assert attention_kl(student, teacher, torch.tensor([[1, 1]])).item() == pytest.approx(KL_34_12 / 2, rel=1e-6)
    # the second token is padding: only the first query row counts
    assert attention_kl(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(KL_34_12, rel=1e-6)
    # two layers (the second identical to the teacher): summed, and weighted per layer
    s2 = torch.cat([student, teacher.mean(2, keepdim=True)])
    t2 = torch.cat([teacher, teacher])
    assert attention_kl(s2, t2, torch.tensor([[1, 1]])).item() == pytest.approx(KL_34_12 / 2, rel=1e-6)
    assert attention_kl(s2, t2, torch.tensor([[1, 1]]), torch.tensor([0.0, 1.0])).item() == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="expected"):
        attention_kl(student, teacher[..., :1, :], torch.tensor([[1, 1]]))


def test_cls_cosine_on_hand_computed_values():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    t = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])
    # 1 − cos: 1 − 1/√2 and 1 − (−1) = 2 → batch mean
    assert cls_cosine(s, t).item() == pytest.approx((1 - 1 / math.sqrt(2) + 2) / 2, rel=1e-6)
    assert cls_cosine(torch.cat([s, t]), torch.cat([t, t]), torch.tensor([1.0, 1.0])).item() == \
        pytest.approx((1 - 1 / math.sqrt(2) + 2) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="one per layer"):
        cls_cosine(s, t, torch.tensor([1.0, 1.0]))


def test_aguilar_progressive_and_stacked_schedules():
    # 4 layers, the first half of training on the layers: stage k covers progress [k/8, (k+1)/8)
    w, logit = aguilar_weights("progressive", 4, 0.0, 0.5)
    assert w.tolist() == [1, 0, 0, 0] and logit == 0.0
    w, logit = aguilar_weights("progressive", 4, 0.3, 0.5)       # 0.3 / 0.5 · 4 = 2.4 → stage 2
    assert w.tolist() == [0, 0, 1, 0] and logit == 0.0
    w, logit = aguilar_weights("stacked", 4, 0.3, 0.5)
    assert w.tolist() == [1, 1, 1, 0] and logit == 0.0
    w, logit = aguilar_weights("progressive", 4, 0.5, 0.5)       # after the layer stages: logits only
    assert w.tolist() == [0, 0, 0, 0] and logit == 1.0
    w, logit = aguilar_weights("stacked", 4, 0.9, 0.5)           # stacked keeps every layer
    assert w.tolist() == [1, 1, 1, 1] and logit == 1.0
    with pytest.raises(ValueError, match="schedule"):
        aguilar_weights("random", 4, 0.1, 0.5)


def test_noisy_logits_are_multiplicative_gaussian_noise():
    g = torch.Generator().manual_seed(0)
    z = torch.tensor([[2.0, 0.0]]).repeat(20000, 1)
    noisy = noisy_logits(z, sigma=0.5, generator=g)
    assert torch.equal(noisy[:, 1], torch.zeros(20000))           # z(1 + ξ): a zero logit stays zero
    assert noisy[:, 0].mean().item() == pytest.approx(2.0, abs=0.03)  # E[2(1 + ξ)] = 2
    assert noisy[:, 0].std().item() == pytest.approx(1.0, abs=0.03)   # sd 2·σ = 1
    half = noisy_logits(z, sigma=0.5, p=0.5, generator=g)
    assert (half[:, 0] == 2.0).float().mean().item() == pytest.approx(0.5, abs=0.02)  # p: rows perturbed
    assert torch.equal(noisy_logits(z, sigma=0.0), z) and torch.equal(noisy_logits(z, 0.5, p=0.0), z)
    with pytest.raises(ValueError, match="sigma"):
        noisy_logits(z, sigma=-1.0)
