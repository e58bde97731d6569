"""Cutting a batch into micro batches for one pass, and putting the outputs back in order."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch

from rlcamp.batch import Batch


def micro_batches(batch: Batch, dynamic: bool, size: int | None, max_tokens: int) -> list[tuple[list[int], Batch]]:
    """(row indices, micro batch) pairs: fixed ``size`` rows, or filled by ``max_tokens`` (use_dynamic_bsz)."""
    if not dynamic:
        return [(list(range(s, min(s + size, len(batch)))), part) for s, part in zip(range(0, len(batch), size),
                                                                                     batch.split(size))]
    from rlcamp.controller.balance import token_budget_micro_batches
    from rlcamp.utils.dist import all_reduce_max

    lengths = (batch["attention_mask"].sum(-1) + batch["response_mask"].sum(-1)).tolist()
    groups = token_budget_micro_batches(lengths, max_tokens)
    # sharded forward passes are collective: every rank must run as many micro batches
    target = all_reduce_max(len(groups))
    while len(groups) < target:
        largest = max(range(len(groups)), key=lambda g: len(groups[g]))
        half = len(groups[largest]) // 2
        groups[largest:largest + 1] = [groups[largest][:half], groups[largest][half:]]
    return [(group, batch.index(group)) for group in groups]


def in_original_order(parts: list[tuple[list[int], torch.Tensor]], n: int) -> torch.Tensor:
    """Concatenate per-micro-batch outputs back into the batch's row order."""
    first = parts[0][1]
    out = first.new_zeros((n,) + tuple(first.shape[1:]))
    for rows, values in parts:
        out[rows] = values
    return out


def gather_outputs(batch_size: int, pieces: Iterable[tuple[list[int], dict]]) -> Batch:
    """A head's per-micro-batch outputs ((rows, {name: [rows, ...]}) pairs) as one batch in the batch's order,
    on the host; absent outputs (None) and the training-only ``aux_loss`` are left out."""
    parts = defaultdict(list)
    for rows, outputs in pieces:
        for key, value in outputs.items():
            if value is not None and key != "aux_loss":
                parts[key].append((rows, value.cpu()))
    return Batch({key: in_original_order(values, batch_size) for key, values in parts.items()})
