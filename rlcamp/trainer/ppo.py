"""PPO and its relatives: the training loop.

One step, as in the algorithm (Ouyang et al. 2022; Schulman et al. 2017):

    generate -> reward -> old_log_prob -> ref -> values -> advantages -> update_critic -> update_actor

Each stage is one worker-group call (or one pure function on the driver) and is timed. Which
stages run follows from the config once (critic only for GAE, reference only with a KL term);
``fit()`` never knows how the workers are placed.
"""

from __future__ import annotations

import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from rlcamp.algos import apply_kl_penalty, compute_advantages, make_kl_controller, masked_mean, pf_ppo_resample
from rlcamp.batch import Batch
from rlcamp.config import ResolvedConfig
from rlcamp.controller.balance import balance_batch
from rlcamp.controller.worker_group import InProcessWorkerGroup
from rlcamp.data import PromptLoader, RLDataset
from rlcamp.rewards import get_reward_function, use_sandbox
from rlcamp.rewards.registry import rules_where_known
from rlcamp.rewards.manager import NaiveRewardManager, PrimeRewardManager
from rlcamp.trainer import checkpoint as ckpt
from rlcamp.trainer.tracking import Tracking
from rlcamp.utils.device import resolve_device, tune_cpu


def _stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    values = values.float()
    return {f"{prefix}/mean": values.mean().item(), f"{prefix}/max": values.max().item(),
            f"{prefix}/min": values.min().item()}


class PPOTrainer:
    def __init__(self, resolved: ResolvedConfig, run_dir: Path, actor_group, critic_group, tokenizer,
                 train_dataset: RLDataset, val_dataset: RLDataset | None, reward_model=None):
        self.cfg, self.derived, self.run_dir = resolved.config, resolved.derived, run_dir
        self.actor, self.critic, self.tokenizer = actor_group, critic_group, tokenizer
        c = self.cfg
        self.loader = PromptLoader(train_dataset, c.data.train_batch_size, pad_token_id=tokenizer.pad_token_id,
                                   shuffle=c.data.shuffle, seed=c.data.seed)
        self.val_dataset = val_dataset
        reward_fn = get_reward_function(c.custom_reward_function.path, c.custom_reward_function.name,
                                        c.custom_reward_function.reward_kwargs)
        self.reward_model = reward_model
        if reward_model is not None and not c.custom_reward_function.path:
            reward_fn = rules_where_known(reward_fn)
        sandbox = c.reward_model.sandbox_fusion
        use_sandbox(sandbox.url, sandbox.max_concurrent, sandbox.memory_limit_mb)
        if c.reward_model.reward_manager == "prime":
            self.reward = PrimeRewardManager(tokenizer, reward_fn, sandbox.max_concurrent)
        else:
            self.reward = NaiveRewardManager(tokenizer, reward_fn)
        kl = c.algorithm.kl_ctrl
        self.kl_ctrl = make_kl_controller(kl.type, kl.kl_coef, kl.target_kl, kl.horizon)
        self.pf_generator = torch.Generator().manual_seed(c.trainer.seed + 3)
        self.global_step = 0
        self.total_steps = self.derived.total_training_steps
        self.timing: dict[str, float] = {}
        self.last_val_metrics: dict[str, float] = {}

    @contextmanager
    def _timer(self, stage: str):
        start = time.perf_counter()
        yield
        self.timing[stage] = time.perf_counter() - start

    # -------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        tracking = Tracking(self.cfg.trainer.logger, self.run_dir, self.total_steps)
        try:
            return self._fit(tracking)
        finally:
            tracking.close()

    def _fit(self, tracking: Tracking) -> dict[str, float]:
        self.load_checkpoint()
        t = self.cfg.trainer
        if self.val_dataset is not None and (t.val_only or (t.val_before_train and self.global_step == 0)):
            self.last_val_metrics = self.validate()
            tracking.log(self.last_val_metrics, self.global_step)
            if t.val_only:
                return self.last_val_metrics
        metrics: dict[str, float] = {}
        carried: dict[str, float] = {}  # reported with the next step (the checkpoint time)
        while self.global_step < self.total_steps:
            for prompts in self.loader:
                self.global_step += 1
                metrics = self.step(prompts)
                last = self.global_step >= self.total_steps
                test_freq = self.cfg.trainer.test_freq
                if self.val_dataset is not None and (last or (test_freq > 0 and self.global_step % test_freq == 0)):
                    with self._timer("testing"):
                        self.last_val_metrics = self.validate()
                    metrics.update(self.last_val_metrics)
                    metrics["timing_s/testing"] = self.timing["testing"]
                # the step's metrics are written before its checkpoint: a run killed in between
                # redoes the step and writes it again, instead of resuming past a step never logged
                metrics.update(carried)
                tracking.log(metrics, self.global_step)
                carried = {}
                save_freq = self.cfg.trainer.save_freq
                if last or (save_freq > 0 and self.global_step % save_freq == 0):
                    with self._timer("save_checkpoint"):
                        self.save_checkpoint()
                    carried["timing_s/last_save_checkpoint"] = self.timing["save_checkpoint"]
                if last:
                    break
        return metrics

    def step(self, prompts: dict) -> dict[str, float]:
        """One PPO step on a batch of prompts; returns its metrics."""
        self.timing = {}
        step_start = time.perf_counter()
        batch = self._prompt_batch(prompts)
        batch["uid"] = list(range(len(batch)))  # responses to one prompt share its uid
        with self._timer("generate"):
            batch = self.actor.call("generate", batch)
        with self._timer("reward"):
            batch["token_level_scores"] = self.score(batch)
        restore = None
        if self.cfg.trainer.balance_batch and self.actor.dp_size > 1:
            batch, restore = balance_batch(batch, self.actor.dp_size)  # even tokens per data-parallel rank
        if self.cfg.algorithm.rollout_correction.bypass_mode:  # the engine's sampling policy is the anchor
            batch["old_log_probs"] = batch["rollout_log_probs"].clone()
        else:
            with self._timer("old_log_prob"):
                batch.update(self.actor.call("compute_log_prob", batch))
        if self.derived.uses_ref:
            with self._timer("ref"):
                batch.update(self.actor.call("compute_ref_log_prob", batch))
        if self.derived.uses_critic:
            with self._timer("values"):
                batch.update(self.critic.call("compute_values", batch))
        with self._timer("advantages"):
            batch, adv_metrics = self.compute_advantages(batch)
        update_metrics: dict[str, float] = {}
        if self.derived.uses_critic:
            with self._timer("update_critic"):
                update_metrics.update(self.critic.call("update_critic", batch))
        if self.global_step > self.cfg.trainer.critic_warmup:
            with self._timer("update_actor"):
                update_metrics.update(self.actor.call("update_actor", batch))
        self.timing["step"] = time.perf_counter() - step_start
        if restore is not None:
            batch = batch.index(restore)
        return {**self.batch_metrics(batch), **adv_metrics, **update_metrics, **self.timing_metrics(batch),
                "training/global_step": self.global_step, "training/epoch": self.loader.epoch}

    @staticmethod
    def _prompt_batch(prompts: dict) -> Batch:
        return Batch({k: prompts[k] for k in ("input_ids", "attention_mask")},
                     {k: prompts[k] for k in ("data_source", "ground_truth", "extra_info", "raw_prompt")})

    def score(self, batch: Batch) -> torch.Tensor:
        """token_level_scores: rule scores, plus the reward model's score when one is on."""
        scores, _, texts = self.reward(batch)
        if self.reward_model is not None:
            last = (batch["response_mask"].sum(-1) - 1).clamp(min=0)
            rm = self.reward_model(batch, texts)
            scores[torch.arange(len(batch)), last] += rm
            batch["rm_scores"] = rm
        return scores

    def compute_advantages(self, batch: Batch) -> tuple[Batch, dict[str, float]]:
        algo, metrics = self.cfg.algorithm, {}
        mask = batch["response_mask"].float()
        if algo.use_kl_in_reward:
            rewards, current_kl = apply_kl_penalty(batch["token_level_scores"], batch["old_log_probs"],
                                                   batch["ref_log_probs"], mask, self.kl_ctrl.value, algo.kl_penalty)
            metrics = {"actor/reward_kl_penalty": current_kl.item(), "actor/reward_kl_penalty_coeff": self.kl_ctrl.value}
            self.kl_ctrl.update(current_kl.item(), len(batch))
        else:
            rewards = batch["token_level_scores"]
        batch["token_level_rewards"] = rewards
        advantages, returns = compute_advantages(
            algo.adv_estimator, token_level_rewards=rewards, response_mask=mask,
            values=batch["values"] if "values" in batch else None, index=batch["uid"], gamma=algo.gamma,
            lam=algo.lam, norm_adv_by_std_in_grpo=algo.norm_adv_by_std_in_grpo)
        batch["advantages"], batch["returns"] = advantages, returns
        if algo.use_pf_ppo:
            order = pf_ppo_resample(batch["token_level_scores"].sum(-1), algo.pf_ppo.reweight_method,
                                    algo.pf_ppo.weight_pow, self.pf_generator)
            batch = batch.index(order)
        return batch, metrics

    # ---------------------------------------------------------------------------- metrics
    def batch_metrics(self, batch: Batch) -> dict[str, float]:
        mask = batch["response_mask"].bool()
        lengths = batch["response_mask"].sum(-1)
        out = {**_stats("critic/score", batch["token_level_scores"].sum(-1)),
               **_stats("critic/rewards", batch["token_level_rewards"].sum(-1)),
               **_stats("critic/advantages", batch["advantages"][mask]),
               **_stats("critic/returns", batch["returns"][mask]),
               **_stats("response_length", lengths),
               **_stats("prompt_length", batch["attention_mask"].sum(-1)),
               "response_length/clip_ratio": (lengths == batch["responses"].shape[1]).float().mean().item()}
        if "entropys" in batch:  # with bypass_mode the actor's update reports it instead
            out["actor/entropy"] = masked_mean(batch["entropys"], mask.float()).item()
        if "values" in batch:
            out.update(_stats("critic/values", batch["values"][mask]))
        if "rm_scores" in batch:
            out.update(_stats("critic/rm_score", batch["rm_scores"]))
        if self.cfg.algorithm.rollout_correction.bypass_mode:  # nothing recomputed to compare with
            return out
        # how far the rollout's sampling log-probs are from the trainer's recomputation
        log_ratio = (batch["old_log_probs"] - batch["rollout_log_probs"])[mask]
        out["rollout/log_prob_diff_max"] = log_ratio.abs().max().item()
        out["rollout/log_prob_diff_mean"] = log_ratio.abs().mean().item()
        # KL(rollout || trainer), k3 estimator on the rollout's own samples (Schulman, "Approximating KL")
        out["rollout/log_prob_kl"] = (torch.exp(log_ratio) - 1 - log_ratio).mean().item()
        return out

    def timing_metrics(self, batch: Batch) -> dict[str, float]:
        response_tokens = batch["response_mask"].sum().item()
        all_tokens = response_tokens + batch["attention_mask"].sum().item()
        # with rollout.ignore_eos the engine also generated the tokens after each response's end
        generated = batch["responses"].numel() if self.cfg.actor_rollout_ref.rollout.ignore_eos else response_tokens
        out = {f"timing_s/{k}": v for k, v in self.timing.items()}
        out["perf/generated_tokens"] = generated
        out["perf/generate_tokens_per_s"] = generated / max(self.timing["generate"], 1e-9)
        for stage in ("old_log_prob", "ref", "values", "update_critic", "update_actor"):
            if stage in self.timing:
                out[f"perf/{stage}_tokens_per_s"] = all_tokens / max(self.timing[stage], 1e-9)
        out["perf/total_tokens"] = all_tokens
        return out

    def shutdown(self) -> None:
        """Release the worker groups (Ray processes and their placement)."""
        for group in (self.actor, self.critic):
            if group is not None:
                group.shutdown()

    # -------------------------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        """Greedy (val_kwargs) generation on the validation set; mean score and accuracy per data_source.

        A sample counts as correct when it earns the full score (>= 1.0)."""
        dataset = self.val_dataset
        size = self.cfg.data.val_batch_size or len(dataset)
        loader = PromptLoader(dataset, size, pad_token_id=self.tokenizer.pad_token_id, shuffle=False, drop_last=False)
        scores, sources = [], []
        for prompts in loader:
            batch = self.actor.call_rank0("generate", self._prompt_batch(prompts), validate=True)
            scores.append(self.score(batch).sum(-1))
            sources += batch["data_source"]
        scores_t = torch.cat(scores)
        out: dict[str, float] = {}
        for source in sorted(set(sources)):
            picked = scores_t[[i for i, s in enumerate(sources) if s == source]]
            out[f"val/{source}/score"] = picked.mean().item()
            out[f"val/{source}/acc"] = (picked >= 1.0 - 1e-6).float().mean().item()
        out["val/score"] = scores_t.mean().item()
        out["val/acc"] = (scores_t >= 1.0 - 1e-6).float().mean().item()
        return out

    # -------------------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> Path:
        t = self.cfg.trainer
        tmp = self.run_dir / f".global_step_{self.global_step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.actor.call("save_checkpoint", folder=tmp / "actor")  # every rank: sharded state is gathered
        if self.critic is not None:
            self.critic.call("save_checkpoint", folder=tmp / "critic")
        torch.save({"global_step": self.global_step, "loader": self.loader.state_dict(),
                    "kl_ctrl": self.kl_ctrl.state_dict(), "pf_generator": self.pf_generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                    "python_rng": random.getstate()}, tmp / "trainer_state.pt")
        folder = ckpt.commit(self.run_dir, tmp, self.global_step)
        ckpt.prune(self.run_dir, t.max_actor_ckpt_to_keep, t.max_critic_ckpt_to_keep)
        return folder

    def load_checkpoint(self) -> None:
        t = self.cfg.trainer
        if t.resume_mode == "disable":
            return
        folder = Path(t.resume_from_path).expanduser() if t.resume_mode == "resume_path" else ckpt.latest(self.run_dir)
        if folder is None:
            return
        if not (folder / "trainer_state.pt").exists():
            raise FileNotFoundError(f"{folder} is not a complete rlcamp checkpoint (no trainer_state.pt)")
        self.actor.call("load_checkpoint", folder=folder / "actor")
        if self.critic is not None:
            self.critic.call("load_checkpoint", folder=folder / "critic")
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        self.global_step = state["global_step"]
        self.loader.load_state_dict(state["loader"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        self.pf_generator.set_state(state["pf_generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        print(f"resumed from {folder} at step {self.global_step}", flush=True)


def build_trainer(resolved: ResolvedConfig, run_dir: Path) -> PPOTrainer:
    """Datasets, workers (in-process, one device) and the trainer, from a resolved config.

    The plan is re-derived from the prompts actually kept (after filtering overlong ones), so the
    step count matches the data the loader will serve."""
    from rlcamp.config import resolve
    from rlcamp.models.loading import load_tokenizer

    c = resolved.config
    device = resolve_device(c.trainer.device)
    if device == "cpu":
        tune_cpu()
    model = c.actor_rollout_ref.model
    tokenizer = load_tokenizer(c.data.tokenizer or model.path, trust_remote_code=model.trust_remote_code,
                               custom_chat_template=model.custom_chat_template)
    dataset_kwargs = dict(max_prompt_length=c.data.max_prompt_length, prompt_key=c.data.prompt_key,
                          reward_fn_key=c.data.reward_fn_key, truncation=c.data.truncation,
                          filter_overlong_prompts=c.data.filter_overlong_prompts)
    train = RLDataset(c.data.train_files, tokenizer, **dataset_kwargs)
    val = RLDataset(c.data.val_files, tokenizer, **dataset_kwargs) if c.data.val_files else None
    resolved = resolve(c, len(train))
    actor_group, critic_group = make_worker_groups(resolved, device)
    reward_model = None
    if c.reward_model.enable:
        from rlcamp.workers.reward_model import RewardModelWorker

        reward_model = RewardModelWorker(c, device)
    return PPOTrainer(resolved, run_dir, actor_group, critic_group, tokenizer, train, val, reward_model)


def make_worker_groups(resolved: ResolvedConfig, device: str):
    """In-process workers for one device, Ray workers (one process per device) otherwise."""
    c, derived = resolved.config, resolved.derived
    kind = c.trainer.worker_group
    if kind == "auto":
        kind = "ray" if derived.n_devices > 1 else "in_process"
    if kind == "in_process":
        from rlcamp.workers.actor import ActorRolloutRefWorker
        from rlcamp.workers.critic import CriticWorker

        actor = InProcessWorkerGroup([ActorRolloutRefWorker(c, derived, device)])
        critic = InProcessWorkerGroup([CriticWorker(c, derived, device)]) if derived.uses_critic else None
        return actor, critic
    import os

    from rlcamp.controller.ray_group import RayWorkerGroup, ensure_ray
    from rlcamp.utils.device import collective_backend

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    groups = 2 if derived.uses_critic else 1
    # on CPU a "device" is a process: Ray must offer at least one logical CPU to each
    ensure_ray(c.ray_init.num_cpus or (max(cores, derived.n_devices * groups) if device == "cpu" else None))
    cpus = max(1, cores // (derived.n_devices * groups)) if device == "cpu" else 1
    common = dict(device=device, backend=collective_backend(device), stage_timeout_s=c.trainer.stage_timeout_s,
                  nnodes=c.trainer.nnodes, cpus_per_worker=cpus)
    from rlcamp.workers.actor import ActorRolloutRefWorker
    from rlcamp.workers.critic import CriticWorker

    kwargs = {"config": c, "derived": derived, "device": device}
    actor = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", derived.n_devices, kwargs,
                           name="actor_rollout_ref", sp_size=c.actor_rollout_ref.actor.ulysses_sequence_parallel_size,
                           sp_methods=ActorRolloutRefWorker.SEQUENCE_PARALLEL, **common)
    critic = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", derived.n_devices, kwargs, name="critic",
                            sp_size=c.critic.ulysses_sequence_parallel_size, sp_methods=CriticWorker.SEQUENCE_PARALLEL,
                            **common) if derived.uses_critic else None
    return actor, critic


def fit_from_config(resolved: ResolvedConfig, run_dir: Path) -> int:
    trainer = build_trainer(resolved, run_dir)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return 0
