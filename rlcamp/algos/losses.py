"""PPO losses: clipped policy loss (asymmetric + dual clip), clipped value loss, entropy, aggregation.

Shapes: per-token tensors are [batch, response_len]; ``loss_mask`` is 1 on the tokens trained on.
Losses return a scalar plus metrics as 0-d tensors (no ``.item()``: the caller decides when to sync).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rlcamp.algos import registry
from rlcamp.algos.masked import masked_mean
from rlcamp.algos.registry import check_registered, names

LOSS_AGG_MODES = names(registry.LOSS_AGG_MODES)


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str,
             loss_scale_factor: int | None = None, global_tokens: float | torch.Tensor | None = None,
             global_seqs: float | torch.Tensor | None = None, sum_norm: float | torch.Tensor | None = None
             ) -> torch.Tensor:
    """Reduce a [batch, len] loss matrix to a scalar.

    - token-mean: every token counts equally (DAPO's choice; longer answers weigh more).
    - seq-mean-token-sum: sum over each sequence's tokens, mean over sequences.
    - seq-mean-token-mean: mean over each sequence's tokens, mean over sequences (original GRPO).
    - seq-mean-token-sum-norm: verl's formula: the sum over all tokens / ``loss_scale_factor``
      (default: the padded length), a constant normaliser, so no length bias (Dr. GRPO).
    Sequences without any token are left out of the seq-mean modes.

    ``global_tokens`` / ``global_seqs``: the token / sequence counts of the whole mini batch when
    this is one micro batch of it. Dividing by them (instead of local counts) makes the micro
    batches' losses sum to exactly the mini batch's loss, however tokens fall into micro batches.
    ``sum_norm``: the same for seq-mean-token-sum-norm: the whole divisor, ``loss_scale_factor`` x
    the micro batches verl would accumulate x the ranks (``sum_norm_divisor``), so the gradient is
    verl's for the same config and does not depend on how rlcamp cuts the mini batch.
    """
    mask = loss_mask.to(loss_mat.dtype)
    seq_len = mask.sum(-1)
    n_seqs = (seq_len > 0).sum() if global_seqs is None else global_seqs
    if loss_agg_mode == "token-mean":
        n_tokens = mask.sum() if global_tokens is None else global_tokens
        return (loss_mat * mask).sum() / torch.as_tensor(n_tokens, dtype=loss_mat.dtype).clamp(min=1)
    seq_sum = (loss_mat * mask).sum(-1)
    n_seqs = torch.as_tensor(n_seqs, dtype=loss_mat.dtype).clamp(min=1)
    if loss_agg_mode == "seq-mean-token-sum":
        return seq_sum.sum() / n_seqs
    if loss_agg_mode == "seq-mean-token-mean":
        return (seq_sum / seq_len.clamp(min=1)).sum() / n_seqs
    if loss_agg_mode == "seq-mean-token-sum-norm":
        divisor = sum_norm if sum_norm is not None else (loss_scale_factor or loss_mat.shape[-1])
        return seq_sum.sum() / divisor
    raise ValueError(f"unknown loss_agg_mode '{loss_agg_mode}'; known: {LOSS_AGG_MODES}")


def sum_norm_divisor(loss_scale_factor: int, micro_batches: int, ranks: int) -> int:
    """The divisor of a seq-mean-token-sum-norm loss over a mini batch, as verl's gradient has it.

    verl divides each micro batch's token-loss sum by ``loss_scale_factor``, scales it by 1 /
    (micro batches per mini batch) for gradient accumulation, and FSDP averages the gradient over
    the ``ranks``: the mini batch's gradient is that of sum / (factor x micro batches x ranks)."""
    return loss_scale_factor * max(micro_batches, 1) * ranks


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor  # fraction of tokens where the ratio clip was active
    ppo_kl: torch.Tensor  # mean (old - new) log-prob: a first-order KL(old || new)
    clipfrac_lower: torch.Tensor  # fraction of tokens where the dual clip was active


def policy_loss(old_log_probs: torch.Tensor, log_probs: torch.Tensor, advantages: torch.Tensor,
                loss_mask: torch.Tensor, clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2,
                clip_ratio_c: float = 3.0, loss_agg_mode: str = "token-mean", is_weights: torch.Tensor | None = None,
                **norm) -> PolicyLoss:
    """PPO clipped surrogate (Schulman et al. 2017) with asymmetric clip and dual clip.

    L = max(-A r, -A clip(r, 1 - low, 1 + high)) and, where A < 0, min(that, -A c): the dual clip
    (Ye et al. 2020) bounds the loss of a very unlikely action with a negative advantage, whose
    ratio is otherwise unbounded above.

    ``is_weights`` [batch, response_len] (constants) multiply each token's loss: truncated importance
    sampling (see ``tis_weights``) when the rollout engine's policy differs from the trainer's.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c={clip_ratio_c} must be > 1")
    # the log-ratio is clamped before exp so one wild token cannot overflow the loss
    log_ratio = torch.clamp(log_probs - old_log_probs, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    ppo_kl = masked_mean(-log_ratio, loss_mask)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip_loss = torch.maximum(unclipped, clipped)
    clipfrac = masked_mean(torch.gt(clipped, unclipped).to(advantages.dtype), loss_mask)
    dual_bound = -advantages * clip_ratio_c
    dual_loss = torch.minimum(dual_bound, clip_loss)
    clipfrac_lower = masked_mean((torch.gt(clip_loss, dual_bound) & (advantages < 0)).to(advantages.dtype),
                                 loss_mask)
    token_loss = torch.where(advantages < 0, dual_loss, clip_loss)
    if is_weights is not None:
        token_loss = token_loss * is_weights.detach()
    return PolicyLoss(agg_loss(token_loss, loss_mask, loss_agg_mode, **norm), clipfrac, ppo_kl, clipfrac_lower)


# actor.policy_loss.loss_mode -> the policy loss; verl has more modes (gspo, gpg, clip-cov, ...), each
# a function with policy_loss's signature
POLICY_LOSSES = {"vanilla": policy_loss}
check_registered("actor.policy_loss.loss_mode", registry.POLICY_LOSS_MODES, POLICY_LOSSES)


def tis_weights(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): responses are sampled by the rollout engine's numerics (pi_rollout),
    the loss assumes the trainer's (pi_old); weighting each token by min(pi_old / pi_rollout, cap)
    corrects the mismatch, and the cap bounds the variance. [batch, response_len], no gradient."""
    return torch.exp(torch.clamp(old_log_probs - rollout_log_probs, max=20.0)).clamp(max=cap).detach()


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor  # fraction of tokens where the clipped value gave the larger loss


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, loss_mask: torch.Tensor,
               cliprange_value: float, loss_agg_mode: str = "token-mean", **norm) -> ValueLoss:
    """Clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), aggregated.

    The clip keeps the new value estimate near the one the advantages were computed with, as the
    policy clip does for the ratio (OpenAI baselines' PPO2).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * agg_loss(torch.maximum(loss_unclipped, loss_clipped), loss_mask, loss_agg_mode, **norm)
    clipfrac = masked_mean(torch.gt(loss_clipped, loss_unclipped).to(values.dtype), loss_mask)
    return ValueLoss(loss, clipfrac)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum(softmax(z) * z)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def log_probs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] over the last dim, without materialising the full log-softmax."""
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
