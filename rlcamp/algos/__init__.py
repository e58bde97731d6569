"""Pure tensor math of PPO and its relatives: advantages, losses, KL, aggregation, PF-PPO."""

from rlcamp.algos.advantages import (ADVANTAGE_ESTIMATORS, compute_advantages, gae, get_advantage_estimator,
                                     grpo_advantages, register_advantage, reinforce_plus_plus_advantages,
                                     reinforce_plus_plus_baseline_advantages, rloo_advantages)
from rlcamp.algos.kl import (AdaptiveKLController, FixedKLController, apply_kl_penalty, kl_penalty,
                             make_kl_controller)
from rlcamp.algos.losses import (LOSS_AGG_MODES, POLICY_LOSSES, agg_loss, entropy_from_logits, log_probs_from_logits, policy_loss,
                                 tis_weights, value_loss)
from rlcamp.algos.masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlcamp.algos.pf_ppo import pf_ppo_resample, pf_ppo_weights

__all__ = ["ADVANTAGE_ESTIMATORS", "LOSS_AGG_MODES", "POLICY_LOSSES", "AdaptiveKLController", "FixedKLController", "agg_loss",
           "apply_kl_penalty", "compute_advantages", "entropy_from_logits", "gae", "get_advantage_estimator",
           "grpo_advantages", "kl_penalty", "log_probs_from_logits", "make_kl_controller", "masked_mean", "masked_sum",
           "masked_var", "masked_whiten", "pf_ppo_resample", "pf_ppo_weights", "policy_loss", "register_advantage",
           "reinforce_plus_plus_advantages", "reinforce_plus_plus_baseline_advantages", "rloo_advantages",
           "tis_weights", "value_loss"]
