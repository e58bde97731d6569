"""Worker groups: call a method on every worker of a role, with the batch split by rank.

One contract (``WorkerGroup``) for every transport: ``call`` (split by each rank's place, run,
gather in order), ``call_rank0``, ``world_size``, ``dp_size``, ``shutdown`` (each worker's own
``shutdown``, then the transport's resources). ``InProcessWorkerGroup`` runs its workers in this
process (tests, laptops, one device); ``controller.ray_group.RayWorkerGroup`` one process per
device. A subclass supplies only how a method reaches its workers (``_run``).
"""

from __future__ import annotations

from typing import Any, Sequence

from rlcamp.batch import Batch
from rlcamp.controller.dispatch import (
    engine_dp_size,
    gather,
    places_for,
    split_for_ranks,
)
from rlcamp.trainer.profiling import call_stage


class WorkerGroup:
    placements: list[dict]  # each rank's worker's placements(): how its engine splits each method's batch

    @property
    def world_size(self) -> int:
        return len(self.placements)

    @property
    def dp_size(self) -> int:
        return engine_dp_size(self.placements)

    def _run(self, method: str, args_per_rank: Sequence[tuple], kwargs: dict) -> list[Any]:
        """``method(*args_per_rank[r], **kwargs)`` on every rank r; the results in rank order."""
        raise NotImplementedError

    def call(self, method: str, batch: Batch | None = None, **kwargs) -> Any:
        """``method(part, **kwargs)`` on each worker with its share of ``batch`` (or without a batch)."""
        if batch is None:
            return gather(self._run(method, [()] * self.world_size, kwargs))
        places = places_for(method, self.placements)
        parts = split_for_ranks(batch, places)
        return gather(self._run(method, [(part,) for part in parts], kwargs), places)

    def call_rank0(self, method: str, *args, **kwargs) -> Any:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Let every worker stop what it started (a rollout engine's process), then free the transport."""
        raise NotImplementedError


class InProcessWorkerGroup(WorkerGroup):
    def __init__(self, workers: list[Any]):
        if not workers:
            raise ValueError("a worker group needs at least one worker")
        self.workers = workers
        self.placements = [w.placements() for w in workers]

    def _run(self, method: str, args_per_rank: Sequence[tuple], kwargs: dict) -> list[Any]:
        return [call_stage(w, method, *args, **kwargs) for w, args in zip(self.workers, args_per_rank)]

    def call_rank0(self, method: str, *args, **kwargs) -> Any:
        return getattr(self.workers[0], method)(*args, **kwargs)

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.shutdown()
