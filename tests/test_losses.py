import math

import pytest
import torch

from kdnb.losses import hard_cross_entropy, kl_divergence, logit_loss, mse_logits, soft_cross_entropy

S = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
T = torch.tensor([[3.0, 0.0], [1.0, -1.0]])


def test_mse_on_hand_computed_values():
    # squared differences: (2², 2²), (1², 1²) → mean over 4 elements = 10/4
    assert mse_logits(S, T).item() == pytest.approx(2.5)
    assert mse_logits(T, T).item() == 0.0


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
