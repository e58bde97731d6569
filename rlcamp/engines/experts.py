"""Expert parallelism of an HF mixture-of-experts decoder (``expert_model_parallel_size``).

The experts of every MoE layer (HF's fused ``*Experts`` modules: ``gate_up_proj`` [E, 2I, H],
``down_proj`` [E, H, I], as Qwen2-MoE and DeepSeek-V3 / Moonlight hold them) are split over an
expert-parallel group carved out of the data-parallel ranks, E / EP consecutive experts per rank,
as Megatron places them. The router, the shared experts and everything else stay whole on every
rank. Each rank routes its own tokens, then one ``all_to_all_single`` (uneven splits, differentiable:
its backward is the reverse exchange) sends every (token, expert) pair to the rank that holds the
expert, the experts run on what they received, and a second exchange brings the results back to
be weighted and summed per token, exactly as the HF module sums them.

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


def ep_problems(config, ep: int, dp: int, key: str) -> list[str]:
    """Why ``config``'s experts cannot be split ``ep`` ways over ``dp`` data-parallel ranks (empty if they can)."""
    experts = num_experts(config)
    if experts is None:
        return [f"{key}={ep}: the model (model_type '{config.model_type}') has no experts to split"]
    problems = []
    if experts % ep:
        problems.append(f"{key}={ep} does not divide the model's {experts} experts; choose a divisor of it")
    if dp % ep:
        problems.append(f"{key}={ep} does not divide the {dp} data-parallel ranks the experts are split over")
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


class _ExpertParallelForward:
    """The replacement forward of one experts module: dispatch, the local experts, combine."""

    def __init__(self, module: nn.Module, group, rank: int, size: int):
        self.module, self.group, self.rank, self.size = module, group, rank, size
        self.total = module.gate_up_proj.shape[0]  # global expert count (DTensor shape)
        self.local = self.total // size

    def __call__(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
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
            out = out.index_put((rows,), nn.functional.linear(m.act_fn(gate) * up, down[e]))
        back = _exchange(out, send_splits, recv_splits, self.group, differentiable=True)
        final = torch.zeros_like(hidden_states)
        return final.index_add(0, tokens, (back * weights[:, None]).to(final.dtype))


class _TensorParallelExpertsForward:
    """Experts split over a tensor-parallel group by expert: every rank holds the group's tokens, runs its
    E / TP experts on the ones routed to them, and the partial outputs are summed over the group (one
    all-reduce). The tokens and their routing weights enter through ONE copy-to-group, whose backward
    all-reduces both gradients in a single collective, so ranks that hit different experts cannot order
    their backward collectives differently."""

    def __init__(self, module: nn.Module, group, rank: int, size: int):
        self.module, self.group = module, group
        self.local = module.gate_up_proj.shape[0] // size
        self.first = rank * self.local

    def __call__(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        from rlcamp.engines.tensor_parallel import _CopyToGroup, _ReduceFromGroup

        m, width = self.module, hidden_states.shape[-1]
        both = _CopyToGroup.apply(torch.cat([hidden_states, top_k_weights.to(hidden_states.dtype)], -1), self.group)
        x, weights = both[:, :width], both[:, width:]
        gate_up, down = m.gate_up_proj.to_local(), m.down_proj.to_local()
        final = both.sum() * 0.0 + torch.zeros_like(hidden_states)  # in the graph even where no expert of ours is hit
        mine = (top_k_index >= self.first) & (top_k_index < self.first + self.local)
        for e in torch.unique(top_k_index[mine]).tolist():
            token, slot = torch.where(top_k_index == e)
            gate, up = nn.functional.linear(x[token], gate_up[e - self.first]).chunk(2, dim=-1)
            out = nn.functional.linear(m.act_fn(gate) * up, down[e - self.first]) * weights[token, slot, None]
            final = final.index_add(0, token, out.to(final.dtype))
        return _ReduceFromGroup.apply(final, self.group)


def parallelize_experts_tp(model, tp_mesh) -> None:
    """Split every experts module of ``model`` over the tensor-parallel ``tp_mesh`` by expert, in place."""
    from torch.distributed.tensor import Shard, distribute_tensor

    group, rank, size = tp_mesh.get_group(), tp_mesh.get_local_rank(), tp_mesh.size()
    for module in expert_modules(model):
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(module, name)
            setattr(module, name, nn.Parameter(distribute_tensor(full.data, tp_mesh, [Shard(0)]),
                                               requires_grad=full.requires_grad))
        module.forward = _TensorParallelExpertsForward(module, group, rank, size)


def parallelize_experts(model, ep_mesh) -> list[nn.Parameter]:
    """Split every experts module of ``model`` over ``ep_mesh`` (1-D) in place; returns the split parameters."""
    from torch.distributed.tensor import Shard, distribute_tensor

    group, rank, size = ep_mesh.get_group(), ep_mesh.get_local_rank(), ep_mesh.size()
    split = []
    for module in expert_modules(model):
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(module, name)
            param = nn.Parameter(distribute_tensor(full.data, ep_mesh, [Shard(0)]), requires_grad=full.requires_grad)
            setattr(module, name, param)
            split.append(param)
        module.forward = _ExpertParallelForward(module, group, rank, size)
    return split
