"""A Ray worker process SIGKILLed in the middle of a run: named, torn down, restarted (trainer.max_restarts)."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from rlcamp.controller.ray_group import rank_processes as ray_workers
from tests.helpers import assert_same_metrics, make_tiny_setup, read_metrics, start_trainer, tiny_run_overrides

TWO_RANKS = {"trainer.n_gpus_per_node": 2, "ray_init.num_cpus": 4, "trainer.stage_timeout_s": 120,
             "trainer.save_freq": 1, "actor_rollout_ref.rollout.temperature": 1.0}


def kill_a_worker_after(run: Path, proc, log_path: Path, step: int, timeout_s: float = 300.0) -> int:
    """SIGKILL one rank once the run has a checkpoint at ``step``; its pid."""
    marker = run / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + timeout_s
    while not (marker.exists() and int(marker.read_text() or 0) >= step):
        assert proc.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.05)
    workers = ray_workers(proc.pid)
    assert workers, "no Ray worker process found"
    victim = workers[-1]
    victim.send_signal(signal.SIGKILL)
    return victim.pid


@pytest.mark.slow
def test_a_killed_worker_is_named_and_restarted_and_the_run_ends_as_a_straight_one(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    total = 5
    straight = tmp_path / "straight"
    with open(tmp_path / "straight.log", "w") as log:
        assert start_trainer(tiny_run_overrides(model, data, straight, **TWO_RANKS,
                                                **{"trainer.total_training_steps": total}), log).wait() == 0

    run, log_path = tmp_path / "run", tmp_path / "run.log"
    overrides = tiny_run_overrides(model, data, run, **TWO_RANKS, **{"trainer.total_training_steps": total,
                                                                     "trainer.max_restarts": 1})
    with open(log_path, "w") as log:
        proc = start_trainer(overrides, log)
        victim = kill_a_worker_after(run, proc, log_path, step=2)
        assert proc.wait(timeout=600) == 0, log_path.read_text()[-4000:]
    out = log_path.read_text()
    died = re.search(r"(\w+): rank (\d) \(node [\d.]+, pid (\d+)\) died during stage '(\w+)'", out)
    assert died, out[-4000:]
    assert int(died.group(3)) == victim
    assert "restarting the workers (1 of trainer.max_restarts=1), resuming from" in out
    a, b = read_metrics(straight), read_metrics(run)
    assert set(a) == set(b) == set(range(1, total + 1))
    assert_same_metrics(a, b, range(1, total + 1))


@pytest.mark.slow
def test_without_restarts_a_killed_worker_ends_the_run_with_its_name(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run, log_path = tmp_path / "run", tmp_path / "run.log"
    overrides = tiny_run_overrides(model, data, run, **TWO_RANKS, **{"trainer.total_training_steps": 20})
    with open(log_path, "w") as log:
        proc = start_trainer(overrides, log)
        victim = kill_a_worker_after(run, proc, log_path, step=1)
        start = time.monotonic()
        assert proc.wait(timeout=120) == 1, log_path.read_text()[-4000:]
        detected = time.monotonic() - start
    out = log_path.read_text()
    assert re.search(rf"rlcamp: the run stopped: \w+: rank \d \(node [\d.]+, pid {victim}\) died during stage", out)
    assert "trainer.max_restarts=K restarts the workers" in out
    assert detected < 60  # far inside trainer.stage_timeout_s=120: the death is seen, not waited out
