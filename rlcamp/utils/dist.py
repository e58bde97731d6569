"""torch.distributed for the workers: process-group set-up, global counts, FSDP2 sharding, full state dicts.

Everything here is a no-op with one process, so workers call it unconditionally.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int, backend: str,
                     timeout_s: float) -> None:
    os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _collective_device() -> torch.device:
    """Where a small tensor must be for the process group's backend: NCCL (HCCL) reduces only
    accelerator tensors, gloo only host ones."""
    backend = dist.get_backend()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "hccl":
        return torch.device("npu", torch.npu.current_device())
    return torch.device("cpu")


def all_reduce_sum(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over the ranks of ``group`` (None: all of them); a float copy on the input's device."""
    x = x.detach().clone().float()
    if world_size() > 1 and (group is None or dist.get_world_size(group) > 1):
        reduced = x.to(_collective_device())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        x = reduced.to(x.device)
    return x


def all_reduce_max(value: int, group=None) -> int:
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())


def size_based_units(model, min_num_params: int) -> list[torch.nn.Module]:
    """The modules a size-based wrap policy makes FSDP units (``wrap_policy.min_num_params``): going
    up from the leaves, a module becomes a unit once the parameters not yet in a unit below it
    reach ``min_num_params``; the root takes the rest. A weight tied between modules (embeddings and
    output layer) stays with the smallest module that holds all of its uses, as FSDP2 requires."""
    from collections import Counter

    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    units: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> tuple[int, Counter]:
        free, seen = 0, Counter()
        for child in module.children():
            n, child_seen = visit(child)
            free, seen = free + n, seen + child_seen
        for p in module.parameters(recurse=False):
            free, seen[id(p)] = free + p.numel(), seen[id(p)] + 1
        tied_outside = any(count < uses[pid] for pid, count in seen.items())
        if module is not model and free >= min_num_params and not tied_outside:
            units.append(module)
            return 0, Counter()
        return free, seen

    visit(model)
    return units


def shard(model, param_dtype: torch.dtype | None = None, reduce_dtype: torch.dtype | None = None,
          reshard_after_forward: bool = True, offload: bool = False, pin_memory: bool = False,
          forward_prefetch: bool = False, min_num_params: int = 0) -> None:
    """FSDP2: each decoder layer (or, with ``min_num_params`` > 0, the units of a size-based policy),
    then the root, sharded over all ranks (in place).

    ``forward_prefetch``: each unit's forward starts gathering the next unit's parameters (FSDP2's
    explicit prefetch), so communication overlaps the current unit's compute.
    ``reduce_dtype``: the dtype gradients are reduced across ranks in (None: their own).

    FSDP2 averages gradients over ranks; losses are divided by the mini batch's global token /
    sequence counts and multiplied by the world size (``grad_scale``), so the average is exactly
    the one-process gradient. (A divide factor of 1 would need PREMUL_SUM, which gloo lacks.)

    ``offload``: FSDP2's CPUOffloadPolicy keeps the sharded parameters and gradients in host memory
    (copied to the device layer by layer for compute), so the optimizer step and its state live on
    the host too."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    kwargs = {"mp_policy": policy, "reshard_after_forward": reshard_after_forward,
              "offload_policy": CPUOffloadPolicy(pin_memory=pin_memory) if offload else OffloadPolicy()}
    from rlcamp.models.families import decoder_layers

    units = size_based_units(model, min_num_params) if min_num_params > 0 else decoder_layers(model)
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    if forward_prefetch:
        for unit, following in zip(units, units[1:]):
            unit.set_modules_to_forward_prefetch([following])


def iter_full_state(model):
    """(name, full tensor) one at a time (``rollout.layered_summon``): the whole state dict never
    exists at once on any rank. Collective: every rank must iterate to the end, in the same order."""
    for name, value in model.state_dict().items():
        if hasattr(value, "full_tensor"):
            if value.device.type == "cpu" and dist.get_backend() == "nccl":  # offloaded shards: NCCL gathers on GPU
                value = value.to(torch.device("cuda", torch.cuda.current_device()))
            value = value.full_tensor()
        yield name, value


def grad_scale(model) -> float:
    """What a loss is multiplied by before backward so FSDP's average over ranks is the global sum."""
    return float(world_size()) if is_sharded(model) else 1.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for a rendezvous or a local service)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_process_group(backend: str) -> None:
    """A one-rank process group for a single in-process device that still wants FSDP (offload)."""
    if not dist.is_initialized():
        init_distributed(0, 1, "127.0.0.1", free_port(), backend, 1800)


def needs_sharding(fsdp_config) -> bool:
    return world_size() > 1 or fsdp_config.param_offload or fsdp_config.offload_policy


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory of this process, or its peak resident host memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """HF-named full weights; with ``rank0_only`` other ranks get an empty dict (collective either way)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=rank0_only))


def load_full_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Rank 0's full weights into every rank's shards (collective)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def _sharded_state(model, optimizer, weights: bool, optimizer_state: bool) -> dict:
    """This rank's shards of the weights and/or optimizer state, as torch.distributed.checkpoint wants them."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    return {**({"model": model_state} if weights else {}), **({"optimizer": optim_state} if optimizer_state else {})}


def save_sharded(path, model, optimizer, weights: bool, optimizer_state: bool) -> None:
    """Each rank writes its own shards (torch.distributed.checkpoint); collective."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_state(model, optimizer, weights, optimizer_state), checkpoint_id=str(path))


def load_sharded(path, model, optimizer, weights: bool, optimizer_state: bool) -> None:
    """Each rank reads back its own shards, in place; collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = _sharded_state(model, optimizer, weights, optimizer_state)
    dcp.load(state, checkpoint_id=str(path))
    if weights:
        set_model_state_dict(model, state["model"])
    if optimizer_state:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
