"""Megatron-style tensor parallelism of an HF decoder on PyTorch's DTensor (``parallelize_module``).

Within each decoder layer q/k/v and gate/up are column-parallel (each rank holds a slice of the
heads and of the MLP's width), o and down row-parallel (their outputs are summed over the group),
so one layer costs two all-reduces forward and two backward. The token embedding is split over
the vocabulary (each rank looks up the ids it holds; the rows are summed). Norms and the value
head stay whole on every rank and see the same activations, so their gradients agree without
communication.

With sequence parallelism the norms and the residual stream between those regions hold 1/TP of the
sequence (``parallelize(..., sequence_parallel=True)``).

The output layer is split over the vocabulary too and its logits are never gathered:
``vocab_parallel_log_probs`` takes the log-softmax at the label and the entropy from each rank's
slice with three all-reduces of one number per token (max, sum of exponentials, label logit) and one
more for the entropy. Gradients follow Megatron's two region functions: ``_ReduceFromGroup``
(all-reduce forward, identity backward) and ``_CopyToGroup`` (identity forward, all-reduce backward).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# module names (inside each decoder layer) of the families whose layers are Llama-shaped; DeepSeek-V3's
# multi-head latent attention splits its heads at q_proj / q_b_proj and kv_b_proj (the low-rank q_a and
# kv_a projections and their norms stay whole: every head reads the same latents)
COLUMN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_b_proj", "self_attn.kv_b_proj",
          "mlp.gate_proj", "mlp.up_proj")
ROW = ("self_attn.o_proj", "mlp.down_proj")
# shared experts of MoE layers (Qwen2-MoE: shared_expert, DeepSeek-V3: shared_experts): split like a dense MLP
SHARED_COLUMN = ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.shared_experts.gate_proj",
                 "mlp.shared_experts.up_proj")
SHARED_ROW = ("mlp.shared_expert.down_proj", "mlp.shared_experts.down_proj")
FAMILIES = frozenset({"llama", "qwen2", "qwen3", "mistral", "qwen2_moe", "deepseek_v3"})


class _ReduceFromGroup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _CopyToGroup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def tp_problems(config, tp: int, key: str) -> list[str]:
    """Why a model cannot be split ``tp`` ways (empty if it can)."""
    problems = []
    if config.model_type not in FAMILIES:
        problems.append(f"{key}={tp}: tensor parallelism covers the Llama-shaped families {sorted(FAMILIES)}, "
                        f"not model_type '{config.model_type}'")
        return problems
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    sizes = [("num_attention_heads", heads), ("intermediate_size", config.intermediate_size),
             ("vocab_size", config.vocab_size)]
    if not getattr(config, "kv_lora_rank", None):  # latent attention expands its keys per query head
        sizes.append(("num_key_value_heads", kv))
    if getattr(config, "shared_expert_intermediate_size", None):  # the shared experts split by width
        sizes.append(("shared_expert_intermediate_size", config.shared_expert_intermediate_size))
    if getattr(config, "n_shared_experts", None):
        sizes.append(("moe_intermediate_size x n_shared_experts", config.moe_intermediate_size * config.n_shared_experts))
    for name, value in sizes:
        if value % tp:
            problems.append(f"{key}={tp} does not divide the model's {name}={value}; choose a divisor of it")
    return problems


def parallelize(model, tp_mesh, sequence_parallel: bool = False) -> None:
    """Split ``model`` (an HF causal LM or token classifier of a Llama-shaped family) over ``tp_mesh`` in place.

    ``sequence_parallel``: between the tensor-parallel regions (the norms, the residual stream) each rank
    holds 1/TP of the sequence instead of all of it, as Megatron's sequence parallelism does: the first
    layer takes its rank's part, attention and MLP gather the sequence on entry and reduce-scatter
    (instead of all-reduce) on exit, and the final norm's output is gathered whole for the head. The
    same numbers; the activations between regions take 1/TP of the memory."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    from rlcamp.models.families import decoder_layers

    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        present = {name for name, _ in layer.named_modules()}
        plan = {name: ColwiseParallel() for name in COLUMN + SHARED_COLUMN if name in present}
        plan |= {name: RowwiseParallel() for name in ROW + SHARED_ROW if name in present}
        if sequence_parallel:
            plan |= {name: RowwiseParallel(output_layouts=Shard(1)) for name in ROW if name in present}
            plan |= {"input_layernorm": SequenceParallel(), "post_attention_layernorm": SequenceParallel(),
                     "self_attn": PrepareModuleInput(input_kwarg_layouts={"hidden_states": Shard(1)},
                                                     desired_input_kwarg_layouts={"hidden_states": Replicate()},
                                                     use_local_output=True),
                     "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                               use_local_output=True)}
            if i == 0:  # the embeddings arrive whole (the decoder builds its masks from them): take this rank's part
                plan[""] = PrepareModuleInput(input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),),
                                              use_local_output=True)
        for name in [n for n in plan if n]:
            parallelize_module(layer, tp_mesh, {name: plan[name]})
        if "" in plan:
            parallelize_module(layer, tp_mesh, plan[""])
        latent = getattr(layer.self_attn, "kv_a_proj_with_mqa", None)
        if latent is not None:
            _sum_rope_key_grads(latent, layer.self_attn.kv_lora_rank, tp_mesh.get_group())
    if sequence_parallel:
        norm = model.get_decoder().norm
        parallelize_module(norm, tp_mesh, SequenceParallel())
        norm.register_forward_hook(lambda module, args, out: out.redistribute(placements=[Replicate()]).to_local())
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = head is not None and head.weight is embed.weight
    parallelize_module(embed, tp_mesh, RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()))
    if head is not None:
        if tied:  # one split weight for both uses
            head.weight = embed.weight
        else:
            head.weight = torch.nn.Parameter(distribute_tensor(head.weight.data, tp_mesh, [Shard(0)]),
                                             requires_grad=head.weight.requires_grad)


def _sum_rope_key_grads(kv_a_proj, lora_rank: int, group) -> None:
    """Latent attention's rotary key (the last columns of ``kv_a_proj_with_mqa``) is one head shared by all
    query heads and bypasses the column-parallel kv_b_proj, so each rank's gradient of it covers only its own
    heads: it is summed over the group (``_CopyToGroup``). The latent part reaches kv_b_proj, whose input
    gradient is already summed."""

    def hook(module, args, out):
        return torch.cat([out[..., :lora_rank], _CopyToGroup.apply(out[..., lora_rank:], group)], -1)

    kv_a_proj.register_forward_hook(hook)


def vocab_parallel_log_probs(hidden: torch.Tensor, weight, labels: torch.Tensor, temperature: float,
                             with_entropy: bool, group) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(hidden @ W.T / T)[labels] (fp32, [n]) and the entropy, where ``weight`` is this rank's
    slice of the vocabulary (a DTensor sharded on dim 0, or its local rows) and ``hidden`` [n, d]
    is the same on every rank of ``group``."""
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    rank = dist.get_rank(group)
    start = rank * local.shape[0]  # equal slices: tp_problems requires vocab_size % tp == 0
    hidden = _CopyToGroup.apply(hidden, group)
    logits = (hidden @ local.t()).float()
    if temperature != 1.0:
        logits = logits / temperature
    with torch.no_grad():  # the log-softmax does not depend on the shift
        shift = logits.max(-1).values
        dist.all_reduce(shift, op=dist.ReduceOp.MAX, group=group)
    shifted = logits - shift[:, None]
    exp = shifted.exp()
    sum_exp = _ReduceFromGroup.apply(exp.sum(-1), group)
    index = labels - start
    mine = (index >= 0) & (index < local.shape[0])
    picked = shifted.gather(1, index.clamp(0, local.shape[0] - 1)[:, None])[:, 0] * mine
    log_z = sum_exp.log()
    log_probs = _ReduceFromGroup.apply(picked, group) - log_z
    entropy = None
    if with_entropy:  # H = log Z - sum_v p_v * shifted_v
        entropy = log_z - _ReduceFromGroup.apply((exp * shifted).sum(-1), group) / sum_exp
    return log_probs, entropy
