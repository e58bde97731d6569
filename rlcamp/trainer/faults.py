"""How the driver meets faults: preemption signals, and gradients that stay NaN or inf.

Preemption: SIGTERM or SIGINT to the driver ends the run at the next step boundary, with a checkpoint.

Clusters preempt by signal: Slurm and Kubernetes send SIGTERM and, a grace period later, SIGKILL; a
terminal sends SIGINT. The first signal asks the loop to stop after the step in progress; the
trainer saves a checkpoint there and the run exits 0, to be continued with trainer.resume_mode=auto.
A second signal, or ``trainer.preemption_grace_s`` running out before the step ends, stops the run at
once: a checkpoint being written stays a temporary folder and the last complete one remains the
one a resume loads (``rlcamp.trainer.checkpoint.commit`` moves the marker only after the rename).
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """The run stops at once (a second signal, or the grace period ran out). A BaseException, as
    KeyboardInterrupt is, so that no ``except Exception`` on the way up swallows it."""

    def __init__(self, signum: int, why: str):
        super().__init__(why)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class StopSignals:
    """Catches SIGTERM and SIGINT while active (a ``with`` block in the main thread); ``requested``
    is the first signal's name once one came."""

    def __init__(self, grace_s: float | None = None):
        self.grace_s = grace_s
        self.requested: str | None = None
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self._expired = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            deadline = (f" (within trainer.preemption_grace_s={self.grace_s:g} s, else it stops without saving)"
                        if self.grace_s else "")
            print(f"rlcamp: {name} received: finishing the step in progress, then saving a checkpoint and "
                  f"exiting{deadline}; a second signal stops at once", flush=True)
            if self.grace_s:
                self._timer = threading.Timer(self.grace_s, self._expire, (signum,))
                self._timer.daemon = True
                self._timer.start()
            return
        why = (f"trainer.preemption_grace_s={self.grace_s:g} s ran out before the step ended" if self._expired
               else f"a second signal ({name})")
        raise Interrupted(signum, why)

    def _expire(self, signum: int) -> None:
        self._expired = True
        os.kill(os.getpid(), signum)  # handled in the main thread, where the loop can be stopped


def ignore_interrupts_in_workers() -> None:
    """In a worker process: a terminal's Ctrl-C reaches the whole process group, workers included;
    the driver alone decides when the run stops (at a step boundary, with a checkpoint)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class NonFiniteError(RuntimeError):
    """The gradients stayed NaN/inf for trainer.max_consecutive_nonfinite_steps steps in a row."""


class NonFiniteGuard:
    """Counts the steps in a row in which an update skipped optimizer steps (the engines skip a step
    whose global gradient norm is NaN or inf, on every rank alike) and stops the run at ``limit``."""

    STAGES = (("critic", "update_critic"), ("actor", "update_actor"))

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0

    def count(self, metrics: dict[str, float]) -> dict[str, float]:
        """Record this step (adds ``training/nonfinite_steps_in_a_row``); the stages that skipped, and how often."""
        skipped = {stage: metrics.get(f"{role}/nonfinite_grad_steps", 0.0) for role, stage in self.STAGES}
        skipped = {stage: n for stage, n in skipped.items() if n > 0}
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        metrics["training/nonfinite_steps_in_a_row"] = self.in_a_row
        return skipped

    def check(self, step: int, skipped: dict[str, float], last_checkpoint) -> None:
        """Raise NonFiniteError at the limit; ``last_checkpoint()`` names the run's last checkpoint."""
        if not skipped or not self.limit or self.in_a_row < self.limit:
            return
        stages = ", ".join(f"{stage}: {n:g} optimizer step(s) skipped" for stage, n in skipped.items())
        raise NonFiniteError(
            f"step {step}: a NaN or inf gradient in {self.in_a_row} steps in a row "
            f"(trainer.max_consecutive_nonfinite_steps={self.limit}); this step's {stages}, each on every rank. "
            f"The skipped steps changed no weights; the last checkpoint is {last_checkpoint() or 'none'}. Look for "
            "NaN in critic/score/* (a reward function returning NaN or inf), lower the learning rate or "
            "actor_rollout_ref.actor.grad_clip; 0 never stops")
