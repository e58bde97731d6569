"""The typed config schema: one frozen dataclass per section, verl's key names and defaults.

Every field carries a one-line doc (``metadata["doc"]``). A field whose verl default is an
interpolation such as ``${actor_rollout_ref.actor.use_dynamic_bsz}`` is declared with
``follows=<that key>``: it stays ``None`` until the loader copies the other key's resolved
value into it, unless the user set it.

Deliberate departures from verl's defaults, each because the verl default cannot run on a
laptop (they are listed in the README too): ``rollout.name`` is ``hf`` (our own engine, not
vllm), ``trainer.logger`` is ``["console"]`` (no wandb account needed; the run folder always gets
``metrics.jsonl``), ``trainer.device`` is ``auto`` (cuda, else npu, else cpu),
``data.dataloader_num_workers`` is 0 (prompts are tokenised once at load; workers would only collate).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

from rlcamp.algos import registry


def doc(text: str, default: Any = MISSING, *, factory: Any = None, follows: str | None = None):
    """A dataclass field with its one-line doc (and, optionally, the key its default follows)."""
    metadata = {"doc": text}
    if follows is not None:
        metadata["follows"] = follows
        default = None
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# the algorithm choices come from rlcamp.algos.registry (one table each)
LossAggMode = Literal[tuple(registry.LOSS_AGG_MODES)]
KLType = Literal[tuple(registry.KL_ESTIMATORS)]
AdvEstimator = Literal[tuple(registry.ADV_ESTIMATORS)]
PolicyLossMode = Literal[tuple(registry.POLICY_LOSS_MODES)]
PFPPOMethod = Literal[tuple(registry.PF_PPO_METHODS)]
Strategy = Literal["fsdp", "fsdp2", "megatron"]


# ----------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class CustomClsConfig:
    path: str | None = doc("Python file holding a custom dataset class (verl key; not supported yet).", None)
    name: str | None = doc("Class name inside custom_cls.path.", None)


@dataclass(frozen=True)
class DataConfig:
    tokenizer: str | None = doc("Tokenizer path; null uses the actor model's tokenizer.", None)
    train_files: list[str] = doc("Training prompt files (parquet or jsonl, verl schema); a string or a list.",
                                 factory=lambda: ["~/data/rlhf/gsm8k/train.parquet"])
    val_files: list[str] = doc("Validation prompt files (parquet or jsonl, verl schema); a string or a list.",
                               factory=lambda: ["~/data/rlhf/gsm8k/test.parquet"])
    prompt_key: str = doc("Column that holds the chat messages of each prompt.", "prompt")
    reward_fn_key: str = doc("Column whose value picks the reward scorer (usually data_source).", "data_source")
    max_prompt_length: int = doc("Longest prompt, in tokens, after the chat template.", 512)
    max_response_length: int = doc("Longest response, in tokens, that the rollout generates.", 512)
    train_batch_size: int = doc("Prompts per training step (each sampled rollout.n times).", 1024)
    val_batch_size: int | None = doc("Prompts per validation batch; null means the whole validation set.", None)
    return_raw_input_ids: bool = doc("Also return the unpadded prompt ids (for a reward model with another tokenizer).", False)
    return_raw_chat: bool = doc("Also return the raw chat messages (needed by async / multi-turn rollouts).", False)
    return_full_prompt: bool = doc("Also return the templated prompt text.", False)
    shuffle: bool = doc("Shuffle training prompts every epoch, seeded by data.seed.", True)
    seed: int = doc("Seed of the training-prompt shuffle.", 1)
    validation_shuffle: bool = doc("Shuffle the validation set.", False)
    dataloader_num_workers: int = doc("DataLoader worker processes that collate the next batches ahead (prompts are "
                                      "tokenised once at load, so 0, collating in the trainer, is usually best).", 0)
    filter_overlong_prompts: bool = doc("Drop prompts longer than max_prompt_length at load time.", False)
    filter_overlong_prompts_workers: int = doc("Processes used to filter overlong prompts.", 1)
    truncation: Literal["error", "left", "right", "middle"] = doc(
        "What to do with a prompt longer than max_prompt_length: error, or keep its left/right/middle-cut part.", "error")
    trust_remote_code: bool = doc("Allow the remote code of data.tokenizer's tokenizer.", False)
    image_key: str = doc("Column with images (multimodal; not supported yet).", "images")
    video_key: str = doc("Column with videos (multimodal; not supported yet).", "videos")
    use_shm: bool = doc("Copy the model to shared memory before loading (verl key; no effect needed on a local path).", False)
    custom_cls: CustomClsConfig = doc("A user's dataset class, by file and name.", factory=CustomClsConfig)


# ---------------------------------------------------------------------------- shared sub-sections
@dataclass(frozen=True)
class OptimConfig:
    lr: float = doc("Peak learning rate of AdamW.", 1e-6)
    lr_warmup_steps: int = doc("Warm-up steps; -1 means use lr_warmup_steps_ratio.", -1)
    lr_warmup_steps_ratio: float = doc("Warm-up length as a fraction of total training steps.", 0.0)
    min_lr_ratio: float | None = doc("Floor of the cosine schedule as a fraction of lr (null = 0).", 0.0)
    num_cycles: float = doc("Cosine cycles over training (0.5 = one half-cosine decay).", 0.5)
    lr_scheduler_type: Literal["constant", "cosine"] = doc(
        "Schedule after warm-up (verl's FSDP key): constant, or cosine down to min_lr_ratio.", "constant")
    warmup_style: Literal["constant", "cosine"] | None = doc(
        "verl's deprecated name of lr_scheduler_type; set, it is used in its place.", None)
    lr_decay_style: Literal["constant", "linear", "cosine", "inverse-square-root", "inverse_square_root", "WSD"] = doc(
        "Schedule after warm-up as verl's Megatron optimizer has it, from lr down to min_lr over lr_decay_steps: "
        "linear, cosine, inverse-square-root, or WSD (warm-stable-decay: lr until the last lr_wsd_decay_steps, then "
        "down to min_lr); not constant, it replaces lr_scheduler_type.", "constant")
    lr_decay_steps: int | None = doc("Steps lr_decay_style's decay ends at (null: the schedule's total steps).", None)
    min_lr: float = doc("Floor of lr_decay_style's decay, an absolute learning rate.", 0.0)
    lr_wsd_decay_steps: int | None = doc("WSD: the last steps of lr_decay_steps, over which lr decays to min_lr.", None)
    lr_wsd_decay_style: Literal["exponential", "linear", "cosine", "minus_sqrt"] = doc(
        "WSD: the shape of the final decay (Megatron's).", "exponential")
    total_training_steps: int = doc("Steps the LR schedule spans; -1: the run's training steps.", -1)
    weight_decay: float = doc("AdamW weight decay.", 0.01)
    betas: list[float] = doc("AdamW betas.", factory=lambda: [0.9, 0.999])
    eps: float = doc("AdamW epsilon.", 1e-8)


@dataclass(frozen=True)
class WrapPolicyConfig:
    min_num_params: int = doc("Wrap a module in its own FSDP unit once it has this many parameters (0 = per layer).", 0)


@dataclass(frozen=True)
class MixedPrecisionConfig:
    param_dtype: str = doc("Dtype of parameters during forward/backward.", "bf16")
    reduce_dtype: str = doc("Dtype of gradient reduction.", "fp32")
    buffer_dtype: str = doc("Dtype of buffers.", "fp32")


@dataclass(frozen=True)
class FSDPConfig:
    param_offload: bool = doc("Keep parameters on the CPU between uses.", False)
    optimizer_offload: bool = doc("Keep optimizer state on the CPU between updates.", False)
    offload_policy: bool = doc("Use FSDP2's CPUOffloadPolicy (params, grads and optimizer step on CPU).", False)
    reshard_after_forward: bool = doc("Free gathered parameters after forward (less memory, more communication).", True)
    fsdp_size: int = doc("Ranks per FSDP shard group; -1 means all data-parallel ranks.", -1)
    forward_prefetch: bool = doc("Prefetch the next unit's parameters during forward.", False)
    model_dtype: str = doc("Dtype the trained weights are loaded and held in (fp32 master weights by default); "
                           "model.dtype follows it.", "fp32")
    mixed_precision: MixedPrecisionConfig = doc("Mixed-precision dtypes.", factory=MixedPrecisionConfig)
    wrap_policy: WrapPolicyConfig = doc("How modules are grouped into FSDP units.", factory=WrapPolicyConfig)


@dataclass(frozen=True)
class RefFSDPConfig:
    param_offload: bool = doc("Keep the model in host memory between uses (on an accelerator).", False)
    reshard_after_forward: bool = doc("Free gathered parameters after forward.", True)
    forward_prefetch: bool = doc("Prefetch the next unit's parameters during forward.", False)
    model_dtype: str = doc("Dtype the reference weights are held in.", "fp32")
    wrap_policy: WrapPolicyConfig = doc("How modules are grouped into FSDP units.", factory=WrapPolicyConfig)


def _transformer_overrides() -> dict[str, Any]:
    # verl's ppo_megatron_trainer.yaml default (megatron/actor.yaml at b178a3c)
    return {"attention_backend": "flash", "recompute_granularity": None, "recompute_method": None,
            "recompute_modules": ["core_attn"], "recompute_num_layers": None}


@dataclass(frozen=True)
class MegatronConfig:
    """verl's Megatron engine settings of one role (read with strategy=megatron)."""

    tensor_model_parallel_size: int = doc("Megatron tensor-parallel degree.", 1)
    pipeline_model_parallel_size: int = doc("Megatron pipeline-parallel degree.", 1)
    virtual_pipeline_model_parallel_size: int | None = doc("Interleaved pipeline stages per rank.", None)
    context_parallel_size: int = doc("Megatron context-parallel degree.", 1)
    expert_model_parallel_size: int = doc("Megatron expert-parallel degree (MoE).", 1)
    expert_tensor_parallel_size: int | None = doc("Tensor-parallel degree inside experts.", None)
    sequence_parallel: bool = doc("Megatron sequence parallelism alongside TP.", True)
    use_distributed_optimizer: bool = doc("Shard optimizer state across data-parallel ranks.", True)
    param_offload: bool = doc("Offload parameters to the CPU between uses.", False)
    grad_offload: bool = doc("Offload gradients to the CPU between uses.", False)
    optimizer_offload: bool = doc("Offload optimizer state to the CPU between updates.", False)
    seed: int = doc("Megatron's RNG seed.", 42)
    use_dist_checkpointing: bool = doc("Load the initial weights from a Megatron distributed checkpoint "
                                       "(dist_checkpointing_path) instead of the HF folder.", False)
    dist_checkpointing_path: str | None = doc("Folder of that distributed checkpoint (made by verl's "
                                              "scripts/converter_hf_to_mcore.py).", None)
    dist_checkpointing_prefix: str = doc("Key prefix inside that checkpoint.", "")
    dtype: str = doc("Dtype the Megatron engine computes in.", "bfloat16")
    use_mbridge: bool = doc("Convert HF <-> Megatron weights with mbridge.", True)
    vanilla_mbridge: bool = doc("Use mbridge's own (vanilla) model definitions.", True)
    use_remove_padding: bool = doc("Pack sequences without padding (THD layout).", True)
    forward_only: bool = doc("Build the engine without an optimizer (reference, reward model).", False)
    override_transformer_config: dict[str, Any] = doc(
        "Values that override Megatron's TransformerConfig (recompute_*, attention_backend, "
        "num_layers_in_last_pipeline_stage, ...).", factory=_transformer_overrides)
    override_ddp_config: dict[str, Any] = doc("Values that override Megatron's DistributedDataParallelConfig.",
                                              factory=dict)
    override_mcore_model_config: dict[str, Any] = doc("Values that override the Megatron model config.", factory=dict)


def _tool_config() -> dict[str, Any]:
    # verl's profiler/profiler.yaml at b178a3c, less its _target_ class names and the values that
    # follow global_profiler.global_tool_config (nsys.discrete, torch_memory.*), which rlcamp reads
    # there unless set here
    return {"npu": {"contents": [], "level": "level0", "analysis": True, "discrete": False},
            "torch": {"contents": [], "discrete": False}}


@dataclass(frozen=True)
class ProfilerConfig:
    """One role's profiler (verl's ``<role>.profiler``): which ranks record the global_profiler steps."""

    enable: bool = doc("Profile this role in the steps named by global_profiler.steps.", False)
    all_ranks: bool = doc("Profile every rank of this role.", False)
    ranks: list[int] = doc("Ranks to profile when all_ranks is False (empty: rank 0).", factory=list)
    tool: str | None = doc("Profiler of this role; null follows global_profiler.tool.", follows="global_profiler.tool")
    save_path: str | None = doc("Folder for this role's traces; null follows global_profiler.save_path.",
                                follows="global_profiler.save_path")
    tool_config: dict[str, Any] = doc("Per-tool settings (nsys.discrete, torch.contents, torch_memory.stack_depth, "
                                      "npu.level, ...).", factory=_tool_config)


@dataclass(frozen=True)
class CheckpointContentsConfig:
    # departure from verl: hf_model is in by default, so every checkpoint is also a transformers folder
    save_contents: list[str] = doc(
        "What a checkpoint holds: model (weights; sharded per rank under FSDP), optimizer (sharded likewise), "
        "extra (LR schedule, RNG), hf_model (a transformers folder; under FSDP rank 0 gathers the full weights).",
        factory=lambda: ["model", "optimizer", "extra", "hf_model"])
    load_contents: list[str] = doc("What a resume loads back (model, optimizer, extra).",
                                   factory=lambda: ["model", "optimizer", "extra"])


# ------------------------------------------------------------------------------ actor_rollout_ref
@dataclass(frozen=True)
class FusedKernelOptions:
    impl_backend: Literal["torch", "triton"] = doc("torch: chunked matmuls in PyTorch (any device); triton: "
                                                   "Triton kernels, same values (rlcamp.models.triton_head; a CUDA device, or "
                                                   "TRITON_INTERPRET=1: Triton's CPU interpreter, slow).", "torch")


@dataclass(frozen=True)
class ModelConfig:
    path: str = doc("Local folder (or hub name when online) of the actor's HF model.", "~/models/deepseek-llm-7b-chat")
    custom_chat_template: str | None = doc("A Jinja chat template that replaces the tokenizer's own.", None)
    external_lib: str | None = doc("Python module imported before loading (registers custom models).", None)
    override_config: dict[str, Any] = doc("Values that override the model's HF config (e.g. attn_implementation).", factory=dict)
    trust_remote_code: bool = doc("Allow the model's remote code.", False)
    enable_gradient_checkpointing: bool = doc("Recompute activations in backward to save memory.", True)
    enable_activation_offload: bool = doc("Offload activations to the CPU during forward.", False)
    use_remove_padding: bool = doc("Pack sequences without padding (varlen) where the model allows it.", False)
    share_prompt_prefix: bool = doc("Run a prompt once for all its samples in a micro batch (rollout.n > 1) where the "
                                    "model allows it (rlcamp.models.shared_prefix); exact, fewer tokens. Actor and "
                                    "reference, with use_fused_kernels; precedes use_remove_padding.", True)
    use_liger: bool = doc("Use Liger kernels (GPU only).", False)
    # departure from verl (False): the chunked head is as fast as the full logits and holds a chunk of
    # them instead of [tokens, vocabulary] (benchmarks/RESULTS.md, "use_fused_kernels")
    use_fused_kernels: bool = doc("Compute log-probs and entropy from the hidden states without the full logits "
                                  "(impl_backend=torch: rlcamp's chunked head; triton: a fused GPU kernel); False: "
                                  "the full logits, as verl's default.", True)
    fused_kernel_options: FusedKernelOptions = doc("Which fused-kernel implementation.", factory=FusedKernelOptions)
    use_shm: bool = doc("Copy the model to shared memory before loading.", False)
    lora_rank: int = doc("LoRA rank; 0 trains all weights.", 0)
    lora_alpha: int = doc("LoRA alpha.", 16)
    target_modules: str | list[str] = doc("Modules LoRA adapts.", "all-linear")
    exclude_modules: str | None = doc("Modules LoRA leaves alone.", None)
    dtype: str | None = doc("Dtype the actor is loaded in for training (fp32 master weights are safest on CPU).",
                            follows="actor_rollout_ref.actor.fsdp_config.model_dtype")


@dataclass(frozen=True)
class PolicyLossConfig:
    loss_mode: PolicyLossMode = doc("Policy loss: vanilla PPO clip (with dual clip).", "vanilla")


@dataclass(frozen=True)
class ActorConfig:
    strategy: Strategy = doc("Training backend: fsdp / fsdp2 (torch FSDP2) or megatron.", "fsdp")
    ppo_mini_batch_size: int = doc(
        "Prompts per PPO mini batch (x rollout.n responses), one optimizer step each. With one mini batch and one "
        "epoch the PPO ratio is the update's own log-probs over themselves, detached (exactly 1, as verl does).", 256)
    ppo_micro_batch_size: int | None = doc("Deprecated global micro batch; use ppo_micro_batch_size_per_gpu.", None)
    ppo_micro_batch_size_per_gpu: int | None = doc("Responses per forward/backward on one device (gradient accumulation).", None)
    use_dynamic_bsz: bool = doc("Fill micro batches by token budget instead of a fixed count.", False)
    ppo_max_token_len_per_gpu: int = doc("Token budget of one micro batch per device when use_dynamic_bsz.", 16384)
    grad_clip: float = doc("Clip the global gradient norm to this.", 1.0)
    clip_ratio: float = doc("PPO clip range epsilon (both sides unless clip_ratio_low/high are set).", 0.2)
    tis_imp_ratio_cap: float = doc("Truncated importance sampling: weight each token's policy loss by "
                                   "min(pi_trainer / pi_rollout, cap) to correct rollout/trainer numerics "
                                   "(-1 = off; 2 is the usual cap).", -1.0)
    # verl defaults both to 0.2 whatever clip_ratio says; following clip_ratio is what a user expects.
    clip_ratio_low: float | None = doc("Lower clip epsilon (ratio >= 1 - low); defaults to clip_ratio.",
                                       follows="actor_rollout_ref.actor.clip_ratio")
    clip_ratio_high: float | None = doc("Upper clip epsilon (ratio <= 1 + high, DAPO's clip-higher); defaults to clip_ratio.",
                                        follows="actor_rollout_ref.actor.clip_ratio")
    clip_ratio_c: float = doc("Dual-clip constant (> 1): bounds the loss for negative advantages.", 3.0)
    policy_loss: PolicyLossConfig = doc("Which policy loss.", factory=PolicyLossConfig)
    loss_agg_mode: LossAggMode = doc("How token losses are averaged into one number.", "token-mean")
    loss_scale_factor: int | None = doc("seq-mean-token-sum-norm only: the constant each sequence's token-loss sum "
                                        "is divided by (null: the response length, data.max_response_length).", None)
    entropy_coeff: float = doc("Weight of the entropy bonus in the actor loss.", 0.0)
    use_kl_loss: bool = doc("Add a KL(actor || reference) term to the actor loss (GRPO style).", False)
    use_torch_compile: bool = doc("torch.compile the log-prob / entropy helpers.", True)
    kl_loss_coef: float = doc("Weight of the KL loss.", 0.001)
    kl_loss_type: KLType = doc("KL estimator of the KL loss: kl(k1) / abs / mse(k2) / low_var_kl(k3) / full.", "low_var_kl")
    ppo_epochs: int = doc("Passes over each step's batch.", 1)
    shuffle: bool = doc("Shuffle the batch between PPO epochs.", False)
    ulysses_sequence_parallel_size: int = doc("Ulysses sequence-parallel degree (1 = off).", 1)
    entropy_from_logits_with_chunking: bool = doc("Compute entropy in chunks to save memory.", False)
    entropy_checkpointing: bool = doc("Recompute entropy in backward to save memory.", False)
    checkpoint: CheckpointContentsConfig = doc("What actor checkpoints hold.", factory=CheckpointContentsConfig)
    optim: OptimConfig = doc("Actor optimizer and learning-rate schedule.", factory=OptimConfig)
    fsdp_config: FSDPConfig = doc("FSDP settings of the actor.", factory=FSDPConfig)
    megatron: MegatronConfig = doc("Megatron settings of the actor.", factory=MegatronConfig)
    profiler: ProfilerConfig = doc("Profiling of the actor's stages.", factory=ProfilerConfig)


@dataclass(frozen=True)
class RefConfig:
    strategy: Strategy | None = doc("Backend of the reference model.", follows="actor_rollout_ref.actor.strategy")
    log_prob_micro_batch_size: int | None = doc("Deprecated global micro batch; use the _per_gpu key.", None)
    log_prob_micro_batch_size_per_gpu: int | None = doc("Responses per reference forward on one device.", None)
    log_prob_use_dynamic_bsz: bool | None = doc("Token-budget micro batches for reference log-probs.",
                                                follows="actor_rollout_ref.actor.use_dynamic_bsz")
    log_prob_max_token_len_per_gpu: int | None = doc("Token budget per device for reference log-probs.",
                                                     follows="actor_rollout_ref.actor.ppo_max_token_len_per_gpu")
    ulysses_sequence_parallel_size: int | None = doc("Ulysses degree of the reference.",
                                                     follows="actor_rollout_ref.actor.ulysses_sequence_parallel_size")
    use_torch_compile: bool | None = doc("torch.compile the reference's helpers.", follows="actor_rollout_ref.actor.use_torch_compile")
    entropy_from_logits_with_chunking: bool = doc("Compute entropy in chunks.", False)
    entropy_checkpointing: bool = doc("Recompute entropy in backward.", False)
    fsdp_config: RefFSDPConfig = doc("FSDP settings of the reference.", factory=RefFSDPConfig)
    megatron: MegatronConfig = doc("Megatron settings of the reference.",
                                   factory=lambda: MegatronConfig(forward_only=True))
    profiler: ProfilerConfig = doc("Profiling of the reference's stage.", factory=ProfilerConfig)


@dataclass(frozen=True)
class ValKwargsConfig:
    top_k: int = doc("Top-k for validation sampling (-1 = off).", -1)
    top_p: float = doc("Top-p for validation sampling.", 1.0)
    temperature: float = doc("Validation temperature (0 = greedy).", 0.0)
    n: int = doc("Samples per validation prompt.", 1)
    do_sample: bool = doc("Sample in validation; False is greedy.", False)


@dataclass(frozen=True)
class MultiTurnConfig:
    enable: bool = doc("Multi-turn tool-calling rollouts (not supported yet).", False)
    max_assistant_turns: int | None = doc("Most assistant turns per sample.", None)
    tool_config_path: str | None = doc("YAML of the tools a multi-turn rollout may call.", None)
    format: str = doc("Tool-call format of the chat template (verl: hermes).", "hermes")
    max_user_turns: int | None = doc("Most user turns per sample.", None)
    max_parallel_calls: int = doc("Tool calls run at once per turn.", 1)
    max_tool_response_length: int = doc("Longest tool reply kept, in characters.", 256)
    tool_response_truncate_side: Literal["left", "right", "middle"] = doc("Which part of a long tool reply is cut.",
                                                                          "middle")
    interaction_config_path: str | None = doc("YAML of the simulated user (interaction) of a multi-turn rollout.", None)
    use_inference_chat_template: bool = doc("Template turns as at inference (drops earlier reasoning).", False)
    tokenization_sanity_check_mode: Literal["strict", "ignore_strippable", "disable"] = doc(
        "How turn-by-turn tokenisation is checked against templating the whole conversation.", "strict")
    num_repeat_rollouts: int | None = doc("Rollouts per interaction.", None)


@dataclass(frozen=True)
class RolloutConfig:
    name: Literal["hf", "vllm", "sglang"] = doc("Rollout engine: hf (rlcamp's own), vllm or sglang.", "hf")
    mode: Literal["sync", "async"] = doc("sync: one batched generate; async: a server loop that does not wait on stragglers.", "sync")
    temperature: float = doc("Sampling temperature.", 1.0)
    top_k: int = doc("Top-k sampling (-1 = off).", -1)
    top_p: float = doc("Top-p (nucleus) sampling.", 1.0)
    do_sample: bool = doc("Sample; False is greedy.", True)
    n: int = doc("Responses sampled per prompt (the group size of GRPO/RLOO).", 1)
    prompt_length: int | None = doc("Longest prompt the engine accepts.", follows="data.max_prompt_length")
    response_length: int | None = doc("Longest response the engine generates.", follows="data.max_response_length")
    dtype: str = doc("Dtype of the rollout engine's weights.", "bfloat16")
    gpu_memory_utilization: float = doc("Fraction of device memory the engine may take (weights + KV cache).", 0.5)
    ignore_eos: bool = doc("Keep generating past EOS (fixed work per response); as in verl, a response still "
                           "ends at its first EOS for training and reward.", False)
    enforce_eager: bool = doc("Disable CUDA graphs in the engine.", True)
    free_cache_engine: bool = doc("Free the engine's KV cache during training (sleep/wake).", True)
    load_format: str = doc("How the engine gets its first weights (dummy_dtensor: synced from the actor).", "dummy_dtensor")
    layered_summon: bool = doc("Gather FSDP weights layer by layer for the sync.", False)
    # departure from verl (2): a default of 2 would split every laptop run's engine over 2 processes
    tensor_model_parallel_size: int = doc("Devices one rollout engine spans (rlcamp's engine splits the model over "
                                          "them with torch tensor parallelism); rollout data parallelism is "
                                          "devices / this.", 1)
    max_num_batched_tokens: int = doc("Tokens the engine schedules per iteration.", 8192)
    max_model_len: int | None = doc("Context length of the engine; null = prompt + response length.", None)
    max_num_seqs: int = doc("Sequences the engine runs at once.", 1024)
    enable_chunked_prefill: bool = doc("Split long prefills into chunks.", True)
    disable_log_stats: bool = doc("Silence the engine's periodic statistics.", True)
    calculate_log_probs: bool = doc("Keep the engine's sampling log-probs for training "
                                    "(algorithm.rollout_correction.bypass_mode); the mismatch report always has them.",
                                    False)
    log_prob_micro_batch_size: int | None = doc("Deprecated global micro batch; use the _per_gpu key.", None)
    log_prob_micro_batch_size_per_gpu: int | None = doc("Responses per old-log-prob forward on one device.", None)
    log_prob_use_dynamic_bsz: bool | None = doc("Token-budget micro batches for old log-probs.",
                                                follows="actor_rollout_ref.actor.use_dynamic_bsz")
    log_prob_max_token_len_per_gpu: int | None = doc("Token budget per device for old log-probs.",
                                                     follows="actor_rollout_ref.actor.ppo_max_token_len_per_gpu")
    seed: int = doc("Seed of the rollout sampler.", 0)
    engine_kwargs: dict[str, Any] = doc("Extra keyword arguments passed to the engine, per engine name.", factory=dict)
    val_kwargs: ValKwargsConfig = doc("Sampling used for validation.", factory=ValKwargsConfig)
    multi_turn: MultiTurnConfig = doc("Multi-turn rollouts.", factory=MultiTurnConfig)


@dataclass(frozen=True)
class ActorRolloutRefConfig:
    hybrid_engine: bool = doc("Actor, rollout and reference share one worker per device.", True)
    model: ModelConfig = doc("The actor model.", factory=ModelConfig)
    actor: ActorConfig = doc("Actor training.", factory=ActorConfig)
    ref: RefConfig = doc("Reference model (a frozen copy of the initial actor).", factory=RefConfig)
    rollout: RolloutConfig = doc("Response generation.", factory=RolloutConfig)


# ----------------------------------------------------------------------------------------- critic
@dataclass(frozen=True)
class CriticModelConfig:
    path: str | None = doc("Local folder of the critic's backbone; null = the actor's model.path.",
                           follows="actor_rollout_ref.model.path")
    tokenizer_path: str | None = doc("Tokenizer of the critic.", follows="actor_rollout_ref.model.path")
    override_config: dict[str, Any] = doc("Values that override the critic's HF config.", factory=dict)
    external_lib: str | None = doc("Python module imported before loading.", None)
    trust_remote_code: bool = doc("Allow the critic's remote code.", False)
    enable_gradient_checkpointing: bool = doc("Recompute activations in backward.", True)
    enable_activation_offload: bool = doc("Offload activations to the CPU during forward.", False)
    use_remove_padding: bool = doc("Pack sequences without padding.", False)
    share_prompt_prefix: bool = doc("Run a prompt once for all its samples in a micro batch, as the actor's "
                                    "model.share_prompt_prefix.", True)
    use_shm: bool = doc("Copy the model to shared memory before loading.", False)
    lora_rank: int = doc("LoRA rank; 0 trains all weights.", 0)
    lora_alpha: int = doc("LoRA alpha.", 16)
    target_modules: str | list[str] = doc("Modules LoRA adapts.", "all-linear")
    dtype: str | None = doc("Dtype the critic is loaded in for training.", follows="critic.model.fsdp_config.model_dtype")
    fsdp_config: FSDPConfig = doc("FSDP settings of the critic.", factory=FSDPConfig)


@dataclass(frozen=True)
class CriticConfig:
    strategy: Strategy | None = doc("Training backend of the critic.", follows="actor_rollout_ref.actor.strategy")
    rollout_n: int | None = doc("Responses per prompt (mirrors rollout.n).", follows="actor_rollout_ref.rollout.n")
    optim: OptimConfig = doc("Critic optimizer (verl's critic lr default is 1e-5).", factory=lambda: OptimConfig(lr=1e-5))
    model: CriticModelConfig = doc("The critic model.", factory=CriticModelConfig)
    ppo_mini_batch_size: int | None = doc("Prompts per critic mini batch.", follows="actor_rollout_ref.actor.ppo_mini_batch_size")
    ppo_micro_batch_size: int | None = doc("Deprecated global micro batch; use ppo_micro_batch_size_per_gpu.", None)
    ppo_micro_batch_size_per_gpu: int | None = doc("Responses per critic forward/backward on one device.", None)
    forward_micro_batch_size: int | None = doc("Deprecated global micro batch for value computation.", None)
    forward_micro_batch_size_per_gpu: int | None = doc("Responses per value forward on one device.",
                                                       follows="critic.ppo_micro_batch_size_per_gpu")
    use_dynamic_bsz: bool | None = doc("Token-budget micro batches for the critic.", follows="actor_rollout_ref.actor.use_dynamic_bsz")
    ppo_max_token_len_per_gpu: int = doc("Token budget of one critic micro batch per device.", 32768)
    forward_max_token_len_per_gpu: int | None = doc("Token budget per device for values.", follows="critic.ppo_max_token_len_per_gpu")
    ulysses_sequence_parallel_size: int = doc("Ulysses degree of the critic.", 1)
    ppo_epochs: int | None = doc("Passes over each step's batch.", follows="actor_rollout_ref.actor.ppo_epochs")
    shuffle: bool | None = doc("Shuffle the batch between critic epochs.", follows="actor_rollout_ref.actor.shuffle")
    grad_clip: float = doc("Clip the critic's global gradient norm to this.", 1.0)
    cliprange_value: float = doc("Value clip range around the old values.", 0.5)
    loss_agg_mode: LossAggMode | None = doc("How token value losses are averaged.", follows="actor_rollout_ref.actor.loss_agg_mode")
    loss_scale_factor: int | None = doc("seq-mean-token-sum-norm only: the constant each sequence's value-loss sum is "
                                        "divided by; null follows the actor's.",
                                        follows="actor_rollout_ref.actor.loss_scale_factor")
    checkpoint: CheckpointContentsConfig = doc("What critic checkpoints hold.", factory=CheckpointContentsConfig)
    megatron: MegatronConfig = doc("Megatron settings of the critic.", factory=MegatronConfig)
    profiler: ProfilerConfig = doc("Profiling of the critic's stages.", factory=ProfilerConfig)


# ----------------------------------------------------------------------------------- rewards
@dataclass(frozen=True)
class RewardModelModelConfig:
    path: str = doc("Local folder of a sequence-classification reward model.", "~/models/FsfairX-LLaMA3-RM-v0.1")
    input_tokenizer: str | None = doc("The actor's tokenizer, to decode responses before re-templating.",
                                      follows="actor_rollout_ref.model.path")
    external_lib: str | None = doc("Python module imported before loading.", None)
    use_remove_padding: bool = doc("Pack sequences without padding.", False)
    trust_remote_code: bool = doc("Allow the reward model's remote code.", False)
    fsdp_config: RefFSDPConfig = doc("FSDP settings of the reward model.", factory=RefFSDPConfig)


@dataclass(frozen=True)
class SandboxFusionConfig:
    url: str | None = doc("Run-code endpoint of a SandboxFusion-compatible service; null = embedded sandbox.", None)
    max_concurrent: int = doc("Programs run at once.", 64)
    memory_limit_mb: int = doc("Memory limit per program, in MB.", 1024)


@dataclass(frozen=True)
class RewardRolloutConfig:
    """The engine that serves the reward model in the reward loop (verl's ``reward_model.rollout``)."""

    name: Literal["hf", "vllm"] = doc("Engine that serves the reward model: hf (rlcamp's own, any device) or vllm "
                                      "(a pooling model).", "hf")
    dtype: str = doc("Dtype of the served reward model.", "bfloat16")
    gpu_memory_utilization: float = doc("Fraction of device memory the engine may take.", 0.5)
    enforce_eager: bool = doc("Disable CUDA graphs in the engine.", True)
    cudagraph_capture_sizes: list[int] | None = doc("Batch sizes CUDA graphs are captured for.", None)
    free_cache_engine: bool = doc("Free the engine's cache between scorings.", True)
    data_parallel_size: int = doc("Engine replicas (data parallel).", 1)
    expert_parallel_size: int = doc("Expert-parallel degree of the engine.", 1)
    tensor_model_parallel_size: int = doc("Tensor-parallel degree of the engine.", 2)
    max_num_batched_tokens: int = doc("Tokens the engine schedules per iteration.", 8192)
    max_model_len: int | None = doc("Context length of the engine; null = prompt_length + response_length.", None)
    max_num_seqs: int = doc("Sequences the engine scores at once.", 1024)
    load_format: str = doc("How the engine loads the reward model's weights.", "auto")
    engine_kwargs: dict[str, Any] = doc("Extra keyword arguments for the engine.", factory=dict)
    limit_images: int | None = doc("Images per prompt (multimodal reward models).", None)
    enable_chunked_prefill: bool = doc("Split long prefills into chunks.", True)
    enable_prefix_caching: bool = doc("Reuse the KV cache of shared prefixes.", True)
    disable_log_stats: bool = doc("Silence the engine's periodic statistics.", True)
    skip_tokenizer_init: bool = doc("Start the engine without its tokenizer.", False)
    prompt_length: int = doc("Longest prompt (in the reward model's template) the engine accepts.", 2048)
    response_length: int = doc("Longest response the engine accepts.", 2048)


@dataclass(frozen=True)
class RewardModelConfig:
    enable: bool = doc("Score responses with a learned reward model.", False)
    strategy: Strategy | None = doc("Backend of the reward model.", follows="actor_rollout_ref.actor.strategy")
    model: RewardModelModelConfig = doc("The reward model.", factory=RewardModelModelConfig)
    micro_batch_size: int | None = doc("Deprecated global micro batch.", None)
    micro_batch_size_per_gpu: int | None = doc("Sequences per reward-model forward on one device.", None)
    max_length: int | None = doc("Longest sequence the reward model sees.", None)
    ulysses_sequence_parallel_size: int = doc("Ulysses degree of the reward model.", 1)
    use_dynamic_bsz: bool | None = doc("Token-budget micro batches.", follows="critic.use_dynamic_bsz")
    forward_max_token_len_per_gpu: int | None = doc("Token budget per device.", follows="critic.forward_max_token_len_per_gpu")
    reward_manager: Literal["naive", "prime", "batch", "dapo"] = doc(
        "How rule scores are computed: naive (one by one) or prime (in parallel).", "naive")
    launch_reward_fn_async: bool = doc("Score rewards on a background thread while the log-prob, reference and value "
                                       "stages run.", False)
    sandbox_fusion: SandboxFusionConfig = doc("Code-execution sandbox for code rewards.", factory=SandboxFusionConfig)
    use_reward_loop: bool = doc("Serve the reward model through an engine (reward_model.rollout) and score while "
                                "the trainer moves on; False: score in the trainer's process (verl's legacy path).",
                                True)
    num_workers: int = doc("Reward-loop workers that prepare and score samples concurrently.", 1)
    rollout: RewardRolloutConfig = doc("The engine of the reward loop.", factory=RewardRolloutConfig)
    enable_resource_pool: bool = doc("Give the reward model devices of its own (reward_model.nnodes x "
                                     "n_gpus_per_node) instead of sharing the trainer's.", False)
    n_gpus_per_node: int = doc("Devices per node of the reward model's own pool.", 8)
    nnodes: int = doc("Nodes of the reward model's own pool (0 = none).", 0)
    reward_loop_source: Literal["register", "importlib"] = doc("Where the reward-loop class comes from: verl's "
                                                                "registry or reward_loop_module_path.", "register")
    reward_loop_module_path: str | None = doc("Python file of a custom reward-loop class.", None)
    reward_loop_class_name: str | None = doc("Class name inside reward_loop_module_path.", None)
    megatron: MegatronConfig = doc("Megatron settings of the reward model.",
                                   factory=lambda: MegatronConfig(forward_only=True, use_distributed_optimizer=False))
    profiler: ProfilerConfig = doc("Profiling of the reward model.", factory=ProfilerConfig)


@dataclass(frozen=True)
class CustomRewardFunctionConfig:
    path: str | None = doc("Python file holding your reward function; null uses the built-in scorers.", None)
    name: str = doc("Name of the function in that file.", "compute_score")
    reward_kwargs: dict[str, Any] = doc("Extra keyword arguments passed to your function.", factory=dict)


# -------------------------------------------------------------------------------- algorithm
@dataclass(frozen=True)
class KLCtrlConfig:
    type: Literal["fixed", "adaptive"] = doc("In-reward KL coefficient: fixed or adaptive (Ziegler et al. 2019).", "fixed")
    kl_coef: float = doc("(Initial) in-reward KL coefficient.", 0.001)
    horizon: int = doc("Adaptive controller horizon, in samples.", 10000)
    target_kl: float = doc("KL the adaptive controller aims at.", 0.1)


@dataclass(frozen=True)
class PFPPOConfig:
    reweight_method: PFPPOMethod = doc("PF-PPO sample weights from scores.", "pow")
    weight_pow: float = doc("Exponent of the pow method.", 2.0)


@dataclass(frozen=True)
class RolloutCorrectionConfig:
    bypass_mode: bool = doc("Use the rollout engine's sampling log-probs as old_log_probs (the PPO ratio's anchor) and "
                            "skip the actor's recomputation pass, as verl's bypass mode; needs "
                            "actor_rollout_ref.rollout.calculate_log_probs=True.", False)


@dataclass(frozen=True)
class AlgorithmConfig:
    gamma: float = doc("Discount factor.", 1.0)
    lam: float = doc("GAE lambda.", 1.0)
    adv_estimator: AdvEstimator = doc(
        "Advantage estimator.", "gae")
    norm_adv_by_std_in_grpo: bool = doc("Divide GRPO advantages by the group's std (False = Dr. GRPO).", True)
    use_kl_in_reward: bool = doc("Subtract a KL(actor || reference) penalty from the token rewards.", False)
    kl_penalty: KLType = doc("KL estimator of the in-reward penalty.", "kl")
    kl_ctrl: KLCtrlConfig = doc("In-reward KL coefficient controller.", factory=KLCtrlConfig)
    use_pf_ppo: bool = doc("Resample each batch by reward (PF-PPO, Zhang et al. 2025).", False)
    pf_ppo: PFPPOConfig = doc("PF-PPO settings.", factory=PFPPOConfig)
    rollout_correction: RolloutCorrectionConfig = doc("How the rollout engine's policy relates to the trainer's.",
                                                      factory=RolloutCorrectionConfig)


# ---------------------------------------------------------------------------------- trainer
@dataclass(frozen=True)
class TrainerConfig:
    balance_batch: bool = doc("Balance tokens across data-parallel ranks each step.", True)
    total_epochs: int = doc("Passes over the training prompts.", 30)
    total_training_steps: int | None = doc("Stop after this many steps (overrides total_epochs when smaller).", None)
    project_name: str = doc("Project name, used by loggers and in the run folder.", "verl_examples")
    experiment_name: str = doc("Experiment name, used by loggers and in the run folder.", "gsm8k")
    logger: list[str] = doc("Experiment trackers: console, file, wandb, tensorboard, mlflow, swanlab, trackio, clearml "
                            "(the run folder always gets metrics.jsonl).", factory=lambda: ["console"])
    log_val_generations: int = doc("Validation samples (input, output, ground truth, score) logged as a table at "
                                   "every validation, in each tracker that has tables and on the console.", 0)
    rollout_data_dir: str | None = doc("Write every step's samples as <step>.jsonl here (input, output, ground truth, "
                                       "score, the scorer's extras).", None)
    validation_data_dir: str | None = doc("Write every validation's samples as <step>.jsonl here.", None)
    nnodes: int = doc("Machines in the job.", 1)
    n_gpus_per_node: int = doc("Devices per machine (processes per machine on CPU).", 8)
    save_freq: int = doc("Save a checkpoint every this many steps (-1 = never, except at the end).", -1)
    resume_mode: Literal["auto", "disable", "resume_path"] = doc(
        "auto: resume from the latest checkpoint in default_local_dir; disable; resume_path: resume_from_path.", "auto")
    resume_from_path: str | None = doc("Checkpoint folder to resume from when resume_mode=resume_path.", None)
    val_before_train: bool = doc("Validate once before the first step.", True)
    val_only: bool = doc("Only validate, then exit.", False)
    test_freq: int = doc("Validate every this many steps (-1 = never, except at the end).", -1)
    critic_warmup: int = doc("Steps that train only the critic before the actor starts.", 0)
    default_local_dir: str | None = doc("Run folder: checkpoints, metrics and the resolved config "
                                        "(null = checkpoints/<project_name>/<experiment_name>).", None)
    default_hdfs_dir: str | None = doc("Remote copy of checkpoints (not supported yet).", None)
    del_local_ckpt_after_load: bool = doc("Delete the checkpoint a run resumed from, once a newer one is saved.", False)
    max_actor_ckpt_to_keep: int | None = doc("Keep at most this many actor checkpoints (null = all).", None)
    max_critic_ckpt_to_keep: int | None = doc("Keep at most this many critic checkpoints (null = all).", None)
    ray_wait_register_center_timeout: int = doc("Seconds to wait for Ray to place and start the workers.", 300)
    device: Literal["auto", "cpu", "cuda", "npu"] = doc("Accelerator: auto picks cuda, else npu, else cpu.", "auto")
    seed: int = doc("Seed of model initialisation (value head) and other trainer randomness.", 42)
    worker_group: Literal["auto", "in_process", "ray"] = doc(
        "How workers run: in_process (one device), ray (one process per device); auto picks by device count.", "auto")
    stage_timeout_s: float = doc("A stage (or collective) that takes longer fails the run, naming the stage.", 1800.0)
    max_restarts: int = doc(
        "Worker processes (Ray) that die, or a stage past stage_timeout_s: restart the workers up to this many "
        "times in the run, each time resuming from the last complete checkpoint; 0 = the run stops with the error "
        "(which rank, node, pid and stage). Exceptions raised by a worker's own code are not retried.", 0)
    max_consecutive_nonfinite_steps: int = doc(
        "An optimizer step whose gradient norm is NaN or inf is skipped on every rank (counted as "
        "<role>/nonfinite_grad_steps); this many training steps in a row with such a skip stop the run, naming "
        "the step and stage. 0 = never stop.", 5)
    preemption_grace_s: float | None = doc(
        "SIGTERM / SIGINT to the driver: the run saves a checkpoint at the end of the step in progress and exits 0; "
        "if that step has not ended this many seconds after the signal, it stops at once without saving (the last "
        "complete checkpoint stays usable). null = wait for the step. A second signal always stops at once.", None)
    use_legacy_worker_impl: Literal["auto", "enable", "disable"] = doc(
        "verl: choose its legacy fsdp/megatron workers or its newer engine workers; rlcamp has one implementation.",
        "auto")


@dataclass(frozen=True)
class RayInitConfig:
    num_cpus: int | None = doc("CPUs Ray may use on this node (null = all).", None)
    timeline_json_file: str | None = doc("Write Ray's task timeline (chrome://tracing) here at the end of the run.", None)


def _global_tool_config() -> dict[str, Any]:
    # verl's ppo_trainer.yaml global_profiler.global_tool_config at b178a3c
    nsight = {"trace": "cuda,nvtx,cublas,ucx", "cuda-memory-usage": "true", "cuda-graph-trace": "graph"}
    return {"nsys": {"discrete": False, "controller_nsight_options": dict(nsight),
                     "worker_nsight_options": dict(nsight, **{"capture-range": "cudaProfilerApi",
                                                              "capture-range-end": None, "kill": "none"})},
            "torch_memory": {"trace_alloc_max_entries": 100000, "stack_depth": 32, "context": "all",
                             "stacks": "all", "kw_args": {}}}


@dataclass(frozen=True)
class GlobalProfilerConfig:
    tool: Literal["torch", "torch_memory", "nsys", "npu"] | None = doc(
        "Profiler of the named steps: torch (Chrome traces), torch_memory (allocator snapshots), nsys (Nsight "
        "Systems, needs nsys on PATH and CUDA), npu (Ascend); null = off.", None)
    steps: list[int] | None = doc("Training steps to profile (1-based); null or [] = none.", None)
    profile_continuous_steps: bool = doc("Record consecutive steps of global_profiler.steps as one trace.", False)
    save_path: str = doc("Folder of the traces; a relative path is inside the run folder.", "outputs/profile")
    global_tool_config: dict[str, Any] = doc("Tool settings shared by every role (nsys options, torch_memory "
                                             "trace_alloc_max_entries / stack_depth).", factory=_global_tool_config)


@dataclass(frozen=True)
class RLConfig:
    """The whole run. Keys and defaults follow verl's ppo_trainer.yaml."""

    data: DataConfig = doc("Prompts and their files.", factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = doc("Actor, rollout and reference.", factory=ActorRolloutRefConfig)
    critic: CriticConfig = doc("Critic (value model).", factory=CriticConfig)
    reward_model: RewardModelConfig = doc("Reward model and reward manager.", factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = doc("A user's reward function.", factory=CustomRewardFunctionConfig)
    algorithm: AlgorithmConfig = doc("Advantages and KL.", factory=AlgorithmConfig)
    trainer: TrainerConfig = doc("The training loop.", factory=TrainerConfig)
    ray_init: RayInitConfig = doc("Ray start-up (verl's ray_kwargs.ray_init.* and ray_kwargs.timeline_json_file are "
                                  "accepted for these keys).", factory=RayInitConfig)
    global_profiler: GlobalProfilerConfig = doc("Profiling of chosen steps.", factory=GlobalProfilerConfig)
