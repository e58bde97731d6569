"""Split a batch across data-parallel ranks and gather the results, in the original order.

Each rank has a ``Place`` for a method (``rlcamp.engines.base.Place``): which of the ``dp_size``
parts of the batch it is given and whether its result is the one kept. Ranks of one Ulysses,
tensor- or pipeline-parallel group share a part; one of them returns it. A method outside the
training engine (generation) is plain data parallel over all ranks (``plain``). The same
functions serve every transport (in-process, Ray): only how the method call reaches a worker differs.
"""

from __future__ import annotations

from typing import Any, Sequence

from rlcamp.batch import Batch
from rlcamp.engines.base import Place


def plain(world_size: int) -> list[Place]:
    """Every rank its own part, every result kept."""
    return [Place(rank, world_size) for rank in range(world_size)]


def consecutive(world_size: int, group_size: int) -> list[Place]:
    """Groups of ``group_size`` consecutive ranks share a part; the first of each returns it."""
    return [Place(rank // group_size, world_size // group_size, rank % group_size == 0) for rank in range(world_size)]


def places_for(method: str, placements: Sequence[dict[str, Place]]) -> list[Place]:
    """Each rank's place for ``method``: what its worker's ``placements()`` says, else plain data parallel."""
    world = len(placements)
    return [mine.get(method, Place(rank, world)) for rank, mine in enumerate(placements)]


def engine_dp_size(placements: Sequence[dict[str, Place]]) -> int:
    """How many data-parallel parts the training engine's methods split a batch into."""
    sizes = {place.dp_size for mine in placements for place in mine.values()}
    return max(sizes) if sizes else len(placements)


def _check(places: Sequence[Place]) -> int:
    dp = places[0].dp_size
    returning = sorted(p.dp_rank for p in places if p.returns)
    if any(p.dp_size != dp for p in places) or returning != list(range(dp)):
        raise ValueError(f"inconsistent data-parallel places {list(places)}: every part 0..{dp - 1} needs exactly "
                         "one rank that returns it")
    return dp


def split_for_ranks(batch: Batch, places: Sequence[Place]) -> list[Batch]:
    """One part per rank: rank r gets part ``places[r].dp_rank`` of ``dp_size`` equal parts."""
    dp = _check(places)
    if len(batch) % dp:
        raise ValueError(f"a batch of {len(batch)} rows does not split evenly over {dp} data-parallel ranks")
    parts = batch.chunk(dp)
    return [parts[p.dp_rank] for p in places]


def gather(results: Sequence[Any], places: Sequence[Place] | None = None) -> Any:
    """The kept results in data-parallel order: batches concatenated, metric dicts averaged, None stays None."""
    results = list(results)
    if places is not None:
        _check(places)
        results = [results[i] for _, i in sorted((p.dp_rank, i) for i, p in enumerate(places) if p.returns)]
    first = results[0]
    if isinstance(first, Batch):
        return Batch.concat(results)
    if isinstance(first, dict):
        return {k: sum(r[k] for r in results) / len(results) for k in first}
    if first is None:
        return None
    raise TypeError(f"cannot gather results of type {type(first).__name__}")
