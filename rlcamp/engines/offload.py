"""A role's weights in host memory between uses (``megatron.param_offload``), on an accelerator.

The device memory of every parameter is freed after a use and restored before the next, as FSDP does it:
each storage is copied to (pinned) host memory and resized to 0, later resized back and copied in. The
tensors themselves are never replaced, so every view of them (the optimizer's plain slices of the
DTensors, a pipeline stage's named tensors, tied weights) sees the weights come back without being told.
On the CPU it would only copy host memory to host memory: the config layer lists the key as without
effect there, and the engine is built without it (tests build it on the CPU to check the round trip).
"""

from __future__ import annotations

from typing import Iterable

import torch


class HostOffload:
    def __init__(self, tensors: Iterable[torch.Tensor], device: torch.device):
        storages = {}
        for tensor in tensors:
            storage = tensor.untyped_storage()
            storages.setdefault(storage.data_ptr(), storage)  # tied weights and views: one storage
        self.storages = list(storages.values())
        self.pin = device.type == "cuda"
        self.host: list[torch.UntypedStorage] | None = None

    def offload(self) -> None:
        """Copy every storage to host memory and free it on the device (a no-op when already there)."""
        if self.host is not None:
            return
        host = []
        for storage in self.storages:
            copy = torch.empty(storage.nbytes(), dtype=torch.uint8, pin_memory=self.pin).untyped_storage()
            copy.copy_(storage)
            host.append(copy)
        for storage in self.storages:  # only once every copy is made
            storage.resize_(0)
        self.host = host

    def onload(self) -> None:
        """Give every storage its device memory back and copy the weights in (a no-op when resident)."""
        if self.host is None:
            return
        for storage, copy in zip(self.storages, self.host):
            storage.resize_(copy.nbytes())
            storage.copy_(copy, non_blocking=self.pin)
        self.host = None


def own_storage(module: torch.nn.Module) -> None:
    """Give every weight of ``module`` still in memory it cannot resize (a safetensors file mapped into
    memory, on the CPU) a copy of its own, so that ``HostOffload`` can free it. Call it before anything takes
    views of the weights."""
    with torch.no_grad():
        for param, local in zip(module.parameters(), local_tensors(module)):
            if not local.untyped_storage().resizable():
                if local is not param:
                    raise RuntimeError("param_offload: a tensor-parallel shard is not resizable; it should have "
                                       "been allocated by its split")
                param.data = param.data.clone()


def local_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors that hold ``module``'s parameters on this rank (a DTensor's local shard)."""
    with torch.no_grad():
        return [p.to_local() if hasattr(p, "to_local") else p for p in module.parameters()]
