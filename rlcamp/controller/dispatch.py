"""Split a batch across data-parallel ranks and gather the results, in the original order.

The same functions serve every transport (in-process now, Ray later): only how the method call
reaches a worker differs.
"""

from __future__ import annotations

from typing import Any, Sequence

from rlcamp.batch import Batch


def split_for_ranks(batch: Batch, world_size: int) -> list[Batch]:
    if len(batch) % world_size:
        raise ValueError(f"a batch of {len(batch)} rows does not split evenly over {world_size} data-parallel ranks")
    return batch.chunk(world_size)


def gather(results: Sequence[Any]) -> Any:
    """Batches are concatenated in rank order; metric dicts are averaged over ranks; None stays None."""
    first = results[0]
    if isinstance(first, Batch):
        return Batch.concat(results)
    if isinstance(first, dict):
        return {k: sum(r[k] for r in results) / len(results) for k in first}
    if first is None:
        return None
    raise TypeError(f"cannot gather results of type {type(first).__name__}")
