"""Split a batch across data-parallel ranks and gather the results, in the original order.

The same functions serve every transport (in-process now, Ray later): only how the method call
reaches a worker differs.
"""

from __future__ import annotations

from typing import Any, Sequence

from rlcamp.batch import Batch


def split_for_ranks(batch: Batch, world_size: int, replicas: int = 1) -> list[Batch]:
    """One part per rank. With ``replicas`` > 1 (Ulysses sequence parallelism) each group of
    ``replicas`` consecutive ranks shares one part: there are world_size / replicas data-parallel parts."""
    dp = world_size // replicas
    if len(batch) % dp:
        raise ValueError(f"a batch of {len(batch)} rows does not split evenly over {dp} data-parallel ranks")
    parts = batch.chunk(dp)
    return [parts[r // replicas] for r in range(world_size)]


def gather(results: Sequence[Any], replicas: int = 1) -> Any:
    """Batches are concatenated in rank order; metric dicts are averaged over ranks; None stays None.
    With ``replicas`` > 1 the ranks of a group returned the same thing: one of each group is kept."""
    results = list(results)[::replicas]
    first = results[0]
    if isinstance(first, Batch):
        return Batch.concat(results)
    if isinstance(first, dict):
        return {k: sum(r[k] for r in results) / len(results) for k in first}
    if first is None:
        return None
    raise TypeError(f"cannot gather results of type {type(first).__name__}")
