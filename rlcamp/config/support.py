"""verl keys that rlcamp does not run (refused), and keys it accepts that have no effect (said).

Every key of the schema is read by the code, refused here (``UNSUPPORTED``: the config fails with
the reason and the fix), or listed here as without effect (``NO_EFFECT``: accepted, and a warning
with the reason is printed when the user sets it). ``tests/config/test_every_key.py`` walks the
schema and fails on a key in none of the three. When an issue implements an option, its entry goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rlcamp.config.schema import RLConfig

_NOT_PLANNED = "is not implemented in rlcamp and no issue plans it yet"


@dataclass(frozen=True)
class Unsupported:
    key: str
    applies: Callable[[Any], bool]  # value -> is this setting unsupported?
    why: str
    fix: str


UNSUPPORTED: list[Unsupported] = [
    Unsupported("actor_rollout_ref.rollout.multi_turn.enable", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("actor_rollout_ref.hybrid_engine", lambda v: not v,
                "colocates actor, rollout and reference on every device; a separate rollout fleet is not implemented",
                "set it to True"),
    Unsupported("reward_model.ulysses_sequence_parallel_size", lambda v: v > 1,
                "is not implemented: the reward model scores on the driver, in one process", "set it to 1"),
    Unsupported("reward_model.reward_manager", lambda v: v in ("batch", "dapo"), _NOT_PLANNED, "use reward_manager=naive"),
    Unsupported("reward_model.reward_loop_module_path", lambda v: v is not None,
                "(a reward-loop class of your own) is not implemented: rlcamp's reward loop takes a custom_reward_function",
                "put the scoring in custom_reward_function.path instead"),
    Unsupported("reward_model.reward_loop_source", lambda v: v != "register",
                "(a reward-loop class of your own) is not implemented", "leave it at register"),
    Unsupported("actor_rollout_ref.model.lora_rank", lambda v: v > 0, _NOT_PLANNED, "set it to 0 (full fine-tuning)"),
    Unsupported("critic.model.lora_rank", lambda v: v > 0, _NOT_PLANNED, "set it to 0 (full fine-tuning)"),
    Unsupported("actor_rollout_ref.model.use_liger", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("actor_rollout_ref.model.enable_activation_offload", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("critic.model.enable_activation_offload", bool, _NOT_PLANNED, "set it to False"),
    Unsupported("data.custom_cls.path", lambda v: v is not None, _NOT_PLANNED, "convert your data to the verl schema"),
    Unsupported("trainer.default_hdfs_dir", lambda v: v is not None, _NOT_PLANNED, "copy checkpoints yourself"),
    Unsupported("actor_rollout_ref.actor.fsdp_config.fsdp_size", lambda v: v not in (-1,),
                "(hybrid sharding over groups of ranks) is not implemented: rlcamp shards over all data-parallel "
                "ranks", "leave it at -1"),
    Unsupported("critic.model.fsdp_config.fsdp_size", lambda v: v not in (-1,),
                "(hybrid sharding over groups of ranks) is not implemented: rlcamp shards over all data-parallel "
                "ranks", "leave it at -1"),
]


_RM_HF_ENGINE = ("reward_model.rollout.name=hf serves the reward model with rlcamp's own engine (one device per "
                 "engine, no KV cache to size); reward_model.rollout.name=vllm reads it")


def _rm_hf_engine(cfg) -> bool:
    return cfg.reward_model.rollout.name == "hf" or not cfg.reward_model.use_reward_loop


def always(cfg) -> bool:
    return True


@dataclass(frozen=True)
class NoEffect:
    key: str
    why: str  # completes "<key>=<value> has no effect: ..."
    applies: Callable[[Any], bool] = always  # config -> is the key without effect in this run?


_UNSHARDED_REF = "the reference model is a full, frozen copy on every rank (no gradients, nothing to shard)"
_UNSHARDED_RM = "the reward model runs unsharded, in one process"
_ENGINE_ONLY = "rlcamp's own engine (rollout.name=hf) has no such setting; vLLM and SGLang read it"
_CHUNKED = ("with model.use_fused_kernels=True (rlcamp's default) log-probs and entropy come from the hidden states "
            "a chunk of rows at a time, recomputing what the backward needs (rlcamp.models.head); with False, from the "
            "full logits in one pass")
_NO_LORA = "it is only read with lora_rank > 0, and LoRA is not implemented yet"
_MEGATRON_ONLY = "it is only read with the role's strategy=megatron"
_MEGATRON_KEYS = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
                  "context_parallel_size", "expert_model_parallel_size", "expert_tensor_parallel_size",
                  "sequence_parallel", "use_distributed_optimizer", "param_offload", "grad_offload",
                  "optimizer_offload", "seed", "use_dist_checkpointing", "dist_checkpointing_path",
                  "dist_checkpointing_prefix", "dtype", "use_mbridge", "vanilla_mbridge", "use_remove_padding",
                  "forward_only", "override_transformer_config", "override_ddp_config", "override_mcore_model_config")
# with strategy=megatron: keys rlcamp's engine (rlcamp.engines.megatron) reads no value from, and why
_MEGATRON_WITHOUT_EFFECT = {
    "seed": "trainer.seed seeds every worker (and dropout) with rlcamp's engines",
    "dist_checkpointing_prefix": "the checkpoint at dist_checkpointing_path is rlcamp's own, by HF names, with no "
                                 "key prefix",
    "use_mbridge": "the engine trains the HF module itself: there is no HF <-> megatron-core conversion",
    "vanilla_mbridge": "the engine trains the HF module itself: there is no HF <-> megatron-core conversion",
    "use_remove_padding": "the role's model.use_remove_padding decides packing, as with strategy=fsdp",
    "forward_only": "the role decides it: the reference and the reward model are built without an optimizer",
}


def _megatron_role(role: str) -> Callable[[Any], bool]:
    """config -> whether ``role`` (actor, ref, critic) runs with strategy=megatron."""
    def strategy(cfg) -> str:
        arr = cfg.actor_rollout_ref
        if role == "critic":
            return cfg.critic.strategy or arr.actor.strategy
        return (arr.ref.strategy or arr.actor.strategy) if role.endswith(".ref") else arr.actor.strategy
    return lambda cfg: strategy(cfg) == "megatron"


def _megatron_without_dist_checkpointing(role: str) -> Callable[[Any], bool]:
    from rlcamp.config.loader import get_key

    megatron = _megatron_role(role)
    return lambda cfg: megatron(cfg) and not get_key(cfg, f"{role}.megatron.use_dist_checkpointing")


def _megatron_without_sequence_parallel(role: str) -> Callable[[Any], bool]:
    """With strategy=megatron, where sequence_parallel changes nothing: TP=1, PP > 1 or CP > 1."""
    from rlcamp.config.loader import get_key

    megatron = _megatron_role(role)
    return lambda cfg: megatron(cfg) and (get_key(cfg, f"{role}.megatron.tensor_model_parallel_size") == 1 or
                                          get_key(cfg, f"{role}.megatron.pipeline_model_parallel_size") > 1 or
                                          get_key(cfg, f"{role}.megatron.context_parallel_size") > 1)


def _not_megatron(role: str) -> Callable[[Any], bool]:
    megatron = _megatron_role(role)
    return lambda cfg: not megatron(cfg)


_MULTI_TURN = "multi-turn rollouts are not implemented (multi_turn.enable must be False)"
_SHM = ("models and data are read from their local paths; verl copies them to /dev/shm first to speed up network "
        "file systems")


def _one_process(role: str) -> Callable[[Any], bool]:
    """True when ``role``'s weights are not sharded: one device and no offload."""
    def applies(cfg) -> bool:
        from rlcamp.config.loader import get_key

        fsdp = get_key(cfg, role)
        return cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == 1 and not (fsdp.param_offload or fsdp.offload_policy)
    return applies


def _device(cfg) -> str | None:
    from rlcamp.utils.device import resolve_device

    try:
        return resolve_device(cfg.trainer.device)
    except RuntimeError:  # the device check itself reports this
        return None


def _cpu_vllm(cfg) -> bool:
    return cfg.actor_rollout_ref.rollout.name == "vllm" and _device(cfg) == "cpu"


def _no_compiler(cfg) -> bool:
    from rlcamp.utils.device import torch_compile_problem

    device = _device(cfg)
    return device is not None and torch_compile_problem(device) is not None


NO_EFFECT: list[NoEffect] = [
    *[NoEffect(f"data.{k}", "rlcamp's batch always carries the raw chat messages (a reward model re-templates "
               "from them) and nothing reads the templated ids or text separately")
      for k in ("return_raw_input_ids", "return_raw_chat", "return_full_prompt")],
    NoEffect("data.filter_overlong_prompts_workers", "prompts are tokenised in one batched call of the fast "
             "(Rust) tokenizer, which needs no worker processes"),
    NoEffect("data.custom_cls.name", "it names a class in data.custom_cls.path, which is refused"),
    NoEffect("reward_model.model.use_remove_padding", "the reward model scores padded micro batches"),
    NoEffect("data.image_key", "rlcamp trains on text prompts only; that column is not read"),
    NoEffect("data.video_key", "rlcamp trains on text prompts only; that column is not read"),
    *[NoEffect(k, _SHM) for k in ("data.use_shm", "actor_rollout_ref.model.use_shm", "critic.model.use_shm")],
    *[NoEffect(k, _NO_LORA) for k in ("actor_rollout_ref.model.lora_alpha", "actor_rollout_ref.model.target_modules",
                                      "actor_rollout_ref.model.exclude_modules", "critic.model.lora_alpha",
                                      "critic.model.target_modules")],
    *[NoEffect(f"actor_rollout_ref.{role}.{k}", _CHUNKED) for role in ("actor", "ref")
      for k in ("entropy_from_logits_with_chunking", "entropy_checkpointing")],
    *[NoEffect(f"reward_model.megatron.{k}", "the reward model scores unsharded, in one process (or in its own "
               "pool, reward_model.enable_resource_pool), whatever its strategy") for k in _MEGATRON_KEYS],
    NoEffect("reward_model.strategy", "the reward model scores unsharded, in one process (or in its own pool, "
             "reward_model.enable_resource_pool), whatever its strategy"),
    *[NoEffect(f"actor_rollout_ref.ref.fsdp_config.{k}", _UNSHARDED_REF)
      for k in ("reshard_after_forward", "forward_prefetch", "wrap_policy.min_num_params")],
    *[NoEffect(f"reward_model.model.fsdp_config.{k}", _UNSHARDED_RM)
      for k in ("reshard_after_forward", "forward_prefetch", "wrap_policy.min_num_params")],
    *[NoEffect(f"actor_rollout_ref.rollout.multi_turn.{k}", _MULTI_TURN)
      for k in ("max_assistant_turns", "tool_config_path", "format", "max_user_turns", "max_parallel_calls",
                "max_tool_response_length", "tool_response_truncate_side", "interaction_config_path",
                "use_inference_chat_template", "tokenization_sanity_check_mode", "num_repeat_rollouts")],
    NoEffect("trainer.use_legacy_worker_impl", "verl picks between its legacy fsdp/megatron workers and its newer "
             "engine-based workers with it; rlcamp has one worker implementation"),
    *[NoEffect(f"{role}.mixed_precision.buffer_dtype", "FSDP2 keeps buffers (rotary frequencies) in their own "
               "dtype; verl's FSDP2 path does not read it either") for role in
      ("actor_rollout_ref.actor.fsdp_config", "critic.model.fsdp_config")],
    NoEffect("reward_model.reward_loop_class_name", "it names a class in reward_model.reward_loop_module_path, "
             "which is refused"),
    # no effect only in some runs
    *[NoEffect(f"reward_model.{k}", "reward_model.use_reward_loop=False scores in the trainer's process, without "
               "the reward loop's engine and workers", lambda cfg: not cfg.reward_model.use_reward_loop)
      for k in ("num_workers", "rollout.name", "rollout.dtype", "rollout.max_num_seqs", "rollout.max_model_len",
                "rollout.prompt_length", "rollout.response_length")],
    *[NoEffect(f"reward_model.rollout.{k}", _RM_HF_ENGINE, _rm_hf_engine)
      for k in ("gpu_memory_utilization", "enforce_eager", "cudagraph_capture_sizes", "free_cache_engine",
                "data_parallel_size", "expert_parallel_size", "tensor_model_parallel_size", "max_num_batched_tokens",
                "load_format", "engine_kwargs", "limit_images", "enable_chunked_prefill", "enable_prefix_caching",
                "disable_log_stats", "skip_tokenizer_init")],
    *[NoEffect(f"reward_model.{k}", "they size the reward model's own device pool, which "
               "reward_model.enable_resource_pool=False does not make", lambda cfg: not cfg.reward_model.enable_resource_pool)
      for k in ("n_gpus_per_node", "nnodes")],
    NoEffect("actor_rollout_ref.rollout.mode", "with rollout.tensor_model_parallel_size > 1 one vLLM engine spans "
             "the group's ranks through vLLM's external launcher, which runs the offline engine: the group generates "
             "as rollout.mode=sync does (the same outputs; requests are not streamed one by one)",
             lambda cfg: cfg.actor_rollout_ref.rollout.mode == "async"
             and cfg.actor_rollout_ref.rollout.name == "vllm"
             and cfg.actor_rollout_ref.rollout.tensor_model_parallel_size > 1),
    NoEffect("reward_model.profiler.enable", "the reward model's own pool (reward_model.enable_resource_pool) runs in "
             "processes the profilers do not reach yet", lambda cfg: cfg.reward_model.enable_resource_pool),
    NoEffect("actor_rollout_ref.model.share_prompt_prefix", "sharing a prompt between its samples goes through the "
             "chunked head, which actor_rollout_ref.model.use_fused_kernels=False turns off",
             lambda cfg: not cfg.actor_rollout_ref.model.use_fused_kernels),
    NoEffect("actor_rollout_ref.model.fused_kernel_options.impl_backend", "it picks the implementation of "
             "use_fused_kernels=True, which is off", lambda cfg: not cfg.actor_rollout_ref.model.use_fused_kernels),
    *[NoEffect(f"{role}.{k}", "one device without offload: nothing is sharded (FSDP2 is not used)",
               _one_process(role)) for role in ("actor_rollout_ref.actor.fsdp_config", "critic.model.fsdp_config")
      for k in ("reshard_after_forward", "forward_prefetch", "wrap_policy.min_num_params",
                "mixed_precision.reduce_dtype")],
    *[NoEffect(f"{role}.megatron.{k}", _MEGATRON_ONLY, _not_megatron(role)) for k in _MEGATRON_KEYS
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")],
    *[NoEffect(f"{role}.megatron.{k}", why, _megatron_role(role)) for k, why in _MEGATRON_WITHOUT_EFFECT.items()
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")],
    *[NoEffect(f"{role}.megatron.sequence_parallel", "it splits the sequence between tensor-parallel regions: with "
               "tensor_model_parallel_size=1 there are none, and with pipeline_model_parallel_size > 1 or "
               "context_parallel_size > 1 the activations between them are kept whole (sequence parallelism across "
               "stage boundaries or within a context-parallel part is not built yet): the same numbers, more "
               "activation memory", _megatron_without_sequence_parallel(role))
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")],
    *[NoEffect(f"{role}.megatron.grad_offload", "the engine frees every gradient after its optimizer step, so no "
               "gradient is held between uses to move to host memory", _megatron_role(role))
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")],
    *[NoEffect(f"actor_rollout_ref.ref.megatron.{k}", "the reference is frozen: it has no optimizer",
               _megatron_role("actor_rollout_ref.ref")) for k in ("optimizer_offload", "use_distributed_optimizer")],
    *[NoEffect(f"{role}.megatron.{k}", f"on the CPU the {what} in host memory already",
               lambda cfg, megatron=_megatron_role(role): megatron(cfg) and _device(cfg) == "cpu")
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")
      for k, what in (("param_offload", "weights are"), ("optimizer_offload", "optimizer state is"))
      if not (role.endswith(".ref") and k == "optimizer_offload")],
    *[NoEffect(f"{role}.megatron.dist_checkpointing_path", "it is read with use_dist_checkpointing=True",
               _megatron_without_dist_checkpointing(role))
      for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")],
    *[NoEffect(f"actor_rollout_ref.rollout.{k}", _ENGINE_ONLY, lambda cfg: cfg.actor_rollout_ref.rollout.name == "hf")
      for k in ("gpu_memory_utilization", "enforce_eager", "free_cache_engine", "load_format", "max_num_batched_tokens",
                "max_num_seqs", "enable_chunked_prefill", "disable_log_stats")],
    *[NoEffect(f"actor_rollout_ref.rollout.{k}", "vLLM's CPU backend sizes its KV cache by VLLM_CPU_KVCACHE_SPACE "
               "and has no sleep mode", _cpu_vllm) for k in ("gpu_memory_utilization", "free_cache_engine")],
    *[NoEffect(f"actor_rollout_ref.{role}.use_torch_compile", "torch.compile on CPU compiles C++ and no C++ compiler "
               "(g++) is installed here; the helpers run uncompiled", _no_compiler) for role in ("actor", "ref")],
    *[NoEffect(f"{role}.fsdp_config.param_offload", "on the CPU the weights are in host memory already",
               lambda cfg: _device(cfg) == "cpu") for role in ("actor_rollout_ref.ref", "reward_model.model")],
    NoEffect("ray_init.timeline_json_file", "this run uses no Ray (one device, in-process workers)",
             lambda cfg: cfg.trainer.worker_group == "in_process" or
             (cfg.trainer.worker_group == "auto" and cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == 1)),
    NoEffect("trainer.ray_wait_register_center_timeout", "this run uses no Ray (one device, in-process workers)",
             lambda cfg: cfg.trainer.worker_group == "in_process" or
             (cfg.trainer.worker_group == "auto" and cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == 1)),
]


def no_effect_warnings(cfg: RLConfig, user_keys: frozenset[str]) -> list[str]:
    """One warning per reason, naming each key the user set that has no effect in this run for it."""
    from rlcamp.config.loader import get_key

    by_reason: dict[str, list[str]] = {}
    for entry in NO_EFFECT:
        if entry.key in user_keys and entry.applies(cfg):
            by_reason.setdefault(entry.why, []).append(f"{entry.key}={get_key(cfg, entry.key)!r}")
    return [f"{', '.join(keys)} {'has' if len(keys) == 1 else 'have'} no effect: {why}"
            for why, keys in by_reason.items()]


def unsupported_problems(cfg: RLConfig) -> list[str]:
    from rlcamp.config.loader import get_key

    problems = []
    for entry in UNSUPPORTED:
        value = get_key(cfg, entry.key)
        if entry.applies(value):
            problems.append(f"{entry.key}={value!r} is a known option that rlcamp does not run yet: it {entry.why}; {entry.fix}")
    rollout = cfg.actor_rollout_ref.rollout
    if rollout.mode == "async" and rollout.name != "vllm":
        problems.append(f"actor_rollout_ref.rollout.mode=async is served by vLLM's AsyncLLM; with "
                        f"rollout.name={rollout.name} use rollout.mode=sync (or rollout.name=vllm)")
    n_devices = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if n_devices > 1 and cfg.trainer.worker_group == "in_process":
        problems.append(f"trainer.worker_group=in_process runs one device, but trainer.nnodes x trainer.n_gpus_per_node "
                        f"= {n_devices}; use trainer.worker_group=ray (or auto)")
    return problems
