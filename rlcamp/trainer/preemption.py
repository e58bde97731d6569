"""Preemption: SIGTERM or SIGINT to the driver ends the run at the next step boundary, with a checkpoint.

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
