"""One table per algorithm registry: every name a config may pick, with what it needs.

The config schema's choices, the validation rules (which estimators need a critic or prompt groups,
which KL estimators need whole distributions), ``Derived.uses_critic`` and the error messages all
derive from these tables; the tensor code registers one implementation per name
(``register_advantage`` in ``algos.advantages``, ...) and a test holds the two to each other.
No torch here: the config layer reads these tables without importing it.

Adding an advantage estimator: one entry in ``ADV_ESTIMATORS`` and one ``@register_advantage`` function.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimator:
    doc: str
    needs_critic: bool = False  # reads the critic's values (a critic is built and trained)
    needs_groups: bool = False  # compares the responses of one prompt (rollout.n >= 2)


ADV_ESTIMATORS: dict[str, Estimator] = {
    "gae": Estimator("GAE over the critic's values (PPO)", needs_critic=True),
    "grpo": Estimator("score minus the group mean, over the group std (GRPO; Dr. GRPO without the std)",
                      needs_groups=True),
    "rloo": Estimator("score minus the mean of the other responses (REINFORCE leave-one-out)", needs_groups=True),
    "reinforce_plus_plus": Estimator("discounted return-to-go, whitened over the batch (REINFORCE++)"),
    "reinforce_plus_plus_baseline": Estimator("score minus the group mean, whitened over the batch", needs_groups=True),
}


@dataclass(frozen=True)
class KLEstimator:
    doc: str
    needs_vocabulary: bool = False  # needs log-probs over the whole vocabulary, not only the sampled token's


KL_ESTIMATORS: dict[str, KLEstimator] = {
    "kl": KLEstimator("k1: log(pi / ref)"), "k1": KLEstimator("k1: log(pi / ref)"),
    "abs": KLEstimator("|log(pi / ref)|"),
    "mse": KLEstimator("k2: 0.5 log(pi / ref)^2"), "k2": KLEstimator("k2: 0.5 log(pi / ref)^2"),
    "low_var_kl": KLEstimator("k3: ref/pi - log(ref/pi) - 1, clamped"),
    "k3": KLEstimator("k3: ref/pi - log(ref/pi) - 1, clamped"),
    "full": KLEstimator("the exact KL over the vocabulary", needs_vocabulary=True),
}

LOSS_AGG_MODES: dict[str, str] = {
    "token-mean": "every token counts equally",
    "seq-mean-token-sum": "sum over each sequence's tokens, mean over sequences",
    "seq-mean-token-mean": "mean over each sequence's tokens, mean over sequences (original GRPO)",
    "seq-mean-token-sum-norm": "sum over all tokens / a constant (Dr. GRPO)",
}

POLICY_LOSS_MODES: dict[str, str] = {"vanilla": "PPO clip with dual clip"}

PF_PPO_METHODS: dict[str, str] = {
    "pow": "|score|^weight_pow",
    "max_min": "only the highest and lowest scores",
    "max_random": "0.4 for the highest score, 0.1 for the rest",
}


def names(table: dict) -> tuple[str, ...]:
    return tuple(table)


def uses_critic(adv_estimator: str) -> bool:
    return ADV_ESTIMATORS[adv_estimator].needs_critic


def needs_groups(adv_estimator: str) -> bool:
    return ADV_ESTIMATORS[adv_estimator].needs_groups


def check_registered(kind: str, table: dict, implemented: dict) -> None:
    """Every declared name has an implementation and every implementation a declaration."""
    if set(table) != set(implemented):
        raise RuntimeError(f"{kind}: declared {sorted(table)} but implemented {sorted(implemented)} "
                           "(rlcamp.algos.registry holds the declarations)")
