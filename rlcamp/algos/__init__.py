"""Pure tensor math of PPO and its relatives: advantages, losses, KL, aggregation, PF-PPO.

The names below load their module (and torch) on first use, so that ``rlcamp.algos.registry``, the
torch-free tables the config layer reads, can be imported without them.
"""

from importlib import import_module

_HOMES = {
    "advantages": ("ADVANTAGE_ESTIMATORS", "compute_advantages", "gae", "get_advantage_estimator", "grpo_advantages",
                   "register_advantage", "reinforce_plus_plus_advantages", "reinforce_plus_plus_baseline_advantages",
                   "rloo_advantages"),
    "kl": ("AdaptiveKLController", "FixedKLController", "apply_kl_penalty", "kl_penalty", "make_kl_controller"),
    "losses": ("LOSS_AGG_MODES", "POLICY_LOSSES", "agg_loss", "entropy_from_logits", "log_probs_from_logits",
               "policy_loss", "tis_weights", "value_loss"),
    "masked": ("masked_mean", "masked_sum", "masked_var", "masked_whiten"),
    "pf_ppo": ("pf_ppo_resample", "pf_ppo_weights"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rlcamp.algos' has no attribute '{name}'")
    value = getattr(import_module(f"rlcamp.algos.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
