"""Building the system from a resolved config: tokenizer, datasets, worker groups, the scorer, the trainer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rlcamp.config import ResolvedConfig
from rlcamp.controller.worker_group import InProcessWorkerGroup
from rlcamp.data import RLDataset
from rlcamp.rewards import RewardServices, get_reward_function
from rlcamp.rewards.manager import NaiveRewardManager, PrimeRewardManager
from rlcamp.rewards.registry import rules_where_known
from rlcamp.trainer.ppo import PPOTrainer
from rlcamp.trainer.faults import StopSignals
from rlcamp.trainer.profiling import nsight_runtime_env
from rlcamp.trainer.scoring import Scorer
from rlcamp.utils.device import resolve_device, tune_cpu


def build_trainer(resolved: ResolvedConfig, run_dir: Path, stop: StopSignals | None = None) -> PPOTrainer:
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
    try:
        return _trainer(resolved, run_dir, device, tokenizer, train, val, actor_group, critic_group, stop)
    except BaseException:
        for group in (actor_group, critic_group):
            if group is not None:
                group.shutdown()
        raise


def _trainer(resolved, run_dir, device, tokenizer, train, val, actor_group, critic_group, stop) -> PPOTrainer:
    c = resolved.config
    reward_model = None
    if c.reward_model.enable:
        micro = resolved.derived.reward_model_micro_batch
        if c.reward_model.use_reward_loop:
            from rlcamp.rewards.loop import RewardLoop

            reward_model = RewardLoop(c, device, micro)
        else:  # verl's legacy path: scored in this process, inside the step
            from rlcamp.workers.reward_model import RewardModelWorker

            reward_model = RewardModelWorker(c, device, micro)
    return PPOTrainer(resolved, run_dir, actor_group, critic_group, tokenizer, train, val,
                      make_scorer(c, tokenizer, reward_model), stop)


def make_scorer(c, tokenizer, reward_model=None) -> Scorer:
    """The reward function (a user's, or the rule for each data source), its reward manager, and the reward model."""
    sandbox = c.reward_model.sandbox_fusion
    services = RewardServices(sandbox.url, sandbox.max_concurrent, sandbox.memory_limit_mb)
    reward_fn = get_reward_function(c.custom_reward_function.path, c.custom_reward_function.name,
                                    c.custom_reward_function.reward_kwargs,
                                    getattr(reward_model, "function_kwargs", None), services)
    if reward_model is not None and not c.custom_reward_function.path:
        reward_fn = rules_where_known(reward_fn)
    if c.reward_model.reward_manager == "prime":
        manager = PrimeRewardManager(tokenizer, reward_fn, sandbox.max_concurrent)
    else:
        manager = NaiveRewardManager(tokenizer, reward_fn)
    return Scorer(manager, reward_model)


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
    try:
        critic = RayWorkerGroup("rlcamp.workers.critic:CriticWorker", derived.n_devices, kwargs, name="critic",
                                **common) if derived.uses_critic else None
    except BaseException:
        actor.shutdown(worker_timeout_s=5.0)
        raise
    return actor, critic


def fit_from_config(resolved: ResolvedConfig, run_dir: Path) -> int:
    """Build and fit. A worker that dies (or a stage past trainer.stage_timeout_s) ends the attempt; with
    trainer.max_restarts=K the workers are built again, up to K times, and the run resumes from its
    last complete checkpoint (the driver's state comes back with it, so the steps after it are redone
    exactly); without restarts left the error ends the run."""
    from rlcamp.controller.ray_group import WorkerError
    from rlcamp.rollout.base import RolloutEngineDied
    from rlcamp.trainer import checkpoint as ckpt

    limit = resolved.config.trainer.max_restarts
    # from before the models load: a signal while they load stops the run before its first step
    with StopSignals(resolved.config.trainer.preemption_grace_s) as stop:
        for attempt in range(limit + 1):
            trainer = None
            try:
                trainer = build_trainer(resolved, run_dir, stop)
                trainer.fit()
                return 0
            except (WorkerError, RolloutEngineDied) as exc:
                if not exc.restartable or attempt == limit or stop.requested:
                    raise
                last = ckpt.latest(run_dir)
                print(f"rlcamp: {exc}\nrlcamp: restarting the workers ({attempt + 1} of trainer.max_restarts="
                      f"{limit}), resuming from {last or 'the start (no checkpoint yet)'}", flush=True)
                if last is not None:  # this run's own checkpoint, whatever resume_mode first said
                    t = replace(resolved.config.trainer, resume_mode="auto")
                    resolved = replace(resolved, config=replace(resolved.config, trainer=t))
            finally:
                write_ray_timeline(resolved.config.ray_init.timeline_json_file)
                if trainer is not None:
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
