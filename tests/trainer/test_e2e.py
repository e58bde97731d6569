"""End-to-end runs of the trainer on tiny models: a short run, learning, checkpoints and exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from rlcamp.trainer.main_ppo import main
from tests.helpers import make_tiny_setup, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[2]
SEVEN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """1 for an answer that starts with the digit 7."""
    return float(solution_str.strip().startswith("7"))
'''


def read_metrics(run_dir: Path) -> dict[int, dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row  # a resumed run's rows replace the killed run's
    return rows


def test_short_run_writes_config_metrics_and_loadable_checkpoints(tmp_path, capsys):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 2, "trainer.total_training_steps": 3,
                                                         "trainer.logger": "[console,file]"})) == 0
    out = capsys.readouterr().out
    assert "step    3/3 [====================] 100%" in out
    assert (run / "resolved_config.yaml").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("global_step")) == ["global_step_2", "global_step_3"]
    assert (run / "latest_checkpointed_iteration.txt").read_text() == "3"
    AutoModelForCausalLM.from_pretrained(run / "global_step_3" / "actor" / "huggingface")
    AutoModelForTokenClassification.from_pretrained(run / "global_step_3" / "critic" / "huggingface")
    rows = read_metrics(run)
    assert set(rows) == {1, 2, 3} and "val/acc" in rows[3]
    for key in ("timing_s/generate", "timing_s/update_actor", "perf/generate_tokens_per_s", "actor/lr",
                "response_length/mean", "critic/returns/mean", "rollout/log_prob_diff_max"):
        assert key in rows[1], key


def test_keep_last_checkpoints(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 1, "trainer.total_training_steps": 4,
                                                         "trainer.max_actor_ckpt_to_keep": 2,
                                                         "trainer.max_critic_ckpt_to_keep": 1})) == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("global_step")) == ["global_step_3", "global_step_4"]
    assert not (run / "global_step_3" / "critic").exists() and (run / "global_step_4" / "critic").exists()


def test_tiny_model_learns_to_answer_seven(tmp_path):
    """From chance to > 90% greedy accuracy on a trivially learnable reward, well within a minute."""
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "seven.py").write_text(SEVEN)
    run = tmp_path / "run"
    start = time.monotonic()
    overrides = tiny_run_overrides(model, data, run, **{
        "custom_reward_function.path": tmp_path / "seven.py", "data.max_response_length": 2,
        "actor_rollout_ref.rollout.n": 16, "data.train_batch_size": 8, "actor_rollout_ref.actor.ppo_mini_batch_size": 8,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 128, "critic.ppo_micro_batch_size_per_gpu": 128,
        "actor_rollout_ref.actor.optim.lr": 1e-2, "critic.optim.lr": 1e-2, "trainer.total_training_steps": 40,
        "trainer.test_freq": 10, "trainer.val_before_train": True})
    overrides = [o for o in overrides if "reward_kwargs" not in o]
    assert main(overrides) == 0
    rows = read_metrics(run)
    assert rows[0]["val/acc"] < 0.1
    assert rows[40]["val/acc"] > 0.9
    assert time.monotonic() - start < 60


def _run(overrides, log):
    return subprocess.Popen([sys.executable, "-m", "rlcamp.trainer.main_ppo", *overrides], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize("kill_after", [3, 4])  # mid-epoch (2 steps per epoch) and at an epoch boundary
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, kill_after):
    model, data = make_tiny_setup(tmp_path)
    total = 6
    common = {"trainer.save_freq": 1, "trainer.total_training_steps": total, "trainer.resume_mode": "auto",
              "actor_rollout_ref.rollout.temperature": 1.0, "trainer.val_before_train": False}
    straight = tmp_path / "straight"
    assert main(tiny_run_overrides(model, data, straight, **common)) == 0

    broken = tmp_path / "broken"
    overrides = tiny_run_overrides(model, data, broken, **common)
    with open(tmp_path / "killed.log", "w") as log:
        proc = _run(overrides, log)
        marker = broken / "latest_checkpointed_iteration.txt"
        deadline = time.monotonic() + 120
        while not (marker.exists() and int(marker.read_text() or 0) >= kill_after):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = int(marker.read_text())
    assert killed_at < total
    with open(tmp_path / "resumed.log", "w") as log:
        assert _run(overrides, log).wait() == 0
    assert f"resumed from {broken / f'global_step_{killed_at}'}" in (tmp_path / "resumed.log").read_text()

    a, b = read_metrics(straight), read_metrics(broken)
    assert set(a) == set(b) == set(range(1, total + 1))
    for step in range(1, total + 1):
        for key, value in a[step].items():
            if key.startswith(("timing_s/", "perf/")) and key != "perf/total_tokens":
                continue
            assert b[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)


def test_val_only_validates_and_trains_nothing(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.val_only": True,
                                                         "trainer.val_before_train": False})) == 0
    rows = read_metrics(run)
    assert list(rows) == [0] and "val/acc" in rows[0]
    assert not list(run.glob("global_step_*"))
