"""Advantage estimators, one implementation per name declared in ``rlcamp.algos.registry.ADV_ESTIMATORS``.

Shapes: ``token_level_rewards``, ``values``, ``loss_mask`` (1 on the tokens trained on) are [batch, response_len];
``uid`` [batch] holds a group id per response (responses to the same prompt share it).
Every estimator returns ``(advantages, returns)``, both [batch, response_len], zero on padding.
"""

from __future__ import annotations

from typing import Callable

import torch

from rlcamp.algos.masked import masked_whiten
from rlcamp.algos.registry import ADV_ESTIMATORS

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}


def register_advantage(name: str):
    """The implementation of the estimator ``name`` declared in ``rlcamp.algos.registry.ADV_ESTIMATORS``."""
    def wrap(fn):
        if name not in ADV_ESTIMATORS:
            raise ValueError(f"advantage estimator '{name}' is not declared in rlcamp.algos.registry.ADV_ESTIMATORS")
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator '{name}' is registered twice")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return wrap


def get_advantage_estimator(name: str):
    if name not in ADVANTAGE_ESTIMATORS:
        raise KeyError(f"unknown algorithm.adv_estimator '{name}'; known: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]


def gae(token_level_rewards: torch.Tensor, values: torch.Tensor, loss_mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), raw (not whitened).

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.
    Padding positions inside a response are skipped: they pass V and A through unchanged, so a
    masked token never leaks into its neighbours. Vectorised over the batch, a loop over time.
    """
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = loss_mask[:, t].to(values.dtype)
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * m
        next_value = values[:, t] * m + next_value * (1 - m)
        next_advantage = advantage * m + next_advantage * (1 - m)
    returns = advantages + values * loss_mask
    return advantages, returns


@register_advantage("gae")
def gae_advantages(token_level_rewards, values, loss_mask, gamma: float = 1.0, lam: float = 1.0, **_):
    """PPO's default: GAE, advantages whitened over the batch's response tokens (as verl and OpenAI do)."""
    advantages, returns = gae(token_level_rewards, values, loss_mask, gamma, lam)
    return masked_whiten(advantages, loss_mask) * loss_mask, returns


def _group_stats(scores: torch.Tensor, uid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-response group mean, unbiased group std and group size, gathered back to [batch]."""
    _, group = torch.unique(uid, return_inverse=True)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    count = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, group, torch.ones_like(scores))
    mean = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, group, scores) / count
    sq_dev = torch.zeros(n_groups, dtype=scores.dtype).index_add_(0, group, (scores - mean[group]) ** 2)
    std = torch.sqrt(sq_dev / (count - 1).clamp(min=1))
    return mean[group], std[group], count[group]


def _as_group_ids(uid) -> torch.Tensor:
    if isinstance(uid, torch.Tensor):
        return uid
    # group ids may be strings (prompt uids): map them to integers in order of appearance
    ids: dict = {}
    return torch.tensor([ids.setdefault(x, len(ids)) for x in uid], dtype=torch.long)


@register_advantage("grpo")
def grpo_advantages(token_level_rewards, loss_mask, uid, norm_adv_by_std_in_grpo: bool = True,
                    epsilon: float = 1e-6, **_):
    """GRPO (Shao et al. 2024): outcome score minus its group's mean, divided by the group's std.

    ``norm_adv_by_std_in_grpo=False`` drops the division (Dr. GRPO, Liu et al. 2025), which removes
    the bias towards groups with nearly equal scores. A group of one has no baseline: as in verl, its
    mean is taken as 0 and its std as 1, so it keeps its score.
    """
    scores = token_level_rewards.sum(-1)
    mean, std, count = _group_stats(scores, _as_group_ids(uid))
    mean = torch.where(count > 1, mean, torch.zeros_like(mean))
    std = torch.where(count > 1, std, torch.ones_like(std))
    advantage = scores - mean
    if norm_adv_by_std_in_grpo:
        advantage = advantage / (std + epsilon)
    advantages = advantage.unsqueeze(-1) * loss_mask
    return advantages, advantages


@register_advantage("rloo")
def rloo_advantages(token_level_rewards, loss_mask, uid, **_):
    """REINFORCE leave-one-out (Ahmadian et al. 2024): score minus the mean of the *other* responses.

    With n responses: r_i - (sum_j r_j - r_i)/(n-1) = n/(n-1) * (r_i - mean). A group of one has no
    baseline and keeps its score.
    """
    scores = token_level_rewards.sum(-1)
    mean, _, count = _group_stats(scores, _as_group_ids(uid))
    advantage = torch.where(count > 1, (scores - mean) * count / (count - 1).clamp(min=1), scores)
    advantages = advantage.unsqueeze(-1) * loss_mask
    return advantages, advantages


@register_advantage("reinforce_plus_plus")
def reinforce_plus_plus_advantages(token_level_rewards, loss_mask, gamma: float = 1.0, **_):
    """REINFORCE++ (Hu 2025): discounted return-to-go per token, whitened over the batch.

    A position not trained on (padding, a tool's output inside a multi-turn response) passes the running
    return through unchanged, as GAE does: it adds no reward and no discount step.
    """
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        m = loss_mask[:, t].to(running.dtype)
        running = (token_level_rewards[:, t] + gamma * running) * m + running * (1 - m)
        returns[:, t] = running * m
    advantages = masked_whiten(returns, loss_mask) * loss_mask
    return advantages, returns


@register_advantage("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline_advantages(token_level_rewards, loss_mask, uid, **_):
    """REINFORCE++-baseline: score minus its group's mean, broadcast to tokens, whitened over the batch."""
    scores = token_level_rewards.sum(-1)
    mean, _, count = _group_stats(scores, _as_group_ids(uid))
    scores = scores - torch.where(count > 1, mean, torch.zeros_like(mean))
    advantages = masked_whiten(scores.unsqueeze(-1) * loss_mask, loss_mask) * loss_mask
    return advantages, advantages


def compute_advantages(name: str, *, token_level_rewards, loss_mask, values=None, uid=None,
                       gamma: float = 1.0, lam: float = 1.0, norm_adv_by_std_in_grpo: bool = True):
    """Dispatch to the estimator ``name`` with the arguments it needs."""
    estimator = get_advantage_estimator(name)
    if ADV_ESTIMATORS[name].needs_critic and values is None:
        raise ValueError(f"adv_estimator={name} needs the critic's values")
    if ADV_ESTIMATORS[name].needs_groups and uid is None:
        raise ValueError(f"adv_estimator={name} needs the group uid of each response")
    return estimator(token_level_rewards=token_level_rewards, values=values, loss_mask=loss_mask,
                     uid=uid, gamma=gamma, lam=lam, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo)
