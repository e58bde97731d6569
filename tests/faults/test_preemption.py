"""Preemption: real SIGTERM / SIGINT to a real training process (rlcamp.trainer.faults)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rlcamp.trainer.faults import Interrupted, StopSignals
from tests.helpers import assert_same_metrics, make_tiny_setup, read_metrics, start_trainer, tiny_run_overrides

SLOW_REWARD = '''
import time

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    time.sleep({sleep})  # a step that takes long enough to be interrupted inside
    return float(solution_str.strip().startswith("7"))
'''


def test_the_first_signal_asks_the_second_stops():
    before = signal.getsignal(signal.SIGTERM)  # another library's (Ray's) when earlier tests started it
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGINT)
    assert caught.value.exit_code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are given back


def test_the_grace_period_stops_a_step_that_does_not_end():
    with StopSignals(grace_s=0.05) as stop, pytest.raises(Interrupted, match="preemption_grace_s=0.05"):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        time.sleep(5)  # the timer's signal interrupts this


def _wait_for(condition, proc, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)


def _logged_steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_signal_saves_at_the_step_boundary_and_the_resumed_run_equals_a_straight_one(tmp_path, signum):
    model, data = make_tiny_setup(tmp_path)
    total = 5
    common = {"trainer.total_training_steps": total, "actor_rollout_ref.rollout.temperature": 1.0}  # save_freq=-1
    straight = tmp_path / "straight"
    overrides = tiny_run_overrides(model, data, straight, **common)
    with open(tmp_path / "straight.log", "w") as log:
        assert start_trainer(overrides, log).wait() == 0

    run, log_path = tmp_path / "run", tmp_path / "stopped.log"
    overrides = tiny_run_overrides(model, data, run, **common)
    with open(log_path, "w") as log:
        proc = start_trainer(overrides, log)
        _wait_for(lambda: _logged_steps(run) >= 2, proc, log_path)
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    out = log_path.read_text()
    stopped_at = int((run / "latest_checkpointed_iteration.txt").read_text())
    assert 2 <= stopped_at < total
    name = signal.Signals(signum).name
    assert f"rlcamp: {name} received" in out
    assert f"stopped by {name} after step {stopped_at} of {total}" in out
    assert "resume with trainer.resume_mode=auto" in out
    assert _logged_steps(run) == stopped_at  # nothing trained past the checkpoint

    with open(tmp_path / "resumed.log", "w") as log:
        assert start_trainer(overrides, log).wait() == 0
    assert f"resumed from {run / f'global_step_{stopped_at}'}" in (tmp_path / "resumed.log").read_text()
    a, b = read_metrics(straight), read_metrics(run)
    assert set(a) == set(b) == set(range(1, total + 1))
    assert_same_metrics(a, b, range(1, total + 1))


def _slow_run(tmp_path: Path, sleep: float, **extra) -> tuple[Path, list[str]]:
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_REWARD.replace("{sleep}", str(sleep)))
    run = tmp_path / "run"
    overrides = tiny_run_overrides(model, data, run, **{
        "trainer.total_training_steps": 20, "trainer.save_freq": 1, "custom_reward_function.path": tmp_path / "slow.py",
        **extra})
    return run, [o for o in overrides if "reward_kwargs" not in o]


def _stop_twice(run: Path, overrides: list[str], log_path: Path, second) -> tuple[int, str]:
    """Start the run, wait for its first checkpoint, send SIGINT, then ``second(proc)``; the exit status."""
    with open(log_path, "w") as log:
        proc = start_trainer(overrides, log)
        _wait_for(lambda: (run / "latest_checkpointed_iteration.txt").exists(), proc, log_path)
        proc.send_signal(signal.SIGINT)
        _wait_for(lambda: "SIGINT received" in log_path.read_text(), proc, log_path)
        second(proc)
        code = proc.wait(timeout=60)
    return code, log_path.read_text()


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_the_last_checkpoint_still_resumes(tmp_path):
    run, overrides = _slow_run(tmp_path, sleep=0.5)  # 16 samples a step: ~8 s of scoring
    start = time.monotonic()
    code, out = _stop_twice(run, overrides, tmp_path / "stopped.log", lambda p: p.send_signal(signal.SIGTERM))
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert time.monotonic() - start < 60
    last = int((run / "latest_checkpointed_iteration.txt").read_text())
    assert f"stopped at once: a second signal (SIGTERM); the last complete checkpoint is {run / f'global_step_{last}'}" \
        in out
    # the resumed run (a short one now) starts from that checkpoint and clears what the stop left half written
    resume = [o for o in overrides if not o.startswith(("trainer.total_training_steps=", "custom_reward_function"))]
    with open(tmp_path / "resumed.log", "w") as log:
        assert start_trainer(resume + [f"trainer.total_training_steps={last + 1}"], log).wait() == 0
    assert f"resumed from {run / f'global_step_{last}'}" in (tmp_path / "resumed.log").read_text()
    assert not list(run.glob(".global_step_*.tmp"))
    assert (run / f"global_step_{last + 1}" / "trainer_state.pt").exists()


@pytest.mark.slow
def test_the_grace_period_ends_a_run_whose_step_outlasts_it(tmp_path):
    run, overrides = _slow_run(tmp_path, sleep=0.5, **{"trainer.preemption_grace_s": 1.0})
    code, out = _stop_twice(run, overrides, tmp_path / "stopped.log", lambda p: None)
    assert code == 128 + signal.SIGINT, out[-3000:]
    assert "stopped at once: trainer.preemption_grace_s=1 s ran out before the step ended" in out


def test_preemption_grace_must_be_positive():
    from rlcamp.config import ConfigError, build_config, resolve

    with pytest.raises(ConfigError, match=r"trainer.preemption_grace_s=0.0 must be positive"):
        resolve(build_config(["trainer.n_gpus_per_node=1", "trainer.preemption_grace_s=0"]))
