"""Cross-checks and derived values, computed once, in one place.

Batch sizes are counted in *prompts* where verl counts prompts (train_batch_size,
ppo_mini_batch_size) and in *responses* where verl counts responses (micro batches per device).
Every check explains itself in those units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlcamp.algos import registry
from rlcamp.config.loader import ConfigError, LoadedConfig, get_key, with_key
from rlcamp.config.schema import RLConfig
from rlcamp.config.support import no_effect_warnings, unsupported_problems

CHECKPOINT_CONTENTS = ("model", "optimizer", "extra", "hf_model")


@dataclass(frozen=True)
class BatchPlan:
    """How one role splits a step's batch: mini batches (optimizer steps) and micro batches."""

    mini_batch_prompts: int  # prompts per optimizer step
    mini_batch_responses_per_device: int  # responses per optimizer step on one data-parallel rank
    micro_batch_per_device: int  # responses per forward/backward
    grad_accum_steps: int  # micro batches per optimizer step
    mini_batches_per_epoch: int
    optimizer_steps_per_train_step: int  # ppo_epochs x mini batches


@dataclass(frozen=True)
class Derived:
    n_devices: int
    dp_size: int  # data-parallel ranks of the actor (devices / Ulysses degree)
    responses_per_step: int  # train_batch_size x rollout.n
    uses_critic: bool
    uses_ref: bool
    actor: BatchPlan
    critic: BatchPlan | None
    rollout_log_prob_micro_batch_per_device: int
    ref_log_prob_micro_batch_per_device: int | None
    critic_forward_micro_batch_per_device: int | None  # values pass; None with a token budget
    reward_model_micro_batch: int | None  # sequences per reward-model forward (it runs in one process)
    n_train_prompts: int | None
    steps_per_epoch: int | None
    total_training_steps: int | None
    actor_lr_warmup_steps: int | None
    critic_lr_warmup_steps: int | None


@dataclass(frozen=True)
class ResolvedConfig:
    config: RLConfig
    derived: Derived
    warnings: list[str] = field(default_factory=list)
    # what stops this valid config on this machine (rlcamp.config.blockers): warnings of a dry run,
    # the reasons a run stops before any model loads
    blockers: list[str] = field(default_factory=list)


def uses_critic(cfg: RLConfig) -> bool:
    """The estimator's declaration says (rlcamp.algos.registry): GAE reads values; the others have no critic."""
    return registry.uses_critic(cfg.algorithm.adv_estimator)


def _micro_batch(problems: list[str], prefix: str, global_key: str, per_gpu_key: str, global_value: int | None,
                 per_gpu_value: int | None, dp: int, dynamic: bool, fallback: int | None = None) -> int | None:
    """Per-device micro batch from the verl pair (deprecated global, per-device)."""
    if global_value is not None and per_gpu_value is not None:
        problems.append(f"{prefix}.{global_key}={global_value} and {prefix}.{per_gpu_key}={per_gpu_value} "
                        f"are both set; remove the deprecated {prefix}.{global_key}")
        return None
    if per_gpu_value is not None:
        value = per_gpu_value
    elif global_value is not None:
        if global_value % dp:
            problems.append(f"{prefix}.{global_key}={global_value} does not split over {dp} data-parallel ranks; "
                            f"set {prefix}.{per_gpu_key} instead")
            return None
        value = global_value // dp
    elif fallback is not None:
        value = fallback
    elif dynamic:
        return None
    else:
        problems.append(f"{prefix}.{per_gpu_key} is not set: say how many responses one device processes per "
                        f"forward pass (e.g. {prefix}.{per_gpu_key}=4)")
        return None
    if value <= 0:
        problems.append(f"{prefix}.{per_gpu_key}={value} must be positive")
        return None
    return value


def _plan(problems: list[str], prefix: str, cfg: RLConfig, mini_prompts: int, micro_global: int | None,
          micro_per_gpu: int | None, epochs: int, dp: int, dynamic: bool) -> BatchPlan | None:
    train_bs, n = cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n
    ok = True
    if mini_prompts <= 0:
        problems.append(f"{prefix}.ppo_mini_batch_size={mini_prompts} must be positive")
        return None
    if mini_prompts > train_bs:
        problems.append(f"{prefix}.ppo_mini_batch_size={mini_prompts} (prompts) is larger than "
                        f"data.train_batch_size={train_bs}; it must be at most the step's batch")
        ok = False
    elif train_bs % mini_prompts:
        problems.append(f"data.train_batch_size={train_bs} is not divisible by {prefix}.ppo_mini_batch_size="
                        f"{mini_prompts} (prompts); each mini batch must hold whole prompt groups")
        ok = False
    mini_responses = mini_prompts * n
    if mini_responses % dp:
        problems.append(f"a {prefix} mini batch of {mini_responses} responses ({prefix}.ppo_mini_batch_size="
                        f"{mini_prompts} prompts x rollout.n={n}) does not split evenly over {dp} data-parallel ranks")
        ok = False
    micro = _micro_batch(problems, prefix, "ppo_micro_batch_size", "ppo_micro_batch_size_per_gpu",
                         micro_global, micro_per_gpu, dp, dynamic)
    if not ok:
        return None
    per_device = mini_responses // dp
    if micro is None:  # dynamic batch size: micro batches are filled by tokens
        micro, accum = per_device, 0
    elif per_device % micro:
        problems.append(f"{prefix}: {per_device} responses per device per mini batch ({mini_prompts} prompts x "
                        f"rollout.n={n} / {dp} ranks) is not divisible by {prefix}.ppo_micro_batch_size_per_gpu={micro}")
        return None
    else:
        accum = per_device // micro
    if epochs <= 0:
        problems.append(f"{prefix}.ppo_epochs={epochs} must be at least 1")
        return None
    mini_batches = train_bs // mini_prompts
    return BatchPlan(mini_prompts, per_device, micro, accum, mini_batches, epochs * mini_batches)


def checkpoint_holds(part: str, saved) -> bool:
    """Whether a checkpoint of ``saved`` parts can give ``part`` back: weights come back from either
    the sharded state ('model') or the transformers folder ('hf_model')."""
    return bool(({part} | ({"hf_model"} if part == "model" else set())) & set(saved))


def _ulysses_degree(problems: list[str], n_devices: int, value: int, role: str) -> int:
    """The Ulysses degree of ``role``, checked against the devices (1 when it does not divide them)."""
    sp = max(value, 1)
    if n_devices % sp:
        problems.append(f"{n_devices} devices (trainer.nnodes x trainer.n_gpus_per_node) are not divisible by "
                        f"{role}.ulysses_sequence_parallel_size={sp}")
        return 1
    return sp


def _megatron_degree(problems: list[str], n_devices: int, megatron, role: str) -> int:
    """The model-parallel degree of a ``strategy=megatron`` role: tensor x pipeline x context parallel sizes
    (what the engine cannot split by yet is a blocker: ``config.blockers``)."""
    tp, pp = max(megatron.tensor_model_parallel_size, 1), max(megatron.pipeline_model_parallel_size, 1)
    cp = max(megatron.context_parallel_size, 1)
    if cp > 1 and pp > 1:
        problems.append(f"{role}.megatron.context_parallel_size={cp} with pipeline_model_parallel_size={pp}: rlcamp "
                        "splits the sequence over context-parallel ranks with one pipeline stage so far; set one "
                        "of them to 1")
    vpp = megatron.virtual_pipeline_model_parallel_size
    if vpp is not None and (vpp < 1 or (vpp > 1 and pp == 1)):
        problems.append(f"{role}.megatron.virtual_pipeline_model_parallel_size={vpp}: interleaved stages need "
                        "pipeline_model_parallel_size > 1 and a size >= 1 (null: one stage per rank)")
    cut = {k: megatron.override_transformer_config.get(k) for k in ("num_layers_in_first_pipeline_stage",
                                                                     "num_layers_in_last_pipeline_stage")}
    for key, value in cut.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"{role}.megatron.override_transformer_config.{key}={value!r} must be a positive "
                            "number of layers (or null)")
    if megatron.use_dist_checkpointing and not megatron.dist_checkpointing_path:
        problems.append(f"{role}.megatron.use_dist_checkpointing=True needs {role}.megatron.dist_checkpointing_path: "
                        "the folder where rlcamp keeps the sharded initial weights (written from model.path on "
                        "first use)")
    if n_devices % (tp * pp * cp):
        problems.append(f"{n_devices} devices (trainer.nnodes x trainer.n_gpus_per_node) are not divisible by "
                        f"{role}.megatron.tensor_model_parallel_size={tp} x pipeline_model_parallel_size={pp} x "
                        f"context_parallel_size={cp}")
        return 1
    # Megatron folds the expert layers' own mesh into each pipeline stage's ranks: expert tensor x expert
    # parallel must divide them (expert_tensor_parallel_size null: the tensor-parallel size)
    ep, etp = max(megatron.expert_model_parallel_size, 1), megatron.expert_tensor_parallel_size or tp
    if (n_devices // pp) % (ep * etp):
        problems.append(f"{role}.megatron.expert_model_parallel_size={ep} x expert_tensor_parallel_size={etp} does "
                        f"not divide the {n_devices // pp} ranks of a pipeline stage (devices / "
                        "pipeline_model_parallel_size) that the experts are split over")
    return tp * pp * cp


def model_parallel_degree(problems: list[str], n_devices: int, role_cfg, role: str) -> int:
    """How many devices hold one copy of ``role``'s model: the Ulysses degree (fsdp) or the Megatron
    model-parallel degree; devices / that = the data-parallel ranks."""
    if role_cfg.strategy == "megatron":
        if role_cfg.ulysses_sequence_parallel_size > 1:
            problems.append(f"{role}.ulysses_sequence_parallel_size={role_cfg.ulysses_sequence_parallel_size} is "
                            f"strategy=fsdp's sequence parallelism; with strategy=megatron set it to 1 (the Megatron "
                            "engine's context_parallel_size is its counterpart)")
        return _megatron_degree(problems, n_devices, role_cfg.megatron, role)
    return _ulysses_degree(problems, n_devices, role_cfg.ulysses_sequence_parallel_size, role)


def _check_ranges(cfg: RLConfig, problems: list[str], warnings: list[str]) -> None:
    data, arr, algo, trainer = cfg.data, cfg.actor_rollout_ref, cfg.algorithm, cfg.trainer
    actor, rollout = arr.actor, arr.rollout
    positive = {
        "data.train_batch_size": data.train_batch_size, "data.max_prompt_length": data.max_prompt_length,
        "data.max_response_length": data.max_response_length, "actor_rollout_ref.rollout.n": rollout.n,
        "trainer.nnodes": trainer.nnodes, "trainer.n_gpus_per_node": trainer.n_gpus_per_node,
        "trainer.total_epochs": trainer.total_epochs, "actor_rollout_ref.rollout.val_kwargs.n": rollout.val_kwargs.n,
    }
    if data.val_batch_size is not None:
        positive["data.val_batch_size"] = data.val_batch_size
    if trainer.total_training_steps is not None:
        positive["trainer.total_training_steps"] = trainer.total_training_steps
    if trainer.preemption_grace_s is not None:
        positive["trainer.preemption_grace_s"] = trainer.preemption_grace_s
    problems += [f"{k}={v} must be positive" for k, v in positive.items() if v <= 0]
    for key in ("trainer.save_freq", "trainer.test_freq"):
        value = getattr(trainer, key.split(".")[1])
        if value == 0 or value < -1:
            problems.append(f"{key}={value} must be -1 (off) or a positive number of steps")
    if trainer.max_consecutive_nonfinite_steps < 0:
        problems.append(f"trainer.max_consecutive_nonfinite_steps={trainer.max_consecutive_nonfinite_steps} must be "
                        ">= 0 (0 = never stop)")
    if trainer.max_restarts < 0:
        problems.append(f"trainer.max_restarts={trainer.max_restarts} must be >= 0")
    if trainer.critic_warmup < 0:
        problems.append(f"trainer.critic_warmup={trainer.critic_warmup} must be >= 0")
    marked = cfg.custom_reward_function.reward_kwargs.get("marked_score")
    if marked is not None and not cfg.custom_reward_function.path and not (
            isinstance(marked, (int, float)) and 0.0 <= marked < 1.0):
        problems.append(f"custom_reward_function.reward_kwargs.marked_score={marked!r} must be a number in [0, 1): "
                        "the built-in rlcamp/arith scorer's credit for a right number that does not read strictly "
                        "stays below a right, formatted answer's 1")
    for name, opt in (("actor_rollout_ref.actor.optim", actor.optim), ("critic.optim", cfg.critic.optim)):
        if not 0.0 <= opt.lr_warmup_steps_ratio <= 1.0:
            problems.append(f"{name}.lr_warmup_steps_ratio={opt.lr_warmup_steps_ratio} must be in [0, 1]")
        if opt.lr < 0:
            problems.append(f"{name}.lr={opt.lr} must be >= 0")
        if len(opt.betas) != 2 or not all(0.0 <= b < 1.0 for b in opt.betas):
            problems.append(f"{name}.betas={opt.betas} must be two numbers in [0, 1)")
        problems += schedule_problems(name, opt)
    for name, ckpt in (("actor_rollout_ref.actor.checkpoint", actor.checkpoint),
                       ("critic.checkpoint", cfg.critic.checkpoint)):
        for key, allowed in (("save_contents", CHECKPOINT_CONTENTS), ("load_contents", CHECKPOINT_CONTENTS[:3])):
            unknown = sorted(set(getattr(ckpt, key)) - set(allowed))
            if unknown:
                problems.append(f"{name}.{key} has unknown part(s) {unknown}; known: {list(allowed)}")
        for part in ckpt.load_contents:
            if not checkpoint_holds(part, ckpt.save_contents):
                problems.append(f"{name}.load_contents asks for '{part}', which {name}.save_contents does not save; "
                                f"add it there or drop it here")
    if actor.tis_imp_ratio_cap != -1 and actor.tis_imp_ratio_cap <= 0:
        problems.append(f"actor_rollout_ref.actor.tis_imp_ratio_cap={actor.tis_imp_ratio_cap} must be -1 (off) or "
                        "a positive cap (2 is usual)")
    if algo.rollout_correction.bypass_mode:
        if not rollout.calculate_log_probs:
            problems.append("algorithm.rollout_correction.bypass_mode=True trains on the rollout engine's log-probs: "
                            "set actor_rollout_ref.rollout.calculate_log_probs=True as well")
        if actor.tis_imp_ratio_cap > 0:
            problems.append(f"actor_rollout_ref.actor.tis_imp_ratio_cap={actor.tis_imp_ratio_cap} weighs old against "
                            "rollout log-probs, which algorithm.rollout_correction.bypass_mode=True makes the same: "
                            "set one of them off")
    if not 0.0 < actor.clip_ratio_low < 1.0:
        problems.append(f"actor_rollout_ref.actor.clip_ratio_low={actor.clip_ratio_low} must be in (0, 1): "
                        "the ratio is clipped at 1 - clip_ratio_low")
    if actor.clip_ratio_high <= 0:
        problems.append(f"actor_rollout_ref.actor.clip_ratio_high={actor.clip_ratio_high} must be positive")
    if actor.clip_ratio_c <= 1.0:
        problems.append(f"actor_rollout_ref.actor.clip_ratio_c={actor.clip_ratio_c} must be > 1 "
                        "(dual-clip bounds the loss at clip_ratio_c x |advantage|; Ye et al. 2020)")
    if cfg.critic.cliprange_value <= 0:
        problems.append(f"critic.cliprange_value={cfg.critic.cliprange_value} must be positive")
    if not 0.0 <= algo.gamma <= 1.0 or not 0.0 <= algo.lam <= 1.0:
        problems.append(f"algorithm.gamma={algo.gamma} and algorithm.lam={algo.lam} must both be in [0, 1]")
    for prefix, sampling in (("actor_rollout_ref.rollout", rollout), ("actor_rollout_ref.rollout.val_kwargs", rollout.val_kwargs)):
        if sampling.do_sample and sampling.temperature <= 0:
            problems.append(f"{prefix}.temperature={sampling.temperature} with do_sample=True: sampling needs a "
                            f"temperature > 0 (or set {prefix}.do_sample=False for greedy)")
        if not 0.0 < sampling.top_p <= 1.0:
            problems.append(f"{prefix}.top_p={sampling.top_p} must be in (0, 1]")
        if sampling.top_k == 0 or sampling.top_k < -1:
            problems.append(f"{prefix}.top_k={sampling.top_k} must be -1 (off) or positive")
    if not rollout.val_kwargs.do_sample and rollout.val_kwargs.n > 1:
        problems.append(f"actor_rollout_ref.rollout.val_kwargs.n={rollout.val_kwargs.n} with do_sample=False gives "
                        "identical greedy samples; set val_kwargs.do_sample=True or val_kwargs.n=1")
    if registry.needs_groups(algo.adv_estimator) and rollout.n < 2:
        problems.append(f"algorithm.adv_estimator={algo.adv_estimator} compares responses within a prompt group and "
                        f"needs actor_rollout_ref.rollout.n >= 2 (got {rollout.n})")
    if algo.kl_ctrl.type == "adaptive" and (algo.kl_ctrl.target_kl <= 0 or algo.kl_ctrl.horizon <= 0):
        problems.append("algorithm.kl_ctrl: the adaptive controller needs target_kl > 0 and horizon > 0")
    if algo.use_kl_in_reward and actor.use_kl_loss:
        warnings.append("both algorithm.use_kl_in_reward and actor_rollout_ref.actor.use_kl_loss are on: the KL is "
                        "penalised twice (in the reward and in the loss)")
    if algo.use_kl_in_reward and registry.KL_ESTIMATORS[algo.kl_penalty].needs_vocabulary:
        usable = [k for k, v in registry.KL_ESTIMATORS.items() if not v.needs_vocabulary]
        problems.append(f"algorithm.kl_penalty={algo.kl_penalty} needs the full vocabulary distributions, which the "
                        f"reward stage does not have; use one of {usable}")
    if trainer.resume_mode == "resume_path" and not trainer.resume_from_path:
        problems.append("trainer.resume_mode=resume_path needs trainer.resume_from_path=<checkpoint folder>")
    if trainer.resume_from_path and trainer.resume_mode != "resume_path":
        problems.append(f"trainer.resume_from_path is set but trainer.resume_mode={trainer.resume_mode}; "
                        "set trainer.resume_mode=resume_path to use it")
    profiler = cfg.global_profiler
    roles = {"actor_rollout_ref.actor": actor.profiler, "actor_rollout_ref.ref": arr.ref.profiler,
             "critic": cfg.critic.profiler, "reward_model": cfg.reward_model.profiler}
    enabled = [k for k, p in roles.items() if p.enable]
    if profiler.tool and not profiler.steps:
        warnings.append(f"global_profiler.tool={profiler.tool} records nothing: global_profiler.steps names no step")
    if profiler.tool and profiler.steps and not enabled:
        warnings.append(f"global_profiler.tool={profiler.tool} records nothing: no role has profiler.enable=True "
                        "(e.g. actor_rollout_ref.actor.profiler.enable=True)")
    if enabled and not profiler.tool:
        warnings.append(f"{', '.join(k + '.profiler.enable' for k in enabled)}=True records nothing without "
                        "global_profiler.tool (torch, torch_memory or nsys) and global_profiler.steps")
    if profiler.tool == "npu":
        from rlcamp.trainer.profiling import NPU_LEVELS, npu_settings

        for key, p in roles.items():
            level = npu_settings(p.tool_config, profiler.global_tool_config)["level"]
            if p.enable and level not in NPU_LEVELS:
                problems.append(f"{key}.profiler.tool_config.npu.level={level} is not one of {', '.join(NPU_LEVELS)}")
    for key, p in roles.items():
        if p.enable and p.tool != profiler.tool:
            problems.append(f"{key}.profiler.tool={p.tool} differs from global_profiler.tool={profiler.tool}: rlcamp "
                            "runs one profiler per process; leave the role's tool unset")
    from rlcamp.trainer.tracking import tracker_problems

    problems += tracker_problems(trainer.logger)
    if cfg.critic.rollout_n != rollout.n:
        problems.append(f"critic.rollout_n={cfg.critic.rollout_n} differs from actor_rollout_ref.rollout.n={rollout.n}: "
                        "the critic sees the responses the rollout samples; leave critic.rollout_n unset")
    if data.dataloader_num_workers < 0:
        problems.append(f"data.dataloader_num_workers={data.dataloader_num_workers} must be >= 0 (0: collate in the "
                        "trainer's process)")
    if data.max_prompt_length + data.max_response_length > (rollout.max_model_len or 10**12):
        problems.append(f"data.max_prompt_length + data.max_response_length = "
                        f"{data.max_prompt_length + data.max_response_length} exceeds rollout.max_model_len={rollout.max_model_len}")
    tp = rollout.tensor_model_parallel_size
    if tp < 1:
        problems.append(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} must be at least 1")
    elif trainer.n_gpus_per_node % tp:
        problems.append(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} must divide the "
                        f"{trainer.n_gpus_per_node} devices of a node (trainer.n_gpus_per_node; a rollout engine spans "
                        "devices of one node)")
    if rollout.response_length != data.max_response_length:
        warnings.append(f"actor_rollout_ref.rollout.response_length={rollout.response_length} differs from "
                        f"data.max_response_length={data.max_response_length}; the rollout's value is used")


# the dtypes the models compute in (and the weights they are held in) on the training device;
# rollout.dtype only for our own engine (vLLM and SGLang bring their own kernels)
COMPUTE_DTYPE_KEYS = ("actor_rollout_ref.model.dtype", "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype",
                      "actor_rollout_ref.ref.fsdp_config.model_dtype", "critic.model.dtype",
                      "critic.model.fsdp_config.mixed_precision.param_dtype", "actor_rollout_ref.rollout.dtype",
                      "actor_rollout_ref.actor.megatron.dtype", "critic.megatron.dtype")


def _reward_engine(problems: list[str], cfg: RLConfig, n_devices: int) -> None:
    """The reward model's own pool, and the reward loop's vLLM engine: its parallel sizes against the
    devices it gets."""
    rm = cfg.reward_model
    if rm.enable_resource_pool:
        pool = rm.nnodes * rm.n_gpus_per_node
        per = rm.rollout.tensor_model_parallel_size if rm.rollout.name == "vllm" else 1
        if not rm.use_reward_loop:
            problems.append("reward_model.enable_resource_pool=True serves the reward loop's engine on devices of its "
                            "own; with reward_model.use_reward_loop=False the model scores in the trainer's process: "
                            "set use_reward_loop=True, or enable_resource_pool=False")
        elif pool < 1:
            problems.append(f"reward_model.enable_resource_pool=True with reward_model.nnodes={rm.nnodes} x "
                            f"n_gpus_per_node={rm.n_gpus_per_node}: the pool has no devices (verl's default nnodes=0); "
                            "set reward_model.nnodes=1 and n_gpus_per_node to the devices it should get")
        elif pool % per:
            problems.append(f"reward_model.rollout.tensor_model_parallel_size={per} does not divide the reward model's "
                            f"{pool} pool devices (reward_model.nnodes x n_gpus_per_node) into engines")
    if not (rm.use_reward_loop and rm.rollout.name == "vllm"):
        return
    r = rm.rollout
    tp, dp, ep = r.tensor_model_parallel_size, r.data_parallel_size, r.expert_parallel_size
    if dp != 1:
        problems.append(f"reward_model.rollout.data_parallel_size={dp}: rlcamp serves the reward model with one vLLM "
                        "engine (reward_model.num_workers sets how many requests are in flight); set it to 1")
    if ep not in (1, tp * dp):
        problems.append(f"reward_model.rollout.expert_parallel_size={ep}: vLLM's expert parallelism spans the whole "
                        f"engine, tensor_model_parallel_size x data_parallel_size = {tp * dp} devices; set it to "
                        f"1 or {tp * dp}")
    if rm.enable_resource_pool:
        devices, where = rm.nnodes * rm.n_gpus_per_node, "reward_model.nnodes x reward_model.n_gpus_per_node"
    else:
        devices, where = n_devices, "the trainer's (trainer.nnodes x trainer.n_gpus_per_node)"
    if tp > devices:
        problems.append(f"reward_model.rollout.tensor_model_parallel_size={tp} is more than the {devices} device(s) "
                        f"the reward model has, {where}; lower it")


def _cpu_precision(cfg: RLConfig, user_keys: frozenset[str], warnings: list[str]) -> RLConfig:
    """On a CPU whose torch has no matrix kernels for bf16 / fp16 (no AVX-512 or AMX: the matmuls of
    a step run 4-500x slower than in fp32 there, ``benchmarks/RESULTS.md``), the low-precision
    *defaults* become fp32, and a low precision the user set is kept with a warning that says what
    it costs. Anywhere else: unchanged."""
    if cfg.trainer.device not in ("cpu", "auto"):
        return cfg
    from rlcamp.utils.device import (
        cpu_features,
        cpu_matmul_is_fast,
        resolve_device,
        to_dtype,
    )

    if cfg.trainer.device == "auto" and resolve_device("auto") != "cpu":
        return cfg
    defaults, kept = [], []
    for key in COMPUTE_DTYPE_KEYS:
        if key == "actor_rollout_ref.rollout.dtype" and cfg.actor_rollout_ref.rollout.name != "hf":
            continue
        value = get_key(cfg, key)
        if to_dtype(value) == to_dtype("fp32") or cpu_matmul_is_fast(to_dtype(value)):
            continue
        if key in user_keys:
            kept.append(f"{key}={value}")
        else:
            defaults.append(f"{key}={value}")
            cfg = with_key(cfg, key, "fp32")
    why = (f"torch has no bf16/fp16 matrix kernels for this CPU ({cpu_features()}; they need AVX-512 or AMX) "
           "and runs them several to hundreds of times slower than fp32")
    if defaults:
        warnings.append(f"{why}: the defaults {', '.join(defaults)} become fp32 here")
    if kept:
        warnings.append(f"{why}: {', '.join(kept)} kept as set; set fp32 instead unless you mean to test that precision")
    return cfg


def resolve(loaded: LoadedConfig | RLConfig, n_train_prompts: int | None = None) -> ResolvedConfig:
    """Validate ``loaded`` and compute the derived values; raises ConfigError listing every problem."""
    cfg = loaded.config if isinstance(loaded, LoadedConfig) else loaded
    problems: list[str] = []
    warnings: list[str] = []
    user_keys = loaded.user_keys if isinstance(loaded, LoadedConfig) else frozenset()
    cfg = _cpu_precision(cfg, user_keys, warnings)
    _check_ranges(cfg, problems, warnings)
    problems += unsupported_problems(cfg)
    warnings += no_effect_warnings(cfg, user_keys)

    arr, algo, trainer = cfg.actor_rollout_ref, cfg.algorithm, cfg.trainer
    actor, rollout, critic, ref = arr.actor, arr.rollout, cfg.critic, arr.ref
    n_devices = max(trainer.nnodes * trainer.n_gpus_per_node, 1)
    sp = model_parallel_degree(problems, n_devices, actor, "actor_rollout_ref.actor")
    dp = n_devices // sp
    if (ref.strategy or actor.strategy) != actor.strategy:
        problems.append(f"actor_rollout_ref.ref.strategy={ref.strategy} differs from actor.strategy={actor.strategy}: "
                        "the reference runs in the actor's workers, on its engine's mesh; set them alike")
    elif actor.strategy == "megatron" and (actor.use_kl_loss or algo.use_kl_in_reward):
        if ref.megatron.use_dist_checkpointing and not ref.megatron.dist_checkpointing_path:
            problems.append("actor_rollout_ref.ref.megatron.use_dist_checkpointing=True needs "
                            "actor_rollout_ref.ref.megatron.dist_checkpointing_path")
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            if getattr(ref.megatron, key) != getattr(actor.megatron, key):
                problems.append(f"actor_rollout_ref.ref.megatron.{key}={getattr(ref.megatron, key)} differs from "
                                f"the actor's {getattr(actor.megatron, key)}: the reference is split on the actor's mesh")
    responses = cfg.data.train_batch_size * rollout.n
    if responses % dp:
        problems.append(f"a step's {responses} responses (data.train_batch_size={cfg.data.train_batch_size} x "
                        f"rollout.n={rollout.n}) do not split evenly over {dp} data-parallel ranks")

    needs_critic = uses_critic(cfg)
    uses_ref = actor.use_kl_loss or algo.use_kl_in_reward
    actor_plan = _plan(problems, "actor_rollout_ref.actor", cfg, actor.ppo_mini_batch_size, actor.ppo_micro_batch_size,
                       actor.ppo_micro_batch_size_per_gpu, actor.ppo_epochs, dp, actor.use_dynamic_bsz)
    critic_plan = None
    if actor.strategy != "megatron" and ref.ulysses_sequence_parallel_size not in (None, sp):
        problems.append(f"actor_rollout_ref.ref.ulysses_sequence_parallel_size={ref.ulysses_sequence_parallel_size} "
                        f"differs from actor.ulysses_sequence_parallel_size={sp}: the reference runs in the actor's "
                        "workers and shares its groups; leave it unset")
    critic_forward = None
    if needs_critic:
        critic_dp = n_devices // model_parallel_degree(problems, n_devices, critic, "critic")
        critic_plan = _plan(problems, "critic", cfg, critic.ppo_mini_batch_size, critic.ppo_micro_batch_size,
                            critic.ppo_micro_batch_size_per_gpu, critic.ppo_epochs, critic_dp, critic.use_dynamic_bsz)
        # the per-device key follows critic.ppo_micro_batch_size_per_gpu; the deprecated global one wins over
        # that inherited value, not over one the user set
        per_gpu = critic.forward_micro_batch_size_per_gpu
        if critic.forward_micro_batch_size is not None and "critic.forward_micro_batch_size_per_gpu" not in user_keys:
            per_gpu = None
        critic_forward = _micro_batch(problems, "critic", "forward_micro_batch_size", "forward_micro_batch_size_per_gpu",
                                      critic.forward_micro_batch_size, per_gpu, critic_dp,
                                      critic.use_dynamic_bsz or critic_plan is None,
                                      critic_plan.micro_batch_per_device if critic_plan else None)
    rm_micro = None
    if cfg.reward_model.enable:
        rm = cfg.reward_model
        # verl divides the deprecated global value by the devices; rlcamp's reward model scores in one process
        rm_micro = _micro_batch(problems, "reward_model", "micro_batch_size", "micro_batch_size_per_gpu",
                                rm.micro_batch_size, rm.micro_batch_size_per_gpu, n_devices, bool(rm.use_dynamic_bsz),
                                fallback=8)
        _reward_engine(problems, cfg, n_devices)
    fallback = actor_plan.micro_batch_per_device if actor_plan else None
    # when the actor's plan already failed, an unset log-prob micro batch (which falls back on it)
    # is a consequence, not a second problem: report nothing more for it
    consequence = actor_plan is None
    rollout_micro = _micro_batch(problems, "actor_rollout_ref.rollout", "log_prob_micro_batch_size",
                                 "log_prob_micro_batch_size_per_gpu", rollout.log_prob_micro_batch_size,
                                 rollout.log_prob_micro_batch_size_per_gpu, dp,
                                 rollout.log_prob_use_dynamic_bsz or consequence, fallback)
    ref_micro = None
    if uses_ref:
        ref_micro = _micro_batch(problems, "actor_rollout_ref.ref", "log_prob_micro_batch_size",
                                 "log_prob_micro_batch_size_per_gpu", ref.log_prob_micro_batch_size,
                                 ref.log_prob_micro_batch_size_per_gpu, dp, ref.log_prob_use_dynamic_bsz or consequence,
                                 rollout_micro or fallback)

    steps_per_epoch = total = None
    if n_train_prompts is not None:
        steps_per_epoch = n_train_prompts // cfg.data.train_batch_size
        if steps_per_epoch == 0:
            problems.append(f"data.train_files hold {n_train_prompts} prompts, fewer than one batch "
                            f"(data.train_batch_size={cfg.data.train_batch_size})")
        total = steps_per_epoch * trainer.total_epochs
    if trainer.total_training_steps is not None:
        total = trainer.total_training_steps

    if problems:
        raise ConfigError(problems)

    def warmup(opt) -> int | None:
        if opt.lr_warmup_steps >= 0:
            return opt.lr_warmup_steps
        return None if total is None else int(opt.lr_warmup_steps_ratio * total)

    derived = Derived(
        n_devices=n_devices, dp_size=dp, responses_per_step=responses, uses_critic=needs_critic, uses_ref=uses_ref,
        actor=actor_plan, critic=critic_plan, rollout_log_prob_micro_batch_per_device=rollout_micro,
        ref_log_prob_micro_batch_per_device=ref_micro, critic_forward_micro_batch_per_device=critic_forward,
        reward_model_micro_batch=rm_micro, n_train_prompts=n_train_prompts,
        steps_per_epoch=steps_per_epoch, total_training_steps=total,
        actor_lr_warmup_steps=warmup(actor.optim), critic_lr_warmup_steps=warmup(critic.optim) if needs_critic else None,
    )
    from rlcamp.config.blockers import machine_notes, run_blockers

    return ResolvedConfig(cfg, derived, warnings + machine_notes(cfg), run_blockers(cfg))


def schedule_problems(name: str, opt) -> list[str]:
    """The LR schedule's keys agree (rlcamp.engines.schedule): one family at a time, WSD with its steps."""
    problems = []
    if opt.warmup_style is not None and opt.lr_scheduler_type != "constant" and opt.warmup_style != opt.lr_scheduler_type:
        problems.append(f"{name}.warmup_style={opt.warmup_style} and {name}.lr_scheduler_type={opt.lr_scheduler_type} "
                        "disagree: warmup_style is verl's old name of lr_scheduler_type; set lr_scheduler_type only")
    fsdp_style = opt.warmup_style or opt.lr_scheduler_type
    if opt.lr_decay_style == "constant":
        for key, value, default in (("lr_wsd_decay_steps", opt.lr_wsd_decay_steps, None),
                                    ("lr_decay_steps", opt.lr_decay_steps, None), ("min_lr", opt.min_lr, 0.0)):
            if value != default:
                problems.append(f"{name}.{key}={value} is read only with {name}.lr_decay_style set (it is constant): "
                                f"set lr_decay_style=linear, cosine, inverse-square-root or WSD, or remove {key}")
        return problems
    if fsdp_style != "constant":
        problems.append(f"{name}.lr_decay_style={opt.lr_decay_style} and {name}.lr_scheduler_type={fsdp_style} are two "
                        "schedules (verl's Megatron and FSDP keys): set one of them")
    if opt.min_lr_ratio:
        problems.append(f"{name}.min_lr_ratio={opt.min_lr_ratio} is the floor of lr_scheduler_type=cosine; with "
                        f"lr_decay_style the floor is {name}.min_lr (an absolute learning rate)")
    if not 0.0 <= opt.min_lr <= opt.lr:
        problems.append(f"{name}.min_lr={opt.min_lr} must be in [0, lr={opt.lr}]")
    if opt.lr_decay_steps is not None and opt.lr_decay_steps < 1:
        problems.append(f"{name}.lr_decay_steps={opt.lr_decay_steps} must be >= 1 (or null: the run's training steps)")
    if opt.lr_decay_style == "WSD":
        if opt.lr_wsd_decay_steps is None or opt.lr_wsd_decay_steps < 1:
            problems.append(f"{name}.lr_decay_style=WSD needs {name}.lr_wsd_decay_steps >= 1: the last steps, over "
                            "which lr decays to min_lr")
        elif opt.lr_decay_steps is not None and opt.lr_wsd_decay_steps > opt.lr_decay_steps:
            problems.append(f"{name}.lr_wsd_decay_steps={opt.lr_wsd_decay_steps} is longer than "
                            f"lr_decay_steps={opt.lr_decay_steps}")
    elif opt.lr_wsd_decay_steps is not None:
        problems.append(f"{name}.lr_wsd_decay_steps={opt.lr_wsd_decay_steps} is read only with lr_decay_style=WSD "
                        f"(it is {opt.lr_decay_style})")
    return problems
