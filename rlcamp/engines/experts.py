"""Expert parallelism of an HF mixture-of-experts decoder (``expert_model_parallel_size`` x
``expert_tensor_parallel_size``).

The experts of every MoE layer (HF's fused ``*Experts`` modules: ``gate_up_proj`` [E, 2I, H],
``down_proj`` [E, H, I], as Qwen2-MoE and DeepSeek-V3 / Moonlight hold them) are split over an expert
group of EP x ETP consecutive ranks of a pipeline stage (tensor parallel inner, then data parallel, as
Megatron folds its expert mesh into those ranks), E / (EP x ETP) whole experts per rank: where
megatron-core splits each expert's width ETP ways, rlcamp splits by expert, the same numbers and the same
share of the weights per rank. The router, the shared experts and everything else stay as the rest of
the layer is split. Each rank routes its own tokens (under tensor parallelism, its share of the group's
rows), then one ``all_to_all_single`` (uneven splits, differentiable: its backward is the reverse
exchange) sends every (token, expert) pair to the rank that holds the expert, the experts run on what
they received, and a second exchange brings the results back to be weighted and summed per token,
exactly as the HF module sums them.

The split weights are DTensors sharded over the group on the expert dimension, so checkpoints
reshard (EP=2 -> EP=1) and ``full_tensor()`` exports them whole. Their gradients are summed over
the ranks that hold the same experts (the expert-data-parallel group), not the whole data-parallel
group; the gradient norm adds each rank's share of them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def expert_modules(model) -> list[nn.Module]:
    """The fused experts modules of ``model`` (empty for a dense model)."""
    return [m for m in model.modules()
            if type(m).__name__.endswith("Experts") and hasattr(m, "gate_up_proj") and hasattr(m, "down_proj")]


def num_experts(config) -> int | None:
    return next((getattr(config, k) for k in ("num_experts", "n_routed_experts", "num_local_experts")
                 if getattr(config, k, None)), None)


def expert_group(tp: int, ep: int, etp: int | None) -> int:
    """The ranks one copy of the experts is split over: expert parallel x expert tensor parallel (Megatron's
    ``expert_tensor_parallel_size`` null: the tensor-parallel size)."""
    return max(ep, 1) * (tp if etp is None else etp)


def ep_problems(config, group: int, ranks: int, key: str) -> list[str]:
    """Why ``config``'s experts cannot be split over an expert group of ``group`` ranks out of a stage's
    ``ranks`` (tensor x data parallel) ranks (empty if they can). ``key``: what sets the group's size."""
    experts = num_experts(config)
    if experts is None:
        return [f"{key}: the model (model_type '{config.model_type}') has no experts to split"]
    problems = []
    if experts % group:
        problems.append(f"{key} splits the model's {experts} experts {group} ways; choose sizes whose product "
                        "divides the expert count")
    if ranks % group:
        problems.append(f"{key}: an expert group of {group} ranks does not divide the {ranks} ranks (tensor x data "
                        "parallel) of a pipeline stage the experts are split over")
    return problems


def router_sums(router_logits, top_k: int, n_experts: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[2E + 1]: each expert's top-k assignments, its summed router probability and the rows counted, over
    the layers' router logits ([rows, E] each): the running sums of transformers' load_balancing_loss_func
    (``mask``: 1 for the rows that count, per row of one layer). Sums of stages add up."""
    device = router_logits[0].device
    tokens = torch.zeros(n_experts, dtype=torch.float32, device=device)
    probs = torch.zeros(n_experts, dtype=torch.float32, device=device)
    rows = torch.zeros(1, dtype=torch.float32, device=device)
    weight = None if mask is None else mask.reshape(-1).to(device=device, dtype=torch.float32)
    for logits in router_logits:
        p = torch.softmax(logits, dim=-1)
        _, chosen = torch.topk(p, top_k, dim=-1)
        if weight is None:
            tokens = tokens + torch.bincount(chosen.reshape(-1), minlength=n_experts).float()
            probs = probs + p.float().sum(0)
            rows = rows + p.shape[0]
        else:
            tokens = tokens + torch.zeros_like(tokens).scatter_add_(0, chosen.reshape(-1), weight.repeat_interleave(top_k))
            probs = probs + (p.float() * weight[:, None]).sum(0)
            rows = rows + weight.sum()
    return torch.cat([tokens, probs, rows])


def router_loss(sums: torch.Tensor, n_experts: int) -> torch.Tensor:
    """The load-balancing loss from ``router_sums`` (summed over every layer): E * sum_i f_i * P_i."""
    tokens, probs, rows = sums[:n_experts], sums[n_experts:2 * n_experts], sums[-1]
    return (tokens / rows * probs / rows).sum() * n_experts


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group, differentiable: bool):
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    if differentiable:
        from torch.distributed.nn.functional import all_to_all_single

        return all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    return out


class _GatherRows(torch.autograd.Function):
    """Each rank's rows, concatenated in rank order on every rank of ``group`` (``sizes``: every rank's row
    count). What follows is computed alike on every rank, so each rank's gradient is the slice of its rows."""

    @staticmethod
    def forward(ctx, x, group, sizes):
        ctx.start = sum(sizes[:dist.get_rank(group)])
        ctx.size = x.shape[0]
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.start:ctx.start + ctx.size], None, None


class _ExpertParallelForward:
    """The replacement forward of one experts module: dispatch, the local experts, combine.

    Under tensor parallelism the ranks of a tensor-parallel group hold the same tokens: each takes its share
    of the rows, so that every (token, expert) pair is computed once in the expert group, and the results are
    gathered back whole. The rows and their routing weights enter through ONE copy-to-group (its backward
    sums both gradients over the tensor-parallel group in a single collective, each rank holding its rows')."""

    def __init__(self, module: nn.Module, group, rank: int, size: int, tp_group=None):
        self.module, self.group, self.rank, self.size, self.tp_group = module, group, rank, size, tp_group
        self.total = module.gate_up_proj.shape[0]  # global expert count (DTensor shape)
        self.local = self.total // size

    def __call__(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        if self.tp_group is None:
            return self._experts(hidden_states, top_k_index, top_k_weights)
        from rlcamp.engines.tensor_parallel import _CopyToGroup

        n, width = hidden_states.shape
        tp, mine = dist.get_world_size(self.tp_group), dist.get_rank(self.tp_group)
        sizes = [n // tp + (r < n % tp) for r in range(tp)]  # as tensor_split cuts n rows
        start = sum(sizes[:mine])
        rows = slice(start, start + sizes[mine])
        both = _CopyToGroup.apply(torch.cat([hidden_states, top_k_weights.to(hidden_states.dtype)], -1),
                                  self.tp_group)[rows]
        out = self._experts(both[:, :width], top_k_index[rows], both[:, width:])
        return _GatherRows.apply(out, self.tp_group, sizes)

    def _experts(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        m, k = self.module, top_k_index.shape[-1]
        tokens, expert = torch.arange(top_k_index.shape[0], device=hidden_states.device).repeat_interleave(k), \
            top_k_index.reshape(-1)
        order = torch.argsort(expert, stable=True)  # grouped by destination rank, then by expert
        expert, tokens = expert[order], tokens[order]
        weights = top_k_weights.reshape(-1)[order]
        send = torch.bincount(expert // self.local, minlength=self.size)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        send_splits, recv_splits = send.tolist(), recv.tolist()
        received = _exchange(hidden_states[tokens], recv_splits, send_splits, self.group, differentiable=True)
        their_expert = _exchange(expert, recv_splits, send_splits, self.group, differentiable=False) - \
            self.rank * self.local
        gate_up, down = m.gate_up_proj.to_local(), m.down_proj.to_local()
        # from ``received`` even where no row is for this rank: every rank must take part in the backward exchange
        out = received * 0.0
        for e in torch.unique(their_expert).tolist():
            rows = (their_expert == e).nonzero(as_tuple=True)[0]
            gate, up = nn.functional.linear(received[rows], gate_up[e]).chunk(2, dim=-1)
            out = out.index_put((rows,), nn.functional.linear(m.act_fn(gate) * up, down[e]).to(out.dtype))
        back = _exchange(out, send_splits, recv_splits, self.group, differentiable=True)
        final = torch.zeros_like(hidden_states)
        return final.index_add(0, tokens, (back * weights[:, None]).to(final.dtype))


def parallelize_experts(model, ep_mesh, tp_group=None) -> list[nn.Parameter]:
    """Split every experts module of ``model`` over ``ep_mesh`` (1-D) in place; returns the split parameters.
    ``tp_group``: the tensor-parallel group whose ranks hold the same tokens (None without tensor parallelism)."""
    from torch.distributed.tensor import Shard, distribute_tensor

    group, rank, size = ep_mesh.get_group(), ep_mesh.get_local_rank(), ep_mesh.size()
    split = []
    for module in expert_modules(model):
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(module, name)
            param = nn.Parameter(distribute_tensor(full.data, ep_mesh, [Shard(0)]), requires_grad=full.requires_grad)
            setattr(module, name, param)
            split.append(param)
        module.forward = _ExpertParallelForward(module, group, rank, size, tp_group)
    return split
