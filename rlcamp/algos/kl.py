"""KL between the actor and the reference: per-token estimators, the in-reward penalty, controllers.

The estimators follow Schulman, "Approximating KL Divergence" (2020), with the actor's samples
x ~ pi and the log-ratio log pi(x) - log ref(x):
  k1 (``kl``): log pi - log ref               unbiased, high variance, can be negative
  ``abs``:     |log pi - log ref|
  k2 (``mse``): 0.5 (log pi - log ref)^2       biased, low variance
  k3 (``low_var_kl``): ref/pi - log(ref/pi) - 1  unbiased, low variance, always >= 0
  ``full``:    sum_v pi(v) (log pi(v) - log ref(v)) over the whole vocabulary (exact)
"""

from __future__ import annotations

import math

import torch

from rlcamp.algos.masked import masked_mean
from rlcamp.algos.registry import KL_ESTIMATORS as KL_TABLE
from rlcamp.algos.registry import names

KL_ESTIMATORS = names(KL_TABLE)


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate [batch, len].

    For ``full``, pass log-probabilities over the vocabulary, [batch, len, vocab]; the others take
    the sampled tokens' log-probs, [batch, len].
    """
    if estimator == "full":
        if log_probs.dim() < 3:
            raise ValueError("estimator='full' needs log-probs over the whole vocabulary, [batch, len, vocab]")
        return (log_probs.exp() * (log_probs - ref_log_probs)).sum(-1)
    log_ratio = log_probs - ref_log_probs
    if estimator in ("kl", "k1"):
        return log_ratio
    if estimator == "abs":
        return log_ratio.abs()
    if estimator in ("mse", "k2"):
        return 0.5 * log_ratio.square()
    if estimator in ("low_var_kl", "k3"):
        # k3 = r - log r - 1 with r = ref/pi; the clamps keep one wild token from dominating (as verl)
        neg_log_ratio = torch.clamp(-log_ratio, -20.0, 20.0)
        return torch.clamp(neg_log_ratio.exp() - neg_log_ratio - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown KL estimator '{estimator}'; known: {KL_ESTIMATORS}")


def apply_kl_penalty(token_level_scores: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                     loss_mask: torch.Tensor, kl_coef: float, estimator: str = "kl"):
    """token_level_rewards = scores - kl_coef * KL per token (Ziegler et al. 2019).

    Returns the rewards and the batch's mean per-sequence KL (for the adaptive controller).
    """
    kld = kl_penalty(old_log_probs, ref_log_probs, estimator) * loss_mask
    rewards = token_level_scores - kl_coef * kld
    current_kl = masked_mean(kld, loss_mask, dim=-1).mean()
    return rewards, current_kl


class FixedKLController:
    """A constant in-reward KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController:
    """Ziegler et al. 2019: move the coefficient so the observed KL approaches ``target_kl``.

    error = clip(KL / target - 1, -0.2, 0.2);  coef *= 1 + error * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target_kl, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def make_kl_controller(estimator: str, kl_coef: float, target_kl: float = 0.1, horizon: int = 10000):
    if estimator == "fixed":
        return FixedKLController(kl_coef)
    if estimator == "adaptive":
        if not (target_kl > 0 and horizon > 0 and math.isfinite(target_kl)):
            raise ValueError(f"adaptive KL needs target_kl > 0 and horizon > 0 (got {target_kl}, {horizon})")
        return AdaptiveKLController(kl_coef, target_kl, horizon)
    raise ValueError(f"unknown algorithm.kl_ctrl.type '{estimator}'; known: fixed, adaptive")
