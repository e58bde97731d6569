"""Shared builders for tests: tiny models, tiny data, the overrides of a tiny run, a sandbox service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlcamp.data.arith import write_splits
from rlcamp.models.tiny import build_tiny_model
from rlcamp.utils.dist import free_port


ROOT = Path(__file__).resolve().parents[1]


def read_metrics(run_dir: Path) -> dict[int, dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row  # a resumed run's rows replace the killed run's
    return rows


def assert_same_metrics(a: dict[int, dict], b: dict[int, dict], steps) -> None:
    """Two runs' metrics agree at ``steps`` (timings aside)."""
    for step in steps:
        for key, value in a[step].items():
            if key.startswith(("timing_s/", "timing_per_token_ms/", "perf/")) and key != "perf/total_num_tokens":
                continue
            assert b[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)


def start_trainer(overrides: list[str], log) -> subprocess.Popen:
    """``python -m rlcamp.trainer.main_ppo`` as a real process, its output to the file ``log``."""
    return subprocess.Popen([sys.executable, "-m", "rlcamp.trainer.main_ppo", *overrides], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def tiny_run_overrides(model: Path, data: Path, run_dir: Path, **extra) -> list[str]:
    """A complete tiny PPO run: 8 prompts x 2 samples per step, 2 steps per epoch (16 train prompts)."""
    settings = {
        "actor_rollout_ref.model.path": model, "data.train_files": data / "train.parquet",
        "data.val_files": data / "test.parquet", "data.train_batch_size": 8, "data.max_prompt_length": 64,
        "data.max_response_length": 8, "actor_rollout_ref.rollout.n": 2,
        "actor_rollout_ref.actor.ppo_mini_batch_size": 4, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 4,
        "critic.ppo_micro_batch_size_per_gpu": 4, "actor_rollout_ref.actor.optim.lr": 1e-3,
        "critic.optim.lr": 1e-3, "actor_rollout_ref.rollout.dtype": "fp32",
        "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "fp32",
        "critic.model.fsdp_config.mixed_precision.param_dtype": "fp32",
        "trainer.n_gpus_per_node": 1, "trainer.device": "cpu", "trainer.total_training_steps": 3,
        "trainer.default_local_dir": run_dir, "trainer.logger": "[]", "trainer.val_before_train": False,
        "+custom_reward_function.reward_kwargs.format_score": 0.1,
        # compiling the full-logits helpers costs each process ~7 s (more in a 1-core Ray worker);
        # tests/models/test_forward.py checks the compiled helpers against eager ones
        "actor_rollout_ref.actor.use_torch_compile": False,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def make_tiny_setup(root: Path, family: str = "qwen2", n_train: int = 16) -> tuple[Path, Path]:
    model = build_tiny_model(root / f"model_{family}", family)
    data = root / "data"
    if not (data / "train.parquet").exists():
        train, test = write_splits(data, n_test=100 - n_train)  # 1-digit sums: n_train train, the rest test
    return model, data


def start_service(log_path: Path, *args: str, env: dict | None = None) -> dict:
    """`rlcamp sandbox serve` on loopback with ``args``, healthy; ``["proc"]`` is its process."""
    from rlcamp.sandbox.client import wait_healthy

    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "rlcamp.cli.main", "sandbox", "serve", "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    url = f"http://127.0.0.1:{port}"
    health = wait_healthy(url, 30, proc)
    return {"url": url, "run_url": f"{url}/run_code", "pid": proc.pid, "port": port, "health": health, "proc": proc,
            "log": log}


def stop_service(svc: dict) -> int:
    svc["proc"].terminate()
    code = svc["proc"].wait(10)
    svc["log"].close()
    return code
