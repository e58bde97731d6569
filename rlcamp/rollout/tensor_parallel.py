"""rlcamp's own engine over ``actor_rollout_ref.rollout.tensor_model_parallel_size`` = T ranks.

The rollout copy is split over each group of T consecutive ranks with torch's tensor parallelism
(DTensor, ``parallelize_module``): the query/key/value and gate/up projections column-wise (each
rank holds T-th of the heads and of the MLP's intermediate features), the output and down
projections row-wise (their partial sums are all-reduced), MoE experts the same way inside each
expert (a rank holds T-th of every expert's intermediate features; the experts' output is
all-reduced). Embeddings, norms, routers and the output layer stay whole. So each rank holds
about 1/T of a decoder's weights, and a model too big for one device still decodes.

The copy is built on the meta device and only its shards are allocated; the actor's weights are
copied in shard by shard (one full tensor at a time) after every update. Rollout data parallelism
is devices / T: the ranks of a group generate their prompts together, every rank sampling the
same tokens (same random numbers; the group's first rank's pick is broadcast each step, so a
near-tie between logits that differ in the last bit cannot part the ranks), and each keeps its
own rows.

Next to a ``strategy=megatron`` actor split the same way, ``TrainerShardsRollout`` decodes on the actor's
own shards instead of a copy (no refresh after an update).

Families with q/k/v/o attention (Llama, Qwen2, Qwen3, Gemma 2, Qwen2-MoE, Mixtral-style experts)
and DeepSeek-V3's latent attention (heads split at q_b_proj / kv_b_proj, the latents whole) are covered;
sizes that do not divide are refused by name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from rlcamp.rollout.base import NamedTensors, RolloutEngine, named_items
from rlcamp.rollout.hf import HFRollout, SamplingParams

# multi-head latent attention (DeepSeek-V2/V3, Moonlight) splits its heads at q_proj / q_b_proj and kv_b_proj;
# its low-rank q_a / kv_a projections (and the cached latents) stay whole on every rank
COLWISE = ("q_proj", "k_proj", "v_proj", "q_b_proj", "kv_b_proj", "gate_proj", "up_proj")
ROWWISE = ("o_proj", "down_proj")


def tp_problems(config, tp: int) -> list[str]:
    """Why a model with this HF ``config`` cannot be split over ``tp`` ranks (empty: it can)."""
    if tp == 1:
        return []
    key = "actor_rollout_ref.rollout.tensor_model_parallel_size"
    text = getattr(config, "text_config", config)
    problems = []
    latent = bool(getattr(text, "kv_lora_rank", None))  # its keys are expanded per query head
    sizes = {"num_attention_heads": text.num_attention_heads,
             "num_key_value_heads": None if latent else
             getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
             "intermediate_size": getattr(text, "intermediate_size", None),
             "moe_intermediate_size": getattr(text, "moe_intermediate_size", None),
             "shared_expert_intermediate_size": getattr(text, "shared_expert_intermediate_size", None)}
    for name, value in sizes.items():
        if value and value % tp:
            problems.append(f"{key}={tp} does not divide the model's {name}={value}: each rank must hold a "
                            "whole share of it; pick a divisor")
    return problems


def _local_plan(model) -> dict[str, object]:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if ".layers." not in f".{name}" or not isinstance(module, torch.nn.Linear):
            continue
        if leaf in COLWISE:
            plan[name] = ColwiseParallel()
        elif leaf in ROWWISE:
            plan[name] = RowwiseParallel()
    return plan


def _is_experts(module) -> bool:
    return isinstance(getattr(module, "gate_up_proj", None), torch.nn.Parameter) and \
        isinstance(getattr(module, "down_proj", None), torch.nn.Parameter)


class RolloutGroup:
    """This rank's group of ``tp`` consecutive ranks that run one engine together (rlcamp's or vLLM's
    external-launcher mode): the group's prompts are generated together, each rank keeps its rows."""

    def __init__(self, tp: int, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh

        world = dist.get_world_size() if dist.is_initialized() else 1
        if world % tp:
            raise ValueError(f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide the "
                             f"{world} ranks")
        self.tp = tp
        self.mesh = init_device_mesh(device.type, (world // tp, tp), mesh_dim_names=("dp", "tp"))["tp"]
        self.group = self.mesh.get_group()
        self.rank = self.mesh.get_local_rank()

    def _gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        parts: list = [None] * self.tp
        dist.all_gather_object(parts, tensor.cpu(), group=self.group)
        return parts

    def prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The group's prompts (left-padded to one width), and how many each rank brought."""
        ids, masks = self._gather(input_ids), self._gather(attention_mask)
        width = max(t.shape[1] for t in ids)

        def left_pad(t: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

        return (torch.cat([left_pad(t, pad_token_id) for t in ids]), torch.cat([left_pad(m, 0) for m in masks]),
                [t.shape[0] for t in ids])

    def mine(self, out: dict[str, torch.Tensor], sizes: list[int]) -> dict[str, torch.Tensor]:
        start = sum(sizes[:self.rank])
        return {k: v[start:start + sizes[self.rank]] for k, v in out.items()}


class _GroupDecoding(RolloutEngine):
    """The ranks of a rollout group generate their prompts together (``RolloutGroup``), agreeing on every pick."""

    def __init__(self, tp: int, device: torch.device):
        self.tp, self.device = tp, device
        self.ranks = RolloutGroup(tp, device)
        self.group = self.ranks.group
        self.decoder: HFRollout | None = None

    # ------------------------------------------------------------------------- generation
    def _agree(self, tokens: torch.Tensor, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's first rank's tokens and log-probs, on every rank of the group. The all-reduces
        need not give bit-identical logits on every rank, and a greedy near-tie (common in a random
        model) would then pick different tokens, end rows at different steps and stall the group."""
        both = torch.stack([tokens.to(log_probs.dtype), log_probs])
        dist.broadcast(both, group=self.group, group_src=0)
        return both[0].to(tokens.dtype), both[1]

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """This rank's prompts in, its responses out; the group generates all of its prompts at once."""
        ids, mask, sizes = self.ranks.prompts(input_ids, attention_mask, self.decoder.pad_token_id)
        out = self.decoder.generate(ids.to(self.device), mask.to(self.device), params, generator)
        return self.ranks.mine(out, sizes)


class TensorParallelRollout(_GroupDecoding):
    """Generate with a copy of ``source`` split over this rank's tensor-parallel group."""

    def __init__(self, source: torch.nn.Module, tp: int, eos_token_ids: list[int], pad_token_id: int,
                 dtype: torch.dtype, device: torch.device):
        from torch.distributed.tensor.parallel import parallelize_module
        from transformers import AutoModelForCausalLM

        problems = tp_problems(source.config, tp)
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(tp, device)
        self.mesh, self.tp_rank = self.ranks.mesh, self.ranks.rank
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(source.config, dtype=dtype)
        parallelize_module(model, self.mesh, _local_plan(model))
        self.shard_fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for name, module in model.named_modules():
            if _is_experts(module):
                self._split_experts(name, module)
        model.to_empty(device=device)
        sources = dict(source.named_buffers())
        for name, buffer in model.named_buffers():  # rotary frequencies etc.: not in the state dict
            if name in sources:
                buffer.copy_(sources[name].to(buffer.device, buffer.dtype))
        model.config.use_cache = True
        model.eval()
        self.model = model
        self.params = dict(model.named_parameters(remove_duplicate=False))
        self.decoder = HFRollout(model, eos_token_ids, pad_token_id, agree=self._agree)

    # --------------------------------------------------------------------------- sharding
    def _split_experts(self, name: str, experts: torch.nn.Module) -> None:
        """Each expert's intermediate features split over the group: gate_up_proj [E, 2I, H] keeps this
        rank's gate and up rows (in that order, as the expert's chunk(2) expects), down_proj [E, H, I]
        its columns; the experts' partial outputs are all-reduced."""
        tp, r = self.tp, self.tp_rank
        inter = experts.gate_up_proj.shape[1] // 2
        part = inter // tp

        def gate_up(full: torch.Tensor) -> torch.Tensor:
            gate, up = full[:, :inter], full[:, inter:]
            return torch.cat([gate[:, r * part:(r + 1) * part], up[:, r * part:(r + 1) * part]], 1)

        def down(full: torch.Tensor) -> torch.Tensor:
            return full[:, :, r * part:(r + 1) * part]

        e, _, h = experts.gate_up_proj.shape
        experts.gate_up_proj = torch.nn.Parameter(torch.empty(e, 2 * part, h, device="meta",
                                                              dtype=experts.gate_up_proj.dtype), requires_grad=False)
        experts.down_proj = torch.nn.Parameter(torch.empty(e, experts.down_proj.shape[1], part, device="meta",
                                                           dtype=experts.down_proj.dtype), requires_grad=False)
        if hasattr(experts, "intermediate_dim"):
            experts.intermediate_dim = part
        self.shard_fns[f"{name}.gate_up_proj"] = gate_up
        self.shard_fns[f"{name}.down_proj"] = down
        group = self.group

        def reduce(_module, _inputs, output):
            dist.all_reduce(output, group=group)
            return output
        experts.register_forward_hook(reduce)

    def _local(self, name: str, full: torch.Tensor) -> torch.Tensor:
        if name in self.shard_fns:
            return self.shard_fns[name](full)
        param = self.params[name]
        placements = getattr(param, "placements", None)
        if not placements or not placements[0].is_shard():
            return full
        return torch.chunk(full, self.tp, dim=placements[0].dim)[self.tp_rank]

    @torch.no_grad()
    def load_weights(self, state: NamedTensors) -> None:
        """The actor's full weights (HF names), copied into this rank's shards one tensor at a time."""
        for name, full in named_items(state):
            if hasattr(full, "full_tensor"):
                full = full.full_tensor()
            param = self.params.get(name)
            if param is None:
                continue
            target = param.to_local() if hasattr(param, "to_local") else param
            target.copy_(self._local(name, full.detach()).to(target.device, target.dtype))


class TrainerShardsRollout(_GroupDecoding):
    """Decode on the trainer's own tensor-parallel shards (``strategy=megatron``, rollout TP = the actor's TP,
    one pipeline stage, no context parallelism): no copy of the weights and nothing to refresh after an
    update. ``model`` is the actor as ``engines.tensor_parallel.parallelize`` split it: its layers run as in
    training (the group's ranks see the same tokens), the vocabulary-parallel output layer's logits are
    gathered once per step. ``dtype``: the rollout's dtype; when the trained weights are held in another,
    generation runs under autocast to it (autocast's cache casts each weight once per generation)."""

    shares_weights = True

    def __init__(self, model: torch.nn.Module, tp: int, eos_token_ids: list[int], pad_token_id: int,
                 dtype: torch.dtype, device: torch.device):
        super().__init__(tp, device)
        self.model, self.dtype = model, dtype
        self.head: torch.Tensor | None = None  # this rank's vocabulary rows of the output layer, in dtype
        self.decoder = HFRollout(model, eos_token_ids, pad_token_id, dtype=dtype, agree=self._agree, logits=self._logits)

    def _logits(self, model, **inputs) -> torch.Tensor:
        hidden = model.get_decoder()(**inputs).last_hidden_state[:, -1]
        local = (hidden.to(self.head.dtype) @ self.head.t()).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.tp)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts, -1)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        weight = self.model.get_output_embeddings().weight
        weight = weight.to_local() if hasattr(weight, "to_local") else weight
        self.head = weight.detach().to(self.dtype)  # cast once per generation (a view when it is in dtype)
        try:
            return super().generate(input_ids, attention_mask, params, generator)
        finally:
            self.head = None

    def load_weights(self, state) -> None:
        raise RuntimeError("TrainerShardsRollout decodes on the trainer's weights: there is nothing to load")
