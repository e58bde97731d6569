"""rlcamp: reinforcement-learning post-training of LLMs (PPO with a critic and GAE, GRPO, RLOO, REINFORCE++)."""

__version__ = "0.1.0"
