"""Worker groups: call a method on every worker of a role, with the batch split by rank.

``InProcessWorkerGroup`` runs its workers in this process (tests, laptops, one device). The Ray
group (``controller.ray_group``) implements the same ``call``.
"""

from __future__ import annotations

from typing import Any

from rlcamp.batch import Batch
from rlcamp.controller.dispatch import engine_dp_size, gather, places_for, split_for_ranks
from rlcamp.trainer.profiling import call_stage


class InProcessWorkerGroup:
    def __init__(self, workers: list[Any]):
        if not workers:
            raise ValueError("a worker group needs at least one worker")
        self.workers = workers
        # how each worker's engine splits its methods' batches (plain data parallel when it says nothing)
        self.placements = [w.placements() if hasattr(w, "placements") else {} for w in workers]

    @property
    def world_size(self) -> int:
        return len(self.workers)

    @property
    def dp_size(self) -> int:
        return engine_dp_size(self.placements)

    def call(self, method: str, batch: Batch | None = None, **kwargs) -> Any:
        """``method(part, **kwargs)`` on each worker with its share of ``batch`` (or without a batch)."""
        if batch is None:
            return gather([call_stage(w, method, **kwargs) for w in self.workers])
        places = places_for(method, self.placements)
        parts = split_for_ranks(batch, places)
        return gather([call_stage(w, method, part, **kwargs) for w, part in zip(self.workers, parts)], places)

    def call_rank0(self, method: str, *args, **kwargs) -> Any:
        return getattr(self.workers[0], method)(*args, **kwargs)

    def shutdown(self) -> None:
        """Let workers stop what they started (a rollout engine's process); the Ray group frees its
        processes and placement here."""
        for worker in self.workers:
            if hasattr(worker, "shutdown"):
                worker.shutdown()
