"""PPO and its relatives: the training loop.

One step, as in the algorithm (Ouyang et al. 2022; Schulman et al. 2017):

    generate -> reward -> old_log_prob -> ref -> values -> advantages -> update_critic -> update_actor

Each stage is one worker-group call (or one pure function on the driver) and is timed. Which
stages run follows from the config once (critic only for GAE, reference only with a KL term);
``fit()`` never knows how the workers are placed.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlcamp.algos import apply_kl_penalty, compute_advantages, make_kl_controller, pf_ppo_resample
from rlcamp.batch import Batch
from rlcamp.config import ResolvedConfig, config_to_dict
from rlcamp.controller.balance import balance_batch
from rlcamp.controller.worker_group import InProcessWorkerGroup
from rlcamp.data import PromptLoader, RLDataset
from rlcamp.rewards import get_reward_function, use_sandbox
from rlcamp.rewards.registry import rules_where_known
from rlcamp.rewards.manager import NaiveRewardManager, PrimeRewardManager
from rlcamp.trainer import checkpoint as ckpt
from rlcamp.trainer.metrics import batch_metrics, numeric_extras, timing_metrics, validation_metrics
from rlcamp.trainer.profiling import call_stage, nsight_runtime_env, step_windows
from rlcamp.trainer.tracking import RunInfo, Tracking
from rlcamp.utils.device import resolve_device, tune_cpu

VAL_TABLE = "val/generations"  # verl's name for the validation samples' table
VAL_COLUMNS = ["input", "output", "ground_truth", "score"]


class Scored:
    """What the reward stage hands on: token-level scores and, per sample, the decoded response,
    the reward model's score and the scorer's extras (a pass fraction, timeouts, ...)."""

    def __init__(self, scores: torch.Tensor, texts: list[str], extra: dict[str, list[Any]], rm: torch.Tensor | None,
                 seconds: float):
        self.scores, self.texts, self.extra, self.rm, self.seconds = scores, texts, extra, rm, seconds

    def index(self, order: torch.Tensor) -> "Scored":
        rows = order.tolist()
        return Scored(self.scores[order], [self.texts[i] for i in rows],
                      {k: [v[i] for i in rows] for k, v in self.extra.items()},
                      None if self.rm is None else self.rm[order], self.seconds)

    @staticmethod
    def concat(parts: list["Scored"]) -> "Scored":
        """Batches scored one after another, as one (an extra a part lacks is None on its rows)."""
        keys = dict.fromkeys(k for p in parts for k in p.extra)
        extra = {k: [v for p in parts for v in p.extra.get(k, [None] * len(p.texts))] for k in keys}
        rms = [p.rm for p in parts]
        return Scored(torch.cat([p.scores for p in parts]), [t for p in parts for t in p.texts], extra,
                      None if any(r is None for r in rms) else torch.cat(rms), sum(p.seconds for p in parts))


class PPOTrainer:
    def __init__(self, resolved: ResolvedConfig, run_dir: Path, actor_group, critic_group, tokenizer,
                 train_dataset: RLDataset, val_dataset: RLDataset | None, reward_model=None):
        self.cfg, self.derived, self.run_dir = resolved.config, resolved.derived, run_dir
        self.actor, self.critic, self.tokenizer = actor_group, critic_group, tokenizer
        c = self.cfg
        self.loader = PromptLoader(train_dataset, c.data.train_batch_size, pad_token_id=tokenizer.pad_token_id,
                                   shuffle=c.data.shuffle, seed=c.data.seed, num_workers=c.data.dataloader_num_workers)
        self.val_dataset = val_dataset
        reward_fn = get_reward_function(c.custom_reward_function.path, c.custom_reward_function.name,
                                        c.custom_reward_function.reward_kwargs,
                                        getattr(reward_model, "function_kwargs", None))
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
        # reward_model.launch_reward_fn_async: scoring runs here while the log-prob stages run
        # and always with the reward loop, whose engine scores while the trainer moves on
        in_background = c.reward_model.launch_reward_fn_async or (reward_model is not None and
                                                                  c.reward_model.use_reward_loop)
        self.reward_pool = ThreadPoolExecutor(1, "rlcamp-reward") if in_background else None
        self.tracking: Tracking | None = None
        self.loaded_checkpoint: Path | None = None  # deleted once a newer one exists (del_local_ckpt_after_load)
        # global_profiler: the steps whose stages each enabled role records (rlcamp.trainer.profiling)
        gp = c.global_profiler
        self.profile_starts, self.profile_stops = step_windows(gp.steps if gp.tool else None, gp.profile_continuous_steps)

    @contextmanager
    def _timer(self, stage: str):
        start = time.perf_counter()
        yield
        self.timing[stage] = time.perf_counter() - start

    # -------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        t = self.cfg.trainer
        info = RunInfo(t.project_name, t.experiment_name, self.run_dir, config_to_dict(self.cfg), self.total_steps)
        self.tracking = tracking = Tracking(t.logger, info)
        try:
            return self._fit(tracking)
        finally:
            tracking.close()
            if hasattr(self.reward_model, "close"):
                self.reward_model.close()
            if self.reward_pool is not None:
                self.reward_pool.shutdown(wait=False, cancel_futures=True)

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
                self._profile("profile_start", self.global_step in self.profile_starts, step=self.global_step)
                metrics = self.step(prompts)
                self._profile("profile_stop", self.global_step in self.profile_stops)
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

    def _profile(self, method: str, now: bool, **kwargs) -> None:
        if not now:
            return
        for group in (self.actor, self.critic):
            if group is not None:
                group.call(method, **kwargs)
        if self.reward_model is not None:
            getattr(self.reward_model, method)(**kwargs)

    def step(self, prompts: dict) -> dict[str, float]:
        """One PPO step on a batch of prompts; returns its metrics."""
        self.timing = {}
        step_start = time.perf_counter()
        batch = self._prompt_batch(prompts)
        batch["uid"] = list(range(len(batch)))  # responses to one prompt share its uid
        with self._timer("gen"):
            batch = self.actor.call("generate", batch)
        pending = self._start_reward(batch)
        order = None
        if self.cfg.trainer.balance_batch and self.actor.dp_size > 1:
            batch, restore = balance_batch(batch, self.actor.dp_size)  # even tokens per data-parallel rank
            order = torch.argsort(restore)
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
        scored = self._finish_reward(pending)
        if order is not None:
            scored = scored.index(order)
        batch["token_level_scores"] = scored.scores
        if scored.rm is not None:
            batch["rm_scores"] = scored.rm
        with self._timer("adv"):
            batch, adv_metrics, kept = self.compute_advantages(batch)
        update_metrics: dict[str, float] = {}
        if self.derived.uses_critic:
            with self._timer("update_critic"):
                update_metrics.update(self.critic.call("update_critic", batch))
        if self.global_step > self.cfg.trainer.critic_warmup:
            with self._timer("update_actor"):
                update_metrics.update(self.actor.call("update_actor", batch))
        if self.cfg.trainer.rollout_data_dir:
            with self._timer("dump_rollout_generations"):
                self.dump_generations(Path(self.cfg.trainer.rollout_data_dir), batch, scored.index(kept))
        self.timing["step"] = time.perf_counter() - step_start
        return {**batch_metrics(batch, self.cfg.data.max_prompt_length,
                                compare_rollout=not self.cfg.algorithm.rollout_correction.bypass_mode),
                **adv_metrics, **update_metrics, **self.timing_metrics(batch),
                "training/global_step": self.global_step, "training/epoch": self.loader.epoch}

    @staticmethod
    def _prompt_batch(prompts: dict) -> Batch:
        return Batch({k: prompts[k] for k in ("input_ids", "attention_mask")},
                     {k: prompts[k] for k in ("data_source", "ground_truth", "extra_info", "raw_prompt")})

    # ----------------------------------------------------------------------------- reward
    def score(self, batch: Batch) -> Scored:
        """Rule scores on each response's last token, plus the reward model's score when one is on."""
        start = time.perf_counter()
        scores, extra, texts = self.reward(batch)
        rm = None
        if self.reward_model is not None:
            last = (batch["response_mask"].sum(-1) - 1).clamp(min=0)
            rm = call_stage(self.reward_model, "__call__", batch)  # None: a generative RM scores via the function
            if rm is not None:
                scores[torch.arange(len(batch)), last] += rm
        return Scored(scores, texts, extra, rm, time.perf_counter() - start)

    def _start_reward(self, batch: Batch) -> Scored | Future:
        """Score now, or (launch_reward_fn_async) on the reward thread while the next stages run."""
        if self.reward_pool is None:
            scored = self.score(batch)
            self.timing["reward"] = scored.seconds
            return scored
        needed = ("responses", "response_mask", "data_source", "ground_truth", "extra_info", "raw_prompt")
        return self.reward_pool.submit(self.score, batch.select(*needed))

    def _finish_reward(self, pending: Scored | Future) -> Scored:
        if isinstance(pending, Scored):
            return pending
        with self._timer("reward_wait"):  # what the step still waited for the scores
            scored = pending.result()
        self.timing["reward"] = scored.seconds
        return scored

    def compute_advantages(self, batch: Batch) -> tuple[Batch, dict[str, float], torch.Tensor]:
        """KL in the reward, advantages and returns, then PF-PPO's resampling; also returns which of
        the incoming rows each outgoing row is (PF-PPO repeats and drops rows)."""
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
        kept = torch.arange(len(batch))
        if algo.use_pf_ppo:
            kept = pf_ppo_resample(batch["token_level_scores"].sum(-1), algo.pf_ppo.reweight_method,
                                   algo.pf_ppo.weight_pow, self.pf_generator)
            batch = batch.index(kept)
        return batch, metrics, kept

    # ---------------------------------------------------------------------------- metrics
    def timing_metrics(self, batch: Batch) -> dict[str, float]:
        response_tokens = int(batch["response_mask"].sum().item())
        # with rollout.ignore_eos the engine also generated the tokens after each response's end
        generated = batch["responses"].numel() if self.cfg.actor_rollout_ref.rollout.ignore_eos else response_tokens
        return timing_metrics(self.timing, response_tokens, int(batch["attention_mask"].sum().item()), generated,
                              self.derived.n_devices)

    def decode_prompts(self, batch: Batch) -> list[str]:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        return [self.tokenizer.decode(row[keep], skip_special_tokens=True) for row, keep in zip(ids, mask)]

    def dump_generations(self, folder: Path, batch: Batch, scored: Scored) -> Path:
        """``<folder>/<step>.jsonl``: one line per sample with its input, output, ground truth, score,
        step and the scorer's extras (trainer.rollout_data_dir / trainer.validation_data_dir)."""
        folder = folder.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.global_step}.jsonl"
        inputs, scores = self.decode_prompts(batch), scored.scores.sum(-1).tolist()
        with path.open("w") as f:
            for i, (text, output) in enumerate(zip(inputs, scored.texts)):
                row = {"input": text, "output": output, "gts": batch["ground_truth"][i], "score": scores[i],
                       "step": self.global_step, "data_source": batch["data_source"][i],
                       **{k: v[i] for k, v in scored.extra.items()}}
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return path

    def shutdown(self) -> None:
        """Release the worker groups (Ray processes and their placement)."""
        for group in (self.actor, self.critic):
            if group is not None:
                group.shutdown()

    # -------------------------------------------------------------------------- validation
    def _generate_validation(self, prompts: Batch) -> Batch:
        """Validation responses: on rank 0 (the set need not split evenly over the ranks), except with a
        tensor-parallel rollout, whose engine needs every rank of its group: there the prompts are padded
        to a multiple of the ranks with copies of the last one, whose responses are dropped."""
        if self.cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 1:
            return self.actor.call_rank0("generate", prompts, validate=True)
        world, n = self.actor.world_size, self.cfg.actor_rollout_ref.rollout.val_kwargs.n
        extra = -len(prompts) % world
        padded = Batch.concat([prompts, prompts.index(torch.full((extra,), len(prompts) - 1))]) if extra else prompts
        out = self.actor.call("generate", padded, validate=True)
        return out.index(torch.arange(len(prompts) * n)) if extra else out

    def validate(self) -> dict[str, float]:
        """val_kwargs generation (greedy by default) on the validation set; verl's per-data-source
        metrics (``val-core/<data_source>/reward/mean@n``, ...) and ``val/acc``, the share of samples
        that earn the full score (>= 1) or, where the scorer reports ``acc``, that. Also logs
        ``trainer.log_val_generations`` samples as a table and writes ``trainer.validation_data_dir``."""
        c = self.cfg
        dataset, n = self.val_dataset, c.actor_rollout_ref.rollout.val_kwargs.n
        size = c.data.val_batch_size or len(dataset)
        loader = PromptLoader(dataset, size, pad_token_id=self.tokenizer.pad_token_id, shuffle=c.data.validation_shuffle,
                              seed=c.data.seed, drop_last=False)
        batches, parts = [], []
        for prompts in loader:
            batch = self._generate_validation(self._prompt_batch(prompts))
            batches.append(batch.select("input_ids", "attention_mask", "data_source", "ground_truth"))
            parts.append(self.score(batch))
        batch = Batch.concat(batches)
        scored = Scored.concat(parts)
        scores = scored.scores.sum(-1)
        extras = numeric_extras(scored.extra)
        reported = extras.pop("acc", None)  # a scorer that reports its own accuracy is believed
        acc = reported if reported is not None else (scores >= 1.0 - 1e-6).float().tolist()
        core = "acc" if reported is not None else "reward"  # verl's choice of the val-core variable
        out = validation_metrics(batch["data_source"], [i // n for i in range(len(batch))],
                                 {"reward": scores.tolist(), "acc": acc, **extras}, core)
        out["val/acc"] = sum(acc) / len(acc)
        if c.trainer.log_val_generations > 0 and self.tracking is not None:
            self.tracking.log_table(VAL_TABLE, VAL_COLUMNS, self._val_samples(batch, scored), self.global_step)
        if c.trainer.validation_data_dir:
            self.dump_generations(Path(c.trainer.validation_data_dir), batch, scored)
        return out

    def _val_samples(self, batch: Batch, scored: Scored) -> list[list[Any]]:
        """``trainer.log_val_generations`` samples, the same prompts at every validation: sorted by
        input, then a fixed-seed shuffle (as verl picks them)."""
        inputs, scores = self.decode_prompts(batch), scored.scores.sum(-1).tolist()
        by_input = sorted(range(len(inputs)), key=lambda i: inputs[i])
        shuffled = [by_input[i] for i in torch.randperm(len(by_input), generator=torch.Generator().manual_seed(42))]
        picked = shuffled[:self.cfg.trainer.log_val_generations]
        return [[inputs[i], scored.texts[i], batch["ground_truth"][i], scores[i]] for i in picked]

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
        if self.loaded_checkpoint is not None and self.loaded_checkpoint.resolve() != folder.resolve():
            # del_local_ckpt_after_load: only now, so that the run never lacks a checkpoint to resume from
            shutil.rmtree(self.loaded_checkpoint, ignore_errors=True)
            print(f"deleted {self.loaded_checkpoint} (trainer.del_local_ckpt_after_load; {folder} replaces it)",
                  flush=True)
            self.loaded_checkpoint = None
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
        if t.del_local_ckpt_after_load:
            self.loaded_checkpoint = folder


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
    tokenizer = load_tokenizer(c.data.tokenizer or model.path, custom_chat_template=model.custom_chat_template,
                               trust_remote_code=c.data.trust_remote_code if c.data.tokenizer else model.trust_remote_code,
                               key="data.tokenizer" if c.data.tokenizer else "actor_rollout_ref.model.path")
    dataset_kwargs = dict(max_prompt_length=c.data.max_prompt_length, prompt_key=c.data.prompt_key,
                          reward_fn_key=c.data.reward_fn_key, truncation=c.data.truncation,
                          filter_overlong_prompts=c.data.filter_overlong_prompts)
    train = RLDataset(c.data.train_files, tokenizer, **dataset_kwargs)
    val = RLDataset(c.data.val_files, tokenizer, **dataset_kwargs) if c.data.val_files else None
    resolved = resolve(c, len(train))
    actor_group, critic_group = make_worker_groups(resolved, device)
    reward_model = None
    if c.reward_model.enable:
        micro = resolved.derived.reward_model_micro_batch
        if c.reward_model.use_reward_loop:
            from rlcamp.rewards.loop import RewardLoop

            reward_model = RewardLoop(c, device, micro)
        else:  # verl's legacy path: scored in this process, inside the step
            from rlcamp.workers.reward_model import RewardModelWorker

            reward_model = RewardModelWorker(c, device, micro)
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
                  startup_timeout_s=c.trainer.ray_wait_register_center_timeout, nnodes=c.trainer.nnodes,
                  cpus_per_worker=cpus, runtime_env=nsight_runtime_env(c.global_profiler))
    kwargs = {"config": c, "derived": derived, "device": device}
    actor = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", derived.n_devices, kwargs,
                           name="actor_rollout_ref", **common)
    critic = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", derived.n_devices, kwargs, name="critic",
                            **common) if derived.uses_critic else None
    return actor, critic


def fit_from_config(resolved: ResolvedConfig, run_dir: Path) -> int:
    trainer = build_trainer(resolved, run_dir)
    try:
        trainer.fit()
    finally:
        write_ray_timeline(resolved.config.ray_init.timeline_json_file)
        trainer.shutdown()
    return 0


def write_ray_timeline(path: str | None) -> None:
    """ray_init.timeline_json_file: Ray's task timeline (chrome://tracing / Perfetto) of the run so far."""
    if not path:
        return
    import ray

    if ray.is_initialized():
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        ray.timeline(filename=str(target))
        print(f"ray timeline: {target}", flush=True)
