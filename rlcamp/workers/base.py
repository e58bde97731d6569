"""What every worker offers its worker group (``rlcamp.controller.worker_group``), whatever the transport."""

from __future__ import annotations

from rlcamp.trainer.profiling import Profiled


class Worker(Profiled):
    """A role as a plain class (no Ray, no process groups): the group calls its methods by name."""

    def placements(self) -> dict:
        """How the group splits each method's batch (``engines.base.Place`` by method); plain data parallel
        for the methods not named."""
        return {}

    def shutdown(self) -> None:
        """Stop what this worker started (an engine's own process); the group calls it once at the end."""
