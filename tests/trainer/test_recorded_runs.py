"""Before and after: tiny runs' metrics, step by step, against a recording made on an earlier tree.

A refactor that should not change what is computed (the step as a pipeline, the declared batch,
the split masks) must give the same numbers: every metric a recorded run logged (timings and
memory excepted) is logged again, within fp tolerance, and the responses are the same tokens
(their lengths and the rewards they earned match exactly).

    RLCAMP_RECORD=1 pytest tests/trainer/test_recorded_runs.py   # rewrite the recording (says which tree)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from rlcamp.models.tiny import build_tiny_model
from rlcamp.trainer.main_ppo import main
from tests.helpers import make_tiny_setup, tiny_run_overrides

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "recorded_runs.json"
# the same reward for every tree: varies with the response, so advantages and gradients are non-zero
LENGTH_REWARD = "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n" \
                "    return len(solution_str) / 10.0\n"

# each run switches on a different set of stages and modes
RUNS = {
    "gae_kl_loss": {"actor_rollout_ref.actor.use_kl_loss": True},
    "grpo_kl_in_reward_pf_ppo": {
        "algorithm.adv_estimator": "grpo", "algorithm.use_kl_in_reward": True, "algorithm.kl_ctrl.type": "adaptive",
        "algorithm.kl_ctrl.target_kl": 0.01, "algorithm.kl_ctrl.horizon": 100, "algorithm.use_pf_ppo": True,
        "actor_rollout_ref.rollout.n": 4},
    "rloo_bypass_critic_warmup": {
        "algorithm.adv_estimator": "rloo", "algorithm.rollout_correction.bypass_mode": True,
        "actor_rollout_ref.rollout.calculate_log_probs": True, "trainer.critic_warmup": 1, "actor_rollout_ref.rollout.n": 4},
    "reinforce_pp_seq_mean": {
        "algorithm.adv_estimator": "reinforce_plus_plus", "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-sum",
        "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff": 0.01},
    "gae_reward_model_async": {"reward_model.enable": True, "reward_model.use_reward_loop": False,
                               "reward_model.launch_reward_fn_async": True},
    # two Ray workers: balanced by tokens, then PF-PPO resamples the balanced batch
    "gae_two_ranks_balance_pf_ppo": {
        "trainer.n_gpus_per_node": 2, "ray_init.num_cpus": 4, "trainer.stage_timeout_s": 300,
        "trainer.balance_batch": True, "algorithm.use_pf_ppo": True},
}
VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/time_per_step", "perf/throughput", "perf/gen_tokens_per_s")
EXACT = ("response_length/", "critic/score/", "prompt_length/", "perf/total_num_tokens", "perf/generated_tokens")


def comparable(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not k.startswith(VOLATILE)
            and not (k.startswith("perf/") and k.endswith(("_tokens_per_s", "_memory_gb")))}


def run_metrics(tmp_path: Path, name: str) -> list[dict[str, float]]:
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "reward.py").write_text(LENGTH_REWARD)
    run = tmp_path / name
    settings = {"custom_reward_function.path": tmp_path / "reward.py", "trainer.test_freq": 3, **RUNS[name]}
    if settings.get("reward_model.enable"):
        settings["reward_model.model.path"] = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    overrides = [o for o in tiny_run_overrides(model, data, run, **settings) if "reward_kwargs" not in o]
    try:
        assert main(overrides) == 0
    finally:
        if "ray_init.num_cpus" in settings:
            import ray

            ray.shutdown()
    return [comparable(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def recorded() -> dict:
    return json.loads(RECORDING.read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_metrics_match_the_recording(tmp_path, name):
    rows = run_metrics(tmp_path, name)
    if os.environ.get("RLCAMP_RECORD"):
        data = recorded() if RECORDING.exists() else {"runs": {}}
        tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RECORDING.parent).stdout.strip()
        data["recorded_on"] = f"tree {tree} (python {os.sys.version.split()[0]})"
        data["runs"][name] = rows
        RECORDING.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {name}")
    expected = recorded()["runs"][name]
    # a reward model's score is a network output: its last bits follow the CPU's kernels (AVX2 or AMX)
    exact = EXACT if not RUNS[name].get("reward_model.enable") else tuple(p for p in EXACT if p != "critic/score/")
    assert len(rows) == len(expected), "a different number of logged steps"
    for step, (got, want) in enumerate(zip(rows, expected), start=1):
        missing = sorted(set(want) - set(got))
        assert not missing, f"step {step}: metrics no longer logged: {missing}"
        for key, value in want.items():
            if key.startswith(exact):
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), f"step {step}: {key}"
            else:
                assert math.isclose(got[key], value, rel_tol=1e-4, abs_tol=1e-5), \
                    f"step {step}: {key} = {got[key]}, recorded {value}"
