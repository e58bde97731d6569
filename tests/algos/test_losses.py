"""PPO losses against hand-worked values, slow per-token loops, and properties."""

import math

import pytest
import torch

from rlcamp.algos import agg_loss, entropy_from_logits, log_probs_from_logits, masked_mean, masked_var, masked_whiten
from rlcamp.algos import policy_loss, tis_weights, value_loss
from rlcamp.algos.losses import sum_norm_divisor



def ragged_mask(batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    return (torch.arange(length)[None, :] < lengths[:, None]).double()


# ------------------------------------------------------------------------------ aggregation
def test_agg_loss_hand_worked():
    # seq 0: tokens 1, 2, 3 (all real); seq 1: tokens 4, (5 masked), (6 masked)
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert agg_loss(loss, mask, "token-mean") == pytest.approx((1 + 2 + 3 + 4) / 4)  # 2.5
    assert agg_loss(loss, mask, "seq-mean-token-sum") == pytest.approx((6 + 4) / 2)  # 5
    assert agg_loss(loss, mask, "seq-mean-token-mean") == pytest.approx((2 + 4) / 2)  # 3
    # verl's formula: the sum of every token's loss / loss_scale_factor (default: the padded length, 3)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm") == pytest.approx((6 + 4) / 3)  # 3.333
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", loss_scale_factor=5) == pytest.approx(10 / 5)
    with pytest.raises(ValueError, match="unknown loss_agg_mode"):
        agg_loss(loss, mask, "mean")


def test_agg_loss_skips_empty_sequences():
    loss = torch.tensor([[2.0, 2.0], [7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert agg_loss(loss, mask, "seq-mean-token-mean") == pytest.approx(2.0)
    assert agg_loss(loss, mask, "seq-mean-token-sum") == pytest.approx(4.0)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_agg_loss_matches_slow_loop(mode):
    loss = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    mask = ragged_mask(5, 6, seed=2)
    rows = [[loss[b, t].item() for t in range(6) if mask[b, t]] for b in range(5)]
    if mode == "token-mean":
        expected = sum(map(sum, rows)) / sum(map(len, rows))
    elif mode == "seq-mean-token-sum":
        expected = sum(sum(r) for r in rows) / len(rows)
    elif mode == "seq-mean-token-mean":
        expected = sum(sum(r) / len(r) for r in rows) / len(rows)
    else:  # verl's: every token's loss summed, over the padded length
        expected = sum(sum(r) for r in rows) / 6
    assert agg_loss(loss, mask, mode).item() == pytest.approx(expected)


# ------------------------------------------------------------------------------ policy loss
def slow_policy_loss(old, new, adv, mask, low, high, c):
    losses, clipped, dual = [], 0, 0
    for b in range(old.shape[0]):
        for t in range(old.shape[1]):
            if not mask[b, t]:
                continue
            r = math.exp(max(min(new[b, t] - old[b, t], 20), -20))
            a = adv[b, t].item()
            l1, l2 = -a * r, -a * min(max(r, 1 - low), 1 + high)
            loss = max(l1, l2)
            clipped += l2 > l1
            if a < 0:
                dual += loss > -a * c
                loss = min(loss, -a * c)
            losses.append(loss)
    n = len(losses)
    return sum(losses) / n, clipped / n, dual / n


def test_policy_loss_hand_worked():
    # A = +1, ratio e^0.5 = 1.6487 > 1.2: clipped, loss = -1.2
    # A = -1, ratio e^1.5 = 4.4817: loss max(4.48, 1.2) = 4.48 > dual bound 3 -> 3
    # A = -1, ratio e^-0.5 = 0.6065 < 0.8: loss max(0.6065, 0.8) = 0.8 (clipped)
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.5, 1.5, -0.5]])
    adv = torch.tensor([[1.0, -1.0, -1.0]])
    out = policy_loss(old, new, adv, torch.ones(1, 3), 0.2, 0.2, 3.0)
    assert out.loss.item() == pytest.approx((-1.2 + 3.0 + 0.8) / 3)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    assert out.clipfrac_lower.item() == pytest.approx(1 / 3)
    assert out.ppo_kl.item() == pytest.approx(-(0.5 + 1.5 - 0.5) / 3)


def test_policy_loss_at_ratio_one_is_minus_advantage_with_gradient_minus_advantage():
    adv = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 5)
    log_probs = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
    out = policy_loss(log_probs.detach(), log_probs, adv, mask)
    assert out.loss.item() == pytest.approx(-adv.mean().item())
    assert out.clipfrac.item() == 0 and out.ppo_kl.item() == 0
    out.loss.backward()
    # d/d logp of -A * exp(logp - old) at ratio 1 is -A, averaged over 20 tokens
    assert torch.allclose(log_probs.grad, -adv / 20)


@pytest.mark.parametrize("low,high,c", [(0.2, 0.2, 3.0), (0.1, 0.28, 2.0), (0.3, 0.1, 10.0)])
def test_policy_loss_matches_slow_loop(low, high, c):
    g = torch.Generator().manual_seed(int(low * 100))
    old = torch.randn(6, 8, generator=g) * 0.5
    new = old + torch.randn(6, 8, generator=g) * 0.6
    adv = torch.randn(6, 8, generator=g) * 2
    mask = ragged_mask(6, 8, seed=4)
    out = policy_loss(old, new, adv, mask, low, high, c)
    loss, clipfrac, dual = slow_policy_loss(old, new, adv, mask, low, high, c)
    assert out.loss.item() == pytest.approx(loss)
    assert out.clipfrac.item() == pytest.approx(clipfrac)
    assert out.clipfrac_lower.item() == pytest.approx(dual)


def test_policy_loss_has_no_gradient_where_clipped():
    # A > 0 and ratio above 1 + high: the clipped branch is constant, so no gradient
    new = torch.tensor([[0.5]], requires_grad=True)
    policy_loss(torch.zeros(1, 1), new, torch.ones(1, 1), torch.ones(1, 1)).loss.backward()
    assert new.grad.item() == 0


def test_policy_loss_rejects_dual_clip_at_or_below_one():
    with pytest.raises(ValueError, match="clip_ratio_c"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_ratio_c=1.0)


# ------------------------------------------------------------------------------- value loss
def test_truncated_importance_sampling_hand_worked():
    old = torch.tensor([[-1.0, -0.5, -2.0]])
    rollout = torch.tensor([[-1.5, -2.0, -1.0]])
    w = tis_weights(old, rollout, cap=2.0)
    # exp(0.5) = 1.6487; exp(1.5) = 4.48 capped at 2; exp(-1) = 0.3679 (never raised)
    assert torch.allclose(w, torch.tensor([[math.exp(0.5), 2.0, math.exp(-1.0)]]), atol=1e-6)
    # at ratio 1 each token's loss is -A; token-mean of -A * w with A = 1: -(1.6487 + 2 + 0.3679) / 3
    log_probs = old.clone().requires_grad_()
    out = policy_loss(old, log_probs, torch.ones(1, 3), torch.ones(1, 3), is_weights=w)
    assert out.loss.item() == pytest.approx(-(math.exp(0.5) + 2.0 + math.exp(-1.0)) / 3, rel=1e-6)
    out.loss.backward()  # d(-A r w)/d log_prob = -A w / 3 at r = 1; the weights themselves carry no gradient
    assert torch.allclose(log_probs.grad, -w / 3, atol=1e-6)


def test_value_loss_hand_worked():
    # old V = 0, eps = 0.5, return R = 2
    # V = 1.0: clipped to 0.5 -> max((1-2)^2, (0.5-2)^2) = max(1, 2.25) = 2.25 (clip active)
    # V = 0.2: inside the range -> (0.2-2)^2 = 3.24 both ways
    values = torch.tensor([[1.0, 0.2]])
    out = value_loss(values, torch.zeros(1, 2), torch.full((1, 2), 2.0), torch.ones(1, 2), 0.5)
    assert out.loss.item() == pytest.approx(0.5 * (2.25 + 3.24) / 2)
    assert out.clipfrac.item() == pytest.approx(0.5)


def test_value_loss_matches_slow_loop():
    g = torch.Generator().manual_seed(5)
    values, old, returns = (torch.randn(5, 7, generator=g) for _ in range(3))
    mask = ragged_mask(5, 7, seed=5)
    out = value_loss(values, old, returns, mask, 0.3, "token-mean")
    terms = []
    for b in range(5):
        for t in range(7):
            if mask[b, t]:
                clipped = old[b, t] + max(min(values[b, t] - old[b, t], 0.3), -0.3)
                terms.append(max((values[b, t] - returns[b, t]) ** 2, (clipped - returns[b, t]) ** 2))
    assert out.loss.item() == pytest.approx(0.5 * sum(terms).item() / len(terms))


# ------------------------------------------------------------------------- entropy, log-probs
def test_entropy_hand_worked_and_reference():
    # uniform over 4 -> ln 4; one-hot-ish logits -> about 0
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    ent = entropy_from_logits(logits)
    assert ent[0].item() == pytest.approx(math.log(4))
    assert ent[1].item() == pytest.approx(0.0, abs=1e-30)
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1))


def test_log_probs_from_logits():
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 9, (2, 4), generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    assert torch.allclose(log_probs_from_logits(logits, labels), expected)


# ------------------------------------------------------------------------------ masked ops
def test_masked_ops_hand_worked():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_var(x, m).item() == pytest.approx(1.0)  # values 1, 2, 3: unbiased variance 1
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    w = masked_whiten(x, m)
    assert torch.allclose(w[m.bool()], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)
    w = masked_whiten(x, m, shift_mean=False)
    assert torch.allclose(w[m.bool()], torch.tensor([1.0, 2.0, 3.0]), atol=1e-6)
    assert torch.allclose(masked_mean(x, m, dim=-1), torch.tensor([1.5, 3.0]))
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0  # empty mask: 0, not NaN


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_losses_with_global_counts_sum_to_the_mini_batch_loss(mode):
    """Gradient accumulation is exact: any split into micro batches gives the same total."""
    loss = torch.randn(6, 5, generator=torch.Generator().manual_seed(8))
    mask = ragged_mask(6, 5, seed=8)
    # the divisor of seq-mean-token-sum-norm is fixed by the config (factor 5 x 1 micro batch x 1 rank)
    whole = agg_loss(loss, mask, mode, loss_scale_factor=5)
    norm = {"global_tokens": mask.sum(), "global_seqs": (mask.sum(-1) > 0).sum(), "sum_norm": sum_norm_divisor(5, 1, 1)}
    for cuts in ([0, 1, 6], [0, 2, 3, 6], [0, 6]):
        parts = sum(agg_loss(loss[a:b], mask[a:b], mode, **norm) for a, b in zip(cuts, cuts[1:]))
        assert parts.item() == pytest.approx(whole.item())


def test_seq_mean_token_sum_norm_has_verls_scale_however_the_mini_batch_is_cut():
    """verl (core_algos.agg_loss + dp_actor at b178a3c): each micro batch's loss is sum / loss_scale_factor,
    scaled by 1 / gradient accumulation, and FSDP averages the gradients of the ranks. Hand-worked:
    one rank's mini batch of 4 rows in micro batches of 2 (accumulation 2), loss_scale_factor 4."""
    loss = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [4.0, 4.0, 4.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    mask = (loss > 0).float()
    # verl: micro 1 sums to 6 -> 6 / 4 / 2 = 0.75; micro 2 sums to 14 -> 14 / 4 / 2 = 1.75; total 2.5
    verl = sum(agg_loss(loss[a:a + 2], mask[a:a + 2], "seq-mean-token-sum-norm", loss_scale_factor=4) / 2
               for a in (0, 2))
    assert verl.item() == pytest.approx(2.5)
    # rlcamp: the same 2.5 whether it runs the mini batch as 2 + 2, 1 + 3 or token-budget micro batches of any size
    norm = {"sum_norm": sum_norm_divisor(4, micro_batches=2, ranks=1)}
    for cuts in ([0, 2, 4], [0, 1, 4], [0, 3, 4], [0, 4]):
        parts = sum(agg_loss(loss[a:b], mask[a:b], "seq-mean-token-sum-norm", **norm) for a, b in zip(cuts, cuts[1:]))
        assert parts.item() == pytest.approx(2.5)
    # 2 ranks, each with such a mini batch: FSDP averages the two gradients, so the divisor doubles and
    # grad_scale (x the world size) restores the sum: (2.5 + 2.5) / 2 per rank-average = 2.5
    two = sum_norm_divisor(4, micro_batches=2, ranks=2)
    per_rank = agg_loss(loss, mask, "seq-mean-token-sum-norm", sum_norm=two) * 2  # x grad_scale
    assert ((per_rank + per_rank) / 2).item() == pytest.approx(2.5)
