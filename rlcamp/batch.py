"""The batch that flows through a step: tensors with a leading batch dim, plus per-sample fields.

Deliberately small (select / split / concat / repeat-interleave / reorder): per-sample Python
objects (chat messages, ground truths, extra_info dicts) are first-class here, which tensordict's
non-tensor stacks make awkward and slow to index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self):
        sizes = {k: v.shape[0] for k, v in self.tensors.items()} | {k: len(v) for k, v in self.meta.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch fields disagree on the batch size: {sizes}")

    def __len__(self) -> int:
        for v in self.tensors.values():
            return v.shape[0]
        for v in self.meta.values():
            return len(v)
        return 0

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.meta

    def __getitem__(self, key: str):
        return self.tensors[key] if key in self.tensors else self.meta[key]

    def __setitem__(self, key: str, value) -> None:
        size = len(self)
        n = value.shape[0] if isinstance(value, torch.Tensor) else len(value)
        if (self.tensors or self.meta) and n != size:
            raise ValueError(f"field '{key}' has {n} rows, the batch has {size}")
        (self.tensors if isinstance(value, torch.Tensor) else self.meta)[key] = value if isinstance(value, torch.Tensor) else list(value)

    def update(self, other: "Batch | dict") -> "Batch":
        items = other.items() if isinstance(other, dict) else list(other.tensors.items()) + list(other.meta.items())
        for k, v in items:
            self[k] = v
        return self

    def select(self, *keys: str) -> "Batch":
        return Batch({k: v for k, v in self.tensors.items() if k in keys}, {k: v for k, v in self.meta.items() if k in keys})

    def index(self, idx: torch.Tensor | Sequence[int]) -> "Batch":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        idx_l = idx_t.tolist()
        return Batch({k: v[idx_t] for k, v in self.tensors.items()}, {k: [v[i] for i in idx_l] for k, v in self.meta.items()})

    def slice(self, start: int, stop: int) -> "Batch":
        return Batch({k: v[start:stop] for k, v in self.tensors.items()}, {k: v[start:stop] for k, v in self.meta.items()})

    def split(self, size: int) -> list["Batch"]:
        return [self.slice(i, i + size) for i in range(0, len(self), size)]

    def chunk(self, n: int) -> list["Batch"]:
        """n nearly equal consecutive parts (the first ones one longer when it does not divide)."""
        base, extra = divmod(len(self), n)
        out, start = [], 0
        for i in range(n):
            stop = start + base + (i < extra)
            out.append(self.slice(start, stop))
            start = stop
        return out

    @staticmethod
    def concat(batches: Sequence["Batch"]) -> "Batch":
        first = batches[0]
        return Batch({k: torch.cat([b.tensors[k] for b in batches]) for k in first.tensors},
                     {k: [x for b in batches for x in b.meta[k]] for k in first.meta})

    def repeat_interleave(self, n: int) -> "Batch":
        """Each row n times in a row (a prompt's n samples stay together)."""
        return self.index(torch.arange(len(self)).repeat_interleave(n))
