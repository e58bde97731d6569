"""``rlcamp plan``: the memory a work order needs on each device, from the models' ``config.json``
alone (no weights), and the smallest changes that make it fit.

Per device, for each role living there (rlcamp colocates actor, reference, rollout and critic on
every device; the reward model runs on the driver's):

- **weights, gradients, optimizer state**: the actor and critic keep fp32 master weights, fp32
  gradients and Adam's two fp32 moments, sharded over the data-parallel ranks by FSDP (1/D each);
  ``param_offload`` / ``optimizer_offload`` move them to host memory. A sharded model also holds
  its layers unsharded one or two at a time (FSDP's all-gather, in the compute dtype).
- **activations of one micro batch**: the tokens of a micro batch (``ppo_micro_batch_size_per_gpu``
  x (prompt + response), or the token budget with ``use_dynamic_bsz``), divided by the Ulysses
  degree; per layer the tensors autograd keeps (norms, q/k/v, attention output, the MLP's gate, up
  and product), or with gradient checkpointing only each layer's input plus one layer recomputed.
- **logits**: [tokens, vocabulary] in fp32 for the full head (value, log-softmax, gradient), or a
  bounded chunk with ``use_fused_kernels`` (rlcamp.models.head).
- **the rollout engine**: rlcamp's own keeps a copy of the weights in ``rollout.dtype`` (1/TP of it
  with tensor parallel) and the KV cache of the sequences it decodes at once; vLLM takes
  ``gpu_memory_utilization`` of the device on a GPU (weights and KV cache inside it), and on a CPU
  its weights plus ``VLLM_CPU_KVCACHE_SPACE`` GiB, in its own process.
- **reference and reward model**: frozen copies in their dtype.

Resident memory is everything kept between stages; the peak adds the largest transient stage
(generation, a log-prob pass, the actor's or the critic's update). Estimates are checked against
measured peaks in benchmarks/plan_accuracy.py (RESULTS.md, "rlcamp plan").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlcamp.config.schema import RLConfig

GIB = 2**30
DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2, "fp32": 4, "float32": 4, "float": 4}
CHUNK_BYTES = (1 << 24) * 4 * 3 + (1 << 25) * 4  # the chunked head: a chunk's logits x3 plus its saved exps
# what a process holds before any model: the CUDA context and allocator slack on a GPU; on a CPU,
# python with torch, transformers, datasets and rlcamp loaded: a tiny run peaks at 0.49-0.52 GiB here
# (benchmarks/plan_accuracy.py, cases tiny and tiny2), its models being a few MB
RUNTIME_GIB = {"cuda": 0.8, "npu": 1.0, "cpu": 0.5}


@dataclass(frozen=True)
class Shape:
    """What memory depends on, read from a model's config.json."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    classifier: bool = False  # a sequence classifier (a reward model): a score head, no vocabulary projection
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0  # leading layers with a dense MLP in an MoE model
    kv_lora_rank: int = 0  # multi-head latent attention (DeepSeek-V2/V3, Moonlight)
    q_lora_rank: int = 0
    rope_dim: int = 0
    nope_dim: int = 0
    v_dim: int = 0

    @property
    def attention_params(self) -> int:
        h, n = self.hidden, self.heads
        if self.kv_lora_rank:
            qk = self.nope_dim + self.rope_dim
            q = h * self.q_lora_rank + self.q_lora_rank * n * qk if self.q_lora_rank else h * n * qk
            kv = h * (self.kv_lora_rank + self.rope_dim) + self.kv_lora_rank * n * (self.nope_dim + self.v_dim)
            return q + kv + n * self.v_dim * h
        return h * n * self.head_dim * 2 + 2 * h * self.kv_heads * self.head_dim

    def mlp_params(self, layer: int) -> int:
        if not self.experts or layer < self.dense_layers:
            return 3 * self.hidden * self.intermediate
        return (self.experts * 3 * self.hidden * self.expert_intermediate + 3 * self.hidden * self.shared_intermediate
                + self.hidden * self.experts)

    @property
    def layer_params(self) -> int:
        """The largest layer's parameters."""
        return self.attention_params + max(self.mlp_params(i) for i in range(self.layers))

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied or self.classifier else 2)
        return embeddings + sum(self.attention_params + self.mlp_params(i) for i in range(self.layers))

    @property
    def kv_per_token(self) -> int:
        """KV-cache elements per token, all layers."""
        if self.kv_lora_rank:
            return self.layers * (self.kv_lora_rank + self.rope_dim)
        return self.layers * 2 * self.kv_heads * self.head_dim

    def activation_per_token(self, checkpointing: bool) -> int:
        """Elements autograd keeps per token for the backward, all layers."""
        h = self.hidden
        q = self.heads * (self.nope_dim + self.rope_dim if self.kv_lora_rank else self.head_dim)
        kv = 2 * self.kv_heads * self.head_dim if not self.kv_lora_rank else 2 * self.heads * self.head_dim
        mlp = (3 * self.intermediate if not self.experts else
               3 * (self.experts_per_token * self.expert_intermediate + self.shared_intermediate) + self.experts)
        per_layer = 6 * h + q + kv + q + mlp  # norms/residuals, q, k+v, attention out, MLP
        if checkpointing:
            return self.layers * h + per_layer  # layer inputs, and one layer recomputed
        return self.layers * per_layer


def _get(config: dict, *names, default=0):
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def read_shape(path: str) -> Shape:
    """The shape of the model at ``path`` (a folder with config.json, or the file itself)."""
    file = Path(path).expanduser()
    file = file / "config.json" if file.is_dir() else file
    if not file.is_file():
        raise FileNotFoundError(f"{path}: rlcamp plan reads the model's config.json (no weights needed); it is not "
                                "there. Download just that file (e.g. `huggingface-cli download <id> config.json "
                                "--local-dir <folder>`) and point the key at the folder")
    config = json.loads(file.read_text())
    config = config.get("text_config", config) if "num_hidden_layers" not in config else config
    heads = _get(config, "num_attention_heads")
    hidden = _get(config, "hidden_size")
    experts = _get(config, "num_experts", "n_routed_experts", "num_local_experts")
    return Shape(
        layers=_get(config, "num_hidden_layers"), hidden=hidden, heads=heads,
        kv_heads=_get(config, "num_key_value_heads", default=heads),
        head_dim=_get(config, "head_dim", default=hidden // max(heads, 1)),
        intermediate=_get(config, "intermediate_size"), vocab=_get(config, "vocab_size"),
        tied=bool(config.get("tie_word_embeddings", False)), experts=experts,
        classifier=any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []),
        experts_per_token=_get(config, "num_experts_per_tok", "moe_topk"),
        expert_intermediate=_get(config, "moe_intermediate_size", default=_get(config, "intermediate_size")),
        shared_intermediate=_get(config, "shared_expert_intermediate_size") or
        _get(config, "n_shared_experts") * _get(config, "moe_intermediate_size"),
        dense_layers=_get(config, "first_k_dense_replace"), kv_lora_rank=_get(config, "kv_lora_rank"),
        q_lora_rank=_get(config, "q_lora_rank"), rope_dim=_get(config, "qk_rope_head_dim"),
        nope_dim=_get(config, "qk_nope_head_dim"), v_dim=_get(config, "v_head_dim"))


@dataclass(frozen=True)
class Hardware:
    nodes: int
    gpus_per_node: int
    gpu_memory_gib: float
    device: str = "cuda"  # cuda, npu or cpu

    @property
    def devices(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Part:
    role: str
    what: str
    gib: float
    resident: bool  # kept between stages (else: only during its stage)
    stage: str = ""


@dataclass
class Estimate:
    parts: list[Part]
    hardware: Hardware
    notes: list[str] = field(default_factory=list)

    def resident(self) -> float:
        return sum(p.gib for p in self.parts if p.resident)

    def stages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            if not p.resident:
                out[p.stage] = out.get(p.stage, 0.0) + p.gib
        return out

    def peak(self) -> float:
        return self.resident() + max(self.stages().values(), default=0.0)

    def fits(self) -> bool:
        return self.peak() <= self.hardware.gpu_memory_gib

    def role_peak(self, roles: tuple[str, ...]) -> float:
        """Resident memory of ``roles`` plus their largest stage: what a process holding them peaks at."""
        resident = sum(p.gib for p in self.parts if p.resident and p.role in roles)
        stages: dict[str, float] = {}
        for p in self.parts:
            if not p.resident and p.role in roles:
                stages[p.stage] = stages.get(p.stage, 0.0) + p.gib
        return resident + max(stages.values(), default=0.0)


def _bytes(dtype: str) -> int:
    return DTYPE_BYTES.get(str(dtype).lower(), 2)


def _tokens(micro: int | None, seq: int, dynamic: bool, budget: int | None, ulysses: int) -> int:
    tokens = budget if dynamic and budget else (micro or 1) * seq
    return max(1, tokens // max(ulysses, 1))


def _trained(parts: list[Part], role: str, shape: Shape, fsdp, dp: int, compute: int, tokens: int,
             checkpointing: bool, head_elems: int, fused: bool, sharded: bool) -> None:
    """A trained model (actor or critic): its states and its update's transients."""
    n = shape.params
    on_device = 0.0 if fsdp.param_offload else 1.0
    parts.append(Part(role, "weights (fp32 master, 1/D with FSDP)", n * 4 / dp / GIB * on_device, True))
    parts.append(Part(role, "gradients (fp32)", n * 4 / dp / GIB * on_device, True))
    parts.append(Part(role, "optimizer (Adam, 2 x fp32)", 0.0 if fsdp.optimizer_offload else n * 8 / dp / GIB, True))
    if sharded:
        gathered = (2 * shape.layer_params + shape.vocab * shape.hidden) * compute
        parts.append(Part(role, "unsharded layers in flight (FSDP all-gather)", gathered / GIB, False, f"update_{role}"))
    act = tokens * shape.activation_per_token(checkpointing) * compute
    parts.append(Part(role, f"activations of a micro batch ({tokens} tokens)", act / GIB, False, f"update_{role}"))
    if head_elems:
        head = min(tokens * head_elems * 12, CHUNK_BYTES) if fused else tokens * head_elems * 12
        parts.append(Part(role, "logits (fp32: value, log-softmax, gradient)" + (", chunked" if fused else ""),
                          head / GIB, False, f"update_{role}"))


def estimate(cfg: RLConfig, hardware: Hardware, shapes: dict[str, Shape] | None = None) -> Estimate:
    """The memory of one device (the driver's, which also holds the reward model) for ``cfg``."""
    arr, critic, rm = cfg.actor_rollout_ref, cfg.critic, cfg.reward_model
    shapes = dict(shapes or {})
    shapes.setdefault("actor", read_shape(arr.model.path))
    d = max(1, hardware.devices)
    seq = cfg.data.max_prompt_length + cfg.data.max_response_length
    parts: list[Part] = []
    notes: list[str] = []
    actor = shapes["actor"]
    compute = _bytes(arr.actor.fsdp_config.mixed_precision.param_dtype)
    sharded = d > 1 or arr.actor.fsdp_config.param_offload
    ulysses = arr.actor.ulysses_sequence_parallel_size
    tokens = _tokens(arr.actor.ppo_micro_batch_size_per_gpu, seq, arr.actor.use_dynamic_bsz,
                     arr.actor.ppo_max_token_len_per_gpu, ulysses)
    fused = arr.model.use_fused_kernels
    _trained(parts, "actor", actor, arr.actor.fsdp_config, d, compute, tokens,
             arr.model.enable_gradient_checkpointing, actor.vocab, fused, sharded)
    # old log-probs (and the reference's): a no-grad pass over a log-prob micro batch
    lp_tokens = _tokens(arr.rollout.log_prob_micro_batch_size_per_gpu or arr.actor.ppo_micro_batch_size_per_gpu, seq,
                        arr.rollout.log_prob_use_dynamic_bsz, arr.rollout.log_prob_max_token_len_per_gpu, ulysses)
    head = min(lp_tokens * actor.vocab * 8, CHUNK_BYTES) if fused else lp_tokens * actor.vocab * 8
    parts.append(Part("actor", f"log-prob pass ({lp_tokens} tokens: one layer's activations, logits)",
                      (lp_tokens * actor.activation_per_token(True) // max(actor.layers, 1) * compute + head) / GIB,
                      False, "compute_log_prob"))
    uses_ref = arr.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward
    if uses_ref:
        ref_bytes = 0 if arr.ref.fsdp_config.param_offload else actor.params * _bytes(arr.ref.fsdp_config.model_dtype or "bf16")
        parts.append(Part("ref", "weights (frozen copy)", ref_bytes / GIB, True))
    # the rollout engine
    r = arr.rollout
    tp = max(1, r.tensor_model_parallel_size)
    engines = max(1, d // tp)
    sequences = -(-cfg.data.train_batch_size * r.n // engines)
    if r.name in ("vllm", "sglang") and hardware.device != "cpu":
        # free_cache_engine: the engine sleeps while the models train (its weights to host memory, its
        # KV cache freed), so its share is taken only while it generates
        asleep = r.free_cache_engine  # vLLM sleep mode, SGLang release_memory_occupation
        parts.append(Part("rollout", f"{r.name} engine (gpu_memory_utilization={r.gpu_memory_utilization}: weights "
                          f"and KV cache inside{'; asleep while training' if asleep else ''})",
                          r.gpu_memory_utilization * hardware.gpu_memory_gib, not asleep, "generate"))
        weights = actor.params * 2 / tp / GIB
        room = r.gpu_memory_utilization * hardware.gpu_memory_gib - weights
        kv_need = sequences * seq * actor.kv_per_token * 2 / tp / GIB
        if room <= 0:
            notes.append(f"rollout: the engine's share ({r.gpu_memory_utilization} x {hardware.gpu_memory_gib} GiB) "
                         f"is smaller than its 1/{tp} of the weights ({weights:.1f} GiB)")
        elif kv_need > room:
            notes.append(f"rollout: {sequences} sequences at once need {kv_need:.1f} GiB of KV cache, the engine has "
                         f"{room:.1f} GiB: it decodes them in {-(-kv_need // room):.0f} rounds (slower, not fatal)")
    else:
        copy = actor.params * _bytes(r.dtype) / tp
        kv = sequences * seq * actor.kv_per_token * _bytes(r.dtype) / tp
        if r.name == "vllm":  # vLLM's CPU backend: its weights and a fixed KV space, in the engine's process
            import os

            kv = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", os.environ.get("RLCAMP_VLLM_KV_GIB", "2"))) * GIB
        parts.append(Part("rollout", f"engine weights ({r.dtype}, 1/{tp})", copy / GIB, True))
        parts.append(Part("rollout", f"KV cache ({sequences} sequences x {seq} tokens)", kv / GIB, r.name == "vllm",
                          "generate"))
    if cfg.algorithm.adv_estimator == "gae":
        shapes.setdefault("critic", read_shape(critic.model.path))
        c = shapes["critic"]
        ctokens = _tokens(critic.ppo_micro_batch_size_per_gpu, seq, critic.use_dynamic_bsz,
                          critic.ppo_max_token_len_per_gpu, critic.ulysses_sequence_parallel_size)
        critic_shape = replace(c, vocab=0, tied=True)  # a value head instead of the vocabulary projection
        _trained(parts, "critic", critic_shape, critic.model.fsdp_config, d,
                 _bytes(critic.model.fsdp_config.mixed_precision.param_dtype), ctokens,
                 critic.model.enable_gradient_checkpointing, 0, False, sharded)
    if rm.enable:
        shapes.setdefault("reward_model", read_shape(rm.model.path))
        m = shapes["reward_model"]
        if rm.use_reward_loop and rm.rollout.name == "vllm" and hardware.device != "cpu" and not rm.enable_resource_pool:
            asleep = rm.rollout.free_cache_engine  # it sleeps between batches (rlcamp.rewards.vllm_reward)
            parts.append(Part("reward_model", f"vLLM engine (gpu_memory_utilization={rm.rollout.gpu_memory_utilization}"
                              f"{'; asleep between batches' if asleep else ''})",
                              rm.rollout.gpu_memory_utilization * hardware.gpu_memory_gib, not asleep, "reward"))
        elif not rm.enable_resource_pool:
            parts.append(Part("reward_model", "weights", m.params * _bytes(rm.model.fsdp_config.model_dtype or "bf16")
                              / GIB, True))
    parts.append(Part("runtime", "process runtime (CUDA context / python and libraries)",
                      RUNTIME_GIB.get(hardware.device, 0.8), True))
    return Estimate(parts, hardware, notes)


# the changes rlcamp plan tries, smallest first: (what, overrides, or a function of the config giving them)
CHANGES: list[tuple[str, object]] = [
    ("fused kernels (chunked log-prob head)", {"actor_rollout_ref.model.use_fused_kernels": True}),
    ("gradient checkpointing", {"actor_rollout_ref.model.enable_gradient_checkpointing": True,
                                "critic.model.enable_gradient_checkpointing": True}),
    ("optimizer offload", {"actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
                           "critic.model.fsdp_config.optimizer_offload": True}),
    ("parameter offload", {"actor_rollout_ref.actor.fsdp_config.param_offload": True,
                           "critic.model.fsdp_config.param_offload": True,
                           "actor_rollout_ref.ref.fsdp_config.param_offload": True}),
    ("micro batch 1", {"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 1,
                       "critic.ppo_micro_batch_size_per_gpu": 1,
                       "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 1}),
    ("token budgets halved (use_dynamic_bsz)", lambda cfg: {
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu // 2,
        "critic.ppo_max_token_len_per_gpu": cfg.critic.ppo_max_token_len_per_gpu // 2,
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu":
            cfg.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu // 2}
     if cfg.actor_rollout_ref.actor.use_dynamic_bsz or cfg.critic.use_dynamic_bsz else {}),
    ("Ulysses sequence parallel 2", {"actor_rollout_ref.actor.ulysses_sequence_parallel_size": 2,
                                     "critic.ulysses_sequence_parallel_size": 2}),
    ("lower rollout gpu_memory_utilization to 0.3", {"actor_rollout_ref.rollout.gpu_memory_utilization": 0.3}),
]


def _with(cfg: RLConfig, overrides: dict[str, object]) -> RLConfig:
    for key, value in overrides.items():
        parts = key.split(".")
        objs = [cfg]
        for p in parts[:-1]:
            objs.append(getattr(objs[-1], p))
        new = replace(objs[-1], **{parts[-1]: value})
        for obj, name in zip(reversed(objs[:-1]), reversed(parts[:-1])):
            new = replace(obj, **{name: new})
        cfg = new
    return cfg


def suggestions(cfg: RLConfig, hardware: Hardware, shapes: dict[str, Shape]) -> list[tuple[str, float, bool]]:
    """(change, peak GiB with it, fits) for each single change that lowers the peak, then the changes
    taken together, then more devices."""
    base = estimate(cfg, hardware, shapes).peak()
    out, together = [], {}
    for what, overrides in CHANGES:
        overrides = overrides(cfg) if callable(overrides) else overrides
        if not overrides:
            continue
        try:
            peak = estimate(_with(cfg, overrides), hardware, shapes).peak()
        except (TypeError, ValueError):
            continue
        if peak < base - 1e-3:
            out.append((what, peak, peak <= hardware.gpu_memory_gib))
            together.update(overrides)
    if together:
        peak = estimate(_with(cfg, together), hardware, shapes).peak()
        out.append(("all of the above", peak, peak <= hardware.gpu_memory_gib))
    for nodes in (2, 4, 8):
        more = replace(hardware, nodes=hardware.nodes * nodes)
        peak = estimate(cfg, more, shapes).peak()
        if peak < base - 1e-3:
            out.append((f"{more.nodes} nodes ({more.devices} devices)", peak, peak <= hardware.gpu_memory_gib))
            if peak <= hardware.gpu_memory_gib:
                break
    return out


def summary(cfg: RLConfig, hardware: Hardware) -> str:
    """One line: the estimated peak per device and whether it fits."""
    est = estimate(cfg, hardware)
    stages = est.stages()
    worst = max(stages, key=stages.get) if stages else "-"
    return (f"~{est.peak():.0f} GiB peak per {hardware.gpu_memory_gib:g} GiB device (resident {est.resident():.0f} + "
            f"{worst} {stages.get(worst, 0):.0f}): {'fits' if est.fits() else 'does not fit'}")


def report(cfg: RLConfig, hardware: Hardware) -> str:
    shapes = {"actor": read_shape(cfg.actor_rollout_ref.model.path)}
    est = estimate(cfg, hardware, shapes)
    a = shapes["actor"]
    lines = [f"rlcamp plan: {hardware.nodes} node(s) x {hardware.gpus_per_node} {hardware.device} device(s) of "
             f"{hardware.gpu_memory_gib:g} GiB; actor {a.params / 1e9:.2f}B parameters ({a.layers} layers, hidden "
             f"{a.hidden}, vocabulary {a.vocab}{f', {a.experts} experts' if a.experts else ''})",
             "", "per device (the driver's device also holds the reward model):",
             f"  {'role':<13} {'GiB':>8}  what"]
    for p in est.parts:
        when = "" if p.resident else f"   [during {p.stage}]"
        lines.append(f"  {p.role:<13} {p.gib:8.2f}  {p.what}{when}")
    stages = est.stages()
    worst = max(stages, key=stages.get) if stages else "-"
    lines += ["", f"resident {est.resident():.1f} GiB + largest stage ({worst}) {stages.get(worst, 0):.1f} GiB = "
                  f"peak {est.peak():.1f} GiB of {hardware.gpu_memory_gib:g}: "
                  f"{'FITS' if est.fits() else 'DOES NOT FIT'}"]
    lines += [f"note: {n}" for n in est.notes]
    if not est.fits():
        lines += ["", "changes that lower the peak (estimated peak with each):"]
        for what, peak, fits in suggestions(cfg, hardware, shapes):
            lines.append(f"  {what:<45} {peak:8.1f} GiB  {'fits' if fits else ''}")
    return "\n".join(lines)


def plan_command(target: list[str], gpus_per_node: int | None, nodes: int | None, memory_gib: float,
                 device: str | None) -> str:
    """``rlcamp plan``: ``target`` is a launch script (then its "$@"), or the key=value overrides of a line."""
    from rlcamp.config.loader import build_config
    from rlcamp.trainer.main_ppo import _config_tree, parse_args
    from rlcamp.workorders.launch import read_launch_line

    if target and target[0].endswith(".sh"):
        argv = read_launch_line(target[0], target[1:]).args
    else:
        argv = list(target)
    args, overrides = parse_args(argv)
    tree, _ = _config_tree(args)
    cfg = build_config(overrides, tree=tree).config
    t = cfg.trainer
    kind = device or ("cpu" if t.device == "cpu" else "npu" if t.device == "npu" else "cuda")
    hardware = Hardware(nodes or t.nnodes, gpus_per_node or t.n_gpus_per_node, memory_gib, kind)
    if (gpus_per_node, nodes) != (None, None):
        cfg = _with(cfg, {"trainer.n_gpus_per_node": hardware.gpus_per_node, "trainer.nnodes": hardware.nodes})
    return report(cfg, hardware)
