"""Advantage estimators against hand-worked values, slow per-sample loops, and their properties."""

import pytest
import torch

from rlcamp.algos import (ADVANTAGE_ESTIMATORS, compute_advantages, gae, grpo_advantages, masked_whiten,
                          reinforce_plus_plus_advantages, reinforce_plus_plus_baseline_advantages, rloo_advantages)



def random_batch(batch=6, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, length, generator=g)
    values = torch.randn(batch, length, generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).double()
    return rewards * mask, values * mask, mask


# ---------------------------------------------------------------------------------------- GAE
def slow_gae(rewards, values, mask, gamma, lam):
    """Per sample, over that sample's real tokens only (assumes right padding)."""
    adv = torch.zeros_like(values)
    for b in range(values.shape[0]):
        n = int(mask[b].sum())
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv, adv + values * mask


def test_gae_hand_worked():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma = 0.9, lam = 0.8
    # delta_2 = 1 - 0.7 = 0.3                 A_2 = 0.3
    # delta_1 = 0 + 0.9*0.7 - 0.6 = 0.03      A_1 = 0.03 + 0.72*0.3 = 0.246
    # delta_0 = 0 + 0.9*0.6 - 0.5 = 0.04      A_0 = 0.04 + 0.72*0.246 = 0.21712
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert torch.allclose(adv, torch.tensor([[0.21712, 0.246, 0.3]]))
    assert torch.allclose(ret, torch.tensor([[0.71712, 0.846, 1.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (0.5, 0.7)])
def test_gae_matches_slow_loop(gamma, lam):
    rewards, values, mask = random_batch(seed=int(gamma * 100 + lam * 10))
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = slow_gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, ref_adv)
    assert torch.allclose(ret * mask, ref_ret * mask)


def test_gae_lam_one_is_discounted_return_minus_value():
    rewards, values, mask = random_batch(seed=3)
    gamma = 0.97
    adv, _ = gae(rewards, values, mask, gamma, lam=1.0)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            discounted = sum(gamma ** (k - t) * rewards[b, k] for k in range(t, n))
            assert torch.isclose(adv[b, t], discounted - values[b, t])


def test_gae_skips_padding_inside_a_response():
    # a masked hole at t=1 must not change the other tokens' advantages
    r = torch.tensor([[0.0, 5.0, 1.0]])
    v = torch.tensor([[0.5, 9.0, 0.7]])
    adv_hole, _ = gae(r, v, torch.tensor([[1.0, 0.0, 1.0]]), gamma=0.9, lam=0.8)
    adv_dense, _ = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.7]]), torch.ones(1, 2), gamma=0.9, lam=0.8)
    assert adv_hole[0, 1] == 0
    assert torch.allclose(adv_hole[0, [0, 2]], adv_dense[0])


def test_gae_estimator_whitens_over_the_mask():
    rewards, values, mask = random_batch(seed=5)
    adv, ret = compute_advantages("gae", token_level_rewards=rewards, values=values, loss_mask=mask, gamma=1.0, lam=0.95)
    raw, raw_ret = gae(rewards, values, mask, 1.0, 0.95)
    assert torch.allclose(adv, masked_whiten(raw, mask) * mask)
    assert torch.allclose(ret, raw_ret)
    real = adv[mask.bool()]
    assert abs(real.mean()) < 1e-6 and abs(real.std() - 1) < 1e-3
    assert (adv[~mask.bool()] == 0).all()


# --------------------------------------------------------------------------------------- GRPO
def test_grpo_hand_worked():
    # group a: scores 1, 0, 0 -> mean 1/3, unbiased std sqrt(1/3) = 0.57735
    #   advantages (1 - 1/3)/0.57735 = 1.1547, (0 - 1/3)/0.57735 = -0.57735
    # group b: scores 2, 4 -> mean 3, std sqrt(2) -> -0.70711, 0.70711
    rewards = torch.zeros(5, 2)
    rewards[0, 1], rewards[3, 0], rewards[4, 1] = 1.0, 2.0, 4.0
    mask = torch.ones(5, 2)
    adv, ret = grpo_advantages(rewards, mask, uid=["a", "a", "a", "b", "b"], epsilon=0.0)
    expected = torch.tensor([1.1547005, -0.5773503, -0.5773503, -0.7071068, 0.7071068])
    assert torch.allclose(adv[:, 0], expected, atol=1e-6)
    assert torch.equal(adv, ret)


def slow_grpo(scores, uid, norm, eps=1e-6):
    out = torch.zeros_like(scores)
    for i in range(len(scores)):
        group = torch.stack([scores[j] for j in range(len(scores)) if uid[j] == uid[i]])
        if len(group) == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = group.mean(), group.std()
        out[i] = (scores[i] - mean) / (std + eps) if norm else scores[i] - mean
    return out


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_slow_loop_and_has_zero_group_mean(norm):
    rewards, _, mask = random_batch(batch=12, seed=7)
    uid = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])[torch.randperm(12, generator=torch.Generator().manual_seed(1))]
    adv, _ = grpo_advantages(rewards, mask, uid, norm_adv_by_std_in_grpo=norm)
    expected = slow_grpo(rewards.sum(-1), uid.tolist(), norm)
    assert torch.allclose(adv, expected[:, None] * mask)
    per_seq = expected
    for g in range(4):
        assert abs(per_seq[uid == g].mean()) < 1e-6


def test_grpo_singleton_group_keeps_its_score_and_equal_scores_give_zero():
    rewards = torch.tensor([[3.0], [1.0], [1.0]])
    adv, _ = grpo_advantages(rewards, torch.ones(3, 1), uid=[0, 1, 1])  # default epsilon keeps 0/0 finite
    assert torch.allclose(adv[:, 0], torch.tensor([3.0, 0.0, 0.0]), atol=1e-5)


# --------------------------------------------------------------------------------------- RLOO
def test_rloo_hand_worked_and_slow_loop():
    # scores 1, 0, 0 -> baselines (0+0)/2, (1+0)/2, (1+0)/2 -> advantages 1, -0.5, -0.5
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    adv, _ = rloo_advantages(rewards, torch.ones(3, 2), uid=[7, 7, 7])
    assert torch.allclose(adv[:, 0], torch.tensor([1.0, -0.5, -0.5]))

    rewards, _, mask = random_batch(batch=8, seed=9)
    uid = [0, 0, 1, 1, 1, 2, 2, 3]
    adv, _ = rloo_advantages(rewards, mask, uid)
    scores = rewards.sum(-1)
    for i in range(8):
        others = [scores[j] for j in range(8) if uid[j] == uid[i] and j != i]
        baseline = sum(others) / len(others) if others else 0.0
        assert torch.allclose(adv[i], (scores[i] - baseline) * mask[i])


# -------------------------------------------------------------------------------- REINFORCE++
def test_reinforce_plus_plus_returns_and_whitening():
    rewards, _, mask = random_batch(seed=11)
    gamma = 0.9
    adv, ret = reinforce_plus_plus_advantages(rewards, mask, gamma=gamma)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            expected = sum(gamma ** (k - t) * rewards[b, k] for k in range(t, n))
            assert torch.isclose(ret[b, t], expected)
    assert torch.allclose(adv, masked_whiten(ret, mask) * mask)


def test_reinforce_plus_plus_baseline_matches_slow_loop():
    rewards, _, mask = random_batch(batch=6, seed=13)
    uid = [0, 0, 0, 1, 1, 1]
    adv, _ = reinforce_plus_plus_baseline_advantages(rewards, mask, uid)
    scores = rewards.sum(-1)
    centred = torch.stack([scores[i] - scores[[j for j in range(6) if uid[j] == uid[i]]].mean() for i in range(6)])
    expected = masked_whiten(centred[:, None] * mask, mask) * mask
    assert torch.allclose(adv, expected)


def test_registry_names_and_dispatch_errors():
    assert set(ADVANTAGE_ESTIMATORS) == {"gae", "grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"}
    rewards, values, mask = random_batch()
    with pytest.raises(ValueError, match="needs the critic's values"):
        compute_advantages("gae", token_level_rewards=rewards, loss_mask=mask)
    with pytest.raises(ValueError, match="group uid"):
        compute_advantages("grpo", token_level_rewards=rewards, loss_mask=mask)
    with pytest.raises(KeyError, match="unknown algorithm.adv_estimator 'ppo'"):
        compute_advantages("ppo", token_level_rewards=rewards, loss_mask=mask)
