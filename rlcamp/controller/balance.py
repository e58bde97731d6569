"""Sequence balancing: even token counts across data-parallel ranks, and token-budget micro batches.

- ``balanced_partitions``: split items into k groups of (almost) equal size whose token sums are as
  even as possible, with the Karmarkar-Karp largest differencing method (Karmarkar & Karp 1982):
  repeatedly merge the two partial partitions whose spread is largest, pairing the heaviest group
  of one with the lightest of the other, so their differences cancel.
- ``token_budget_micro_batches``: micro batches filled by a token budget instead of a fixed count
  (``use_dynamic_bsz``). Sequences are sorted by length so each micro batch holds similar lengths
  (little padding once trimmed), and a micro batch's padded cost (rows x longest) stays within the
  budget. The loss of every micro batch is normalised by the whole mini batch's counts, so the
  gradient is the same however the batch is cut.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import torch

from rlcamp.batch import Batch


def balanced_partitions(lengths: Sequence[int], k: int, equal_size: bool = True) -> list[list[int]]:
    """k lists of item indices with near-equal length sums (and equal counts when ``equal_size``)."""
    n = len(lengths)
    if k <= 0 or n < k:
        raise ValueError(f"cannot split {n} items into {k} non-empty partitions")
    if equal_size and n % k:
        raise ValueError(f"{n} items do not split into {k} partitions of equal size")
    order = sorted(range(n), key=lambda i: lengths[i])
    # each state: k groups as (sum, [indices]); the heap pops the largest spread first
    states = []
    if equal_size:  # seed with k items at a time so every group receives one item per round
        for start in range(0, n, k):
            groups = sorted(([lengths[i], [i]] for i in order[start:start + k]), key=lambda g: g[0])
            heapq.heappush(states, (-(groups[-1][0] - groups[0][0]), start, groups))
    else:
        for i in order:
            groups = [[lengths[i], [i]]] + [[0, []] for _ in range(k - 1)]
            groups.sort(key=lambda g: g[0])
            heapq.heappush(states, (-lengths[i], i, groups))
    while len(states) > 1:
        _, tag, a = heapq.heappop(states)
        _, _, b = heapq.heappop(states)
        # heaviest of one with lightest of the other
        merged = [[a[j][0] + b[k - 1 - j][0], a[j][1] + b[k - 1 - j][1]] for j in range(k)]
        merged.sort(key=lambda g: g[0])
        heapq.heappush(states, (-(merged[-1][0] - merged[0][0]), tag, merged))
    groups = states[0][2]
    return [sorted(g[1]) for g in groups]


def balance_order(lengths: Sequence[int], world_size: int) -> torch.Tensor:
    """A permutation such that consecutive equal chunks (one per rank) have near-equal token sums."""
    parts = balanced_partitions(lengths, world_size, equal_size=True)
    return torch.tensor([i for part in parts for i in part], dtype=torch.long)


def balance_batch(batch: Batch, world_size: int) -> tuple[Batch, torch.Tensor]:
    """The batch reordered for even tokens per rank, and the permutation that restores the order."""
    lengths = (batch["attention_mask"].sum(-1) + batch["response_mask"].sum(-1)).tolist()
    order = balance_order(lengths, world_size)
    return batch.index(order), torch.argsort(order)


def token_budget_micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Groups of indices whose padded cost (count x longest) fits ``max_tokens``, similar lengths together.

    A sequence longer than the budget gets a micro batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(i)  # the group's first item is its longest
        else:
            groups.append([i])
    return groups
