"""The stages of one PPO step, each a small object that reads and writes the step's batch.

Which stages run, and how, is decided once when the trainer is built (``build_stages``): a stage that
is off is ``None`` and the step skips it; a mode (bypass, scoring in the background, the critic's
warm-up) lives in the stage that owns it. ``PPOTrainer.step`` lists them in order and times each
one as ``timing_s/<name>`` (verl's names where verl times the same work: gen, reward, old_log_prob,
ref, values, adv, update_critic, update_actor).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlcamp.algos import apply_kl_penalty, compute_advantages, pf_ppo_resample
from rlcamp.batch import Batch
from rlcamp.controller.balance import balance_batch
from rlcamp.trainer.scoring import Scored, Scorer, dump_generations


@dataclass
class StepState:
    """What flows between the stages of one step."""

    batch: Batch
    step: int
    timing: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # what the stages report (KL, losses, ...)
    scored: Scored | None = None  # the reward stage's result (texts and extras for the dump)
    pending: Future | None = None  # scores still being computed on the reward thread
    kept: torch.Tensor | None = None  # which scored row each batch row is, after PF-PPO resampled
    actor_updated: bool = False


class Generate:
    """Prompts in, ``rollout.n`` responses per prompt out (adjacent, sharing the prompt's ``uid``)."""

    name = "gen"

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, s: StepState) -> None:
        s.batch["uid"] = list(range(len(s.batch)))
        s.batch = self.actor.call("generate", s.batch)


class Balance:
    """trainer.balance_batch: reorder the rows so each data-parallel rank gets about the same number of
    tokens; every later stage (scoring included) sees the balanced order."""

    name = "balance"

    def __init__(self, dp_size: int):
        self.dp_size = dp_size

    def __call__(self, s: StepState) -> None:
        s.batch, _ = balance_batch(s.batch, self.dp_size)


def _place_scores(s: StepState, scored: Scored) -> None:
    s.scored = scored
    if scored.rm is not None:  # the reward model's share of the reward stage (part of timing_s/reward)
        s.timing["reward_model"] = scored.rm_seconds
    s.batch["token_level_scores"] = scored.scores
    s.batch["token_level_rewards"] = scored.scores  # minus the KL penalty, when that stage runs
    if scored.rm is not None:
        s.batch["rm_scores"] = scored.rm


class Reward:
    """Score every response (rule scores + reward model) now, into ``token_level_scores``."""

    name = "reward"

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def __call__(self, s: StepState) -> None:
        _place_scores(s, self.scorer(s.batch))


class RewardInBackground:
    """reward_model.launch_reward_fn_async (and the reward loop): start scoring on the reward thread;
    ``RewardWait`` collects the scores after the log-prob stages. ``timing_s/reward`` is then the time
    the scorer took, ``timing_s/reward_wait`` what the step still waited for it."""

    name = "reward_launch"

    def __init__(self, scorer: Scorer, pool: ThreadPoolExecutor):
        self.scorer, self.pool = scorer, pool

    def __call__(self, s: StepState) -> None:
        s.pending = self.pool.submit(self.scorer, s.batch.select(*Scorer.NEEDS))


class RewardWait:
    name = "reward_wait"

    def __call__(self, s: StepState) -> None:
        scored = s.pending.result()
        s.pending = None
        s.timing["reward"] = scored.seconds
        _place_scores(s, scored)


class OldLogProb:
    """The actor's log-probs of the responses before the update (PPO's ratio anchor) and its entropy."""

    name = "old_log_prob"
    recomputed = True  # the trainer's own log-probs: compared with the rollout's in the metrics

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, s: StepState) -> None:
        s.batch.update(self.actor.call("compute_log_prob", s.batch))


class RolloutLogProbAnchor:
    """algorithm.rollout_correction.bypass_mode: the rollout engine's sampling log-probs are the anchor (no
    recomputation pass, so no ``timing_s/old_log_prob``)."""

    name = "old_log_prob_bypass"
    recomputed = False

    def __call__(self, s: StepState) -> None:
        s.batch["old_log_probs"] = s.batch["rollout_log_probs"].clone()


class RefLogProb:
    name = "ref"

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, s: StepState) -> None:
        s.batch.update(self.actor.call("compute_ref_log_prob", s.batch))


class Values:
    name = "values"

    def __init__(self, critic):
        self.critic = critic

    def __call__(self, s: StepState) -> None:
        s.batch.update(self.critic.call("compute_values", s.batch))


class KLInReward:
    """algorithm.use_kl_in_reward: ``token_level_rewards`` = scores - beta * KL(old || ref) per token; the KL
    controller (fixed / adaptive) then moves beta."""

    name = "kl_in_reward"

    def __init__(self, kl_ctrl, penalty: str):
        self.kl_ctrl, self.penalty = kl_ctrl, penalty

    def __call__(self, s: StepState) -> None:
        b = s.batch
        rewards, current_kl = apply_kl_penalty(b["token_level_scores"], b["old_log_probs"], b["ref_log_probs"],
                                               b["loss_mask"].float(), self.kl_ctrl.value, self.penalty)
        b["token_level_rewards"] = rewards
        s.metrics["actor/reward_kl_penalty"] = current_kl.item()
        s.metrics["actor/reward_kl_penalty_coeff"] = self.kl_ctrl.value
        self.kl_ctrl.update(current_kl.item(), len(b))


class Advantages:
    """algorithm.adv_estimator's advantages and returns from ``token_level_rewards`` (and values for GAE)."""

    name = "adv"

    def __init__(self, algo):
        self.algo = algo

    def __call__(self, s: StepState) -> None:
        b, a = s.batch, self.algo
        b["advantages"], b["returns"] = compute_advantages(
            a.adv_estimator, token_level_rewards=b["token_level_rewards"], loss_mask=b["loss_mask"].float(),
            values=b["values"] if "values" in b else None, uid=b["uid"], gamma=a.gamma, lam=a.lam,
            norm_adv_by_std_in_grpo=a.norm_adv_by_std_in_grpo)


class PFPPO:
    """algorithm.use_pf_ppo: resample the batch's rows by their score (Policy Filtration for PPO)."""

    name = "pf_ppo"

    def __init__(self, pf, generator: torch.Generator):
        self.pf, self.generator = pf, generator

    def __call__(self, s: StepState) -> None:
        s.kept = pf_ppo_resample(s.batch["token_level_scores"].sum(-1), self.pf.reweight_method,
                                 self.pf.weight_pow, self.generator)
        s.batch = s.batch.index(s.kept)


class UpdateCritic:
    name = "update_critic"

    def __init__(self, critic):
        self.critic = critic

    def __call__(self, s: StepState) -> None:
        s.metrics.update(self.critic.call("update_critic", s.batch))


class UpdateActor:
    """The actor's PPO update; held back for the first ``trainer.critic_warmup`` steps."""

    name = "update_actor"

    def __init__(self, actor, hold_back_steps: int):
        self.actor, self.hold_back_steps = actor, hold_back_steps

    def __call__(self, s: StepState) -> None:
        if s.step <= self.hold_back_steps:
            return
        s.metrics.update(self.actor.call("update_actor", s.batch))
        s.actor_updated = True


class SyncWeights:
    """The updated actor's weights into the rollout engine (a no-op on the workers whose engine decodes on
    the actor's own weights)."""

    name = "sync_weights"

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, s: StepState) -> None:
        if s.actor_updated:
            self.actor.call("sync_weights")


class DumpGenerations:
    """trainer.rollout_data_dir: this step's samples as ``<dir>/<step>.jsonl``."""

    name = "dump_rollout_generations"

    def __init__(self, folder: Path, tokenizer):
        self.folder, self.tokenizer = folder, tokenizer

    def __call__(self, s: StepState) -> None:
        scored = s.scored if s.kept is None else s.scored.index(s.kept)
        dump_generations(self.folder, s.step, self.tokenizer, s.batch, scored)


@dataclass
class Stages:
    """Every stage of a step, in order; ``None`` where the config leaves one out."""

    generate: Any
    balance: Any
    reward: Any
    old_log_prob: Any
    ref: Any
    values: Any
    reward_wait: Any
    kl_in_reward: Any
    advantages: Any
    pf_ppo: Any
    update_critic: Any
    update_actor: Any
    sync_weights: Any
    dump: Any


def build_stages(config, derived, actor, critic, scorer: Scorer, reward_pool: ThreadPoolExecutor | None, kl_ctrl,
                 pf_generator: torch.Generator, tokenizer) -> Stages:
    """The step's stages for this config: every mode is resolved here, none in the loop."""
    algo, t = config.algorithm, config.trainer
    background = reward_pool is not None
    return Stages(
        generate=Generate(actor),
        balance=Balance(actor.dp_size) if t.balance_batch and actor.dp_size > 1 else None,
        reward=RewardInBackground(scorer, reward_pool) if background else Reward(scorer),
        old_log_prob=RolloutLogProbAnchor() if algo.rollout_correction.bypass_mode else OldLogProb(actor),
        ref=RefLogProb(actor) if derived.uses_ref else None,
        values=Values(critic) if derived.uses_critic else None,
        reward_wait=RewardWait() if background else None,
        kl_in_reward=KLInReward(kl_ctrl, algo.kl_penalty) if algo.use_kl_in_reward else None,
        advantages=Advantages(algo),
        pf_ppo=PFPPO(algo.pf_ppo, pf_generator) if algo.use_pf_ppo else None,
        update_critic=UpdateCritic(critic) if derived.uses_critic else None,
        update_actor=UpdateActor(actor, t.critic_warmup),
        sync_weights=SyncWeights(actor),
        dump=DumpGenerations(Path(t.rollout_data_dir), tokenizer) if t.rollout_data_dir else None,
    )
