"""KL estimators, the in-reward penalty, and the KL controllers."""

import math

import pytest
import torch

from rlcamp.algos import (AdaptiveKLController, FixedKLController, agg_loss, apply_kl_penalty, kl_penalty,
                          make_kl_controller)



def test_estimators_hand_worked():
    # log pi - log ref = d = 0.5
    lp, ref = torch.tensor([[0.0]]), torch.tensor([[-0.5]])
    assert kl_penalty(lp, ref, "kl").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(ref, lp, "abs").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "mse").item() == pytest.approx(0.125)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.125)
    # k3 = e^{-d} + d - 1 = 0.60653 + 0.5 - 1 = 0.10653
    assert kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(0.10653066)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(lp, ref, "k4")


def test_k3_is_nonnegative_and_clamped():
    d = torch.linspace(-30, 30, 61)[None, :]
    k3 = kl_penalty(d, torch.zeros_like(d), "low_var_kl")
    assert (k3 >= 0).all() and (k3 <= 10).all()


def test_full_kl_is_exact_and_estimators_are_unbiased():
    g = torch.Generator().manual_seed(0)
    logits_p = torch.randn(1, 1, 6, generator=g)
    logits_q = logits_p + 0.3 * torch.randn(1, 1, 6, generator=g)
    lp, lq = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    exact = (lp.exp() * (lp - lq)).sum().item()
    assert kl_penalty(lp, lq, "full").item() == pytest.approx(exact)
    # k1 and k3 averaged over samples x ~ p approach the exact KL (Schulman 2020)
    samples = torch.multinomial(lp.exp()[0, 0], 400_000, replacement=True, generator=g)
    lp_s, lq_s = lp[0, 0, samples][None], lq[0, 0, samples][None]
    assert kl_penalty(lp_s, lq_s, "kl").mean().item() == pytest.approx(exact, abs=3e-3)
    assert kl_penalty(lp_s, lq_s, "low_var_kl").mean().item() == pytest.approx(exact, abs=3e-3)
    with pytest.raises(ValueError, match="whole vocabulary"):
        kl_penalty(lp[0], lq[0, 0], "full")


def test_apply_kl_penalty_hand_worked():
    # scores only on the last real token; kl per token = 0.1 (k1), coef 0.5
    scores = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old, ref = torch.full((2, 3), -1.0), torch.full((2, 3), -1.1)
    rewards, kl = apply_kl_penalty(scores, old, ref, mask, kl_coef=0.5, estimator="kl")
    assert torch.allclose(rewards, torch.tensor([[-0.05, -0.05, 0.95], [-0.05, 1.95, 0.0]]))
    assert kl.item() == pytest.approx(0.1)


def test_kl_loss_is_aggregated_estimator():
    lp = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    ref = lp + 0.1
    mask = torch.ones(3, 4)
    loss = agg_loss(kl_penalty(lp, ref, "low_var_kl"), mask, "token-mean")
    assert loss.item() == pytest.approx(math.exp(0.1) - 0.1 - 1)


def test_fixed_and_adaptive_controllers():
    fixed = FixedKLController(0.05)
    fixed.update(10.0, 100)
    assert fixed.value == 0.05
    # error = clip(0.2/0.1 - 1, -0.2, 0.2) = 0.2; coef *= 1 + 0.2 * 100 / 1000 = 1.02
    adaptive = AdaptiveKLController(0.1, target_kl=0.1, horizon=1000)
    adaptive.update(0.2, 100)
    assert adaptive.value == pytest.approx(0.102)
    # KL below target: error = 0.05/0.1 - 1 = -0.5 -> -0.2; coef *= 0.98
    adaptive.update(0.05, 100)
    assert adaptive.value == pytest.approx(0.102 * 0.98)
    restored = make_kl_controller("adaptive", 1.0, 0.1, 1000)
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value
    with pytest.raises(ValueError, match="unknown algorithm.kl_ctrl.type"):
        make_kl_controller("pid", 0.1)
