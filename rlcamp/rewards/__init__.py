"""Rule rewards: scorers picked by data_source (GSM8K, MATH) or a user's function loaded by path."""

from rlcamp.rewards.registry import (
                                     SCORERS,
                                     RewardError,
                                     RewardServices,
                                     default_compute_score,
                                     get_reward_function,
                                     load_custom_reward_function,
                                     register_scorer,
                                     score_sample,
)

__all__ = ["SCORERS", "RewardError", "RewardServices", "default_compute_score", "get_reward_function",
           "load_custom_reward_function", "register_scorer", "score_sample"]
