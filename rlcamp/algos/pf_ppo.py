"""PF-PPO (Zhang et al. 2025, "Policy Filtration in RLHF"): resample a batch by its rewards.

Responses with extreme (most reliable) rewards are drawn more often, so the policy learns from
the part of the batch where the reward signal is trustworthy.
"""

from __future__ import annotations

import torch

from rlcamp.algos.registry import PF_PPO_METHODS, names

REWEIGHT_METHODS = names(PF_PPO_METHODS)


def pf_ppo_weights(scores: torch.Tensor, reweight_method: str, weight_pow: float = 2.0) -> torch.Tensor:
    """Sampling weight per response [batch] from its sequence score [batch].

    - pow: |score|^weight_pow
    - max_min: 1 for responses with the batch's highest or lowest score, else 0
    - max_random: 0.4 for the highest score, 0.1 for the rest
    Weights are floored at 1e-8 so every response stays drawable.
    """
    if reweight_method == "pow":
        weights = scores.abs().pow(weight_pow)
    elif reweight_method == "max_min":
        weights = ((scores == scores.max()) | (scores == scores.min())).to(scores.dtype)
    elif reweight_method == "max_random":
        weights = torch.where(scores == scores.max(), 0.4, 0.1).to(scores.dtype)
    else:
        raise ValueError(f"unknown algorithm.pf_ppo.reweight_method '{reweight_method}'; known: {REWEIGHT_METHODS}")
    return weights.clamp(min=1e-8)


def pf_ppo_resample(scores: torch.Tensor, reweight_method: str, weight_pow: float = 2.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [batch] drawn with replacement in proportion to the PF-PPO weights."""
    weights = pf_ppo_weights(scores, reweight_method, weight_pow)
    return torch.multinomial(weights / weights.sum(), scores.shape[0], replacement=True, generator=generator)
