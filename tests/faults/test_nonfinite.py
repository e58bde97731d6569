"""NaN and inf in training: real NaNs, from a reward function that returns them, through the real pipeline."""

from __future__ import annotations

import math

import pytest

from rlcamp.trainer.faults import NonFiniteGuard
from rlcamp.trainer.main_ppo import main
from tests.helpers import make_tiny_setup, read_metrics, tiny_run_overrides

# 8 prompts x 2 samples: calls 16-31 are step 2's; ``FROM``/``UNTIL`` bound the calls that return NaN
NAN_REWARD = '''
CALLS = [0]

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    CALLS[0] += 1
    if {FROM} <= CALLS[0] - 1 < {UNTIL}:
        return float("nan")
    return float(solution_str.strip().startswith("7"))
'''


def _run(tmp_path, first: int, until: int, **extra) -> tuple[int, dict]:
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "nan.py").write_text(NAN_REWARD.replace("{FROM}", str(first)).replace("{UNTIL}", str(until)))
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(model, data, run, **{
        "custom_reward_function.path": tmp_path / "nan.py", "trainer.total_training_steps": 4, **extra})
        if "reward_kwargs" not in o]
    code = main(overrides)
    return code, read_metrics(run)


def test_a_nan_reward_skips_that_steps_updates_and_the_run_goes_on(tmp_path):
    code, rows = _run(tmp_path, 16, 17)  # one sample of step 2
    assert code == 0
    # the actor's advantages are whitened over the batch: every one is NaN, both mini batches skip; the
    # critic's returns are per sample: only the mini batch holding that sample skips
    assert rows[2]["actor/nonfinite_grad_steps"] == 2 and rows[2]["critic/nonfinite_grad_steps"] == 1
    assert math.isfinite(rows[2]["critic/grad_norm"])  # the mean over the step that was not skipped
    assert math.isnan(rows[2]["actor/grad_norm"]) and rows[2]["training/nonfinite_steps_in_a_row"] == 1
    for step in (1, 3, 4):
        assert rows[step]["actor/nonfinite_grad_steps"] == 0 and rows[step]["training/nonfinite_steps_in_a_row"] == 0
        assert math.isfinite(rows[step]["actor/grad_norm"]) and math.isfinite(rows[step]["actor/pg_loss"])
        assert math.isfinite(rows[step]["critic/vf_loss"])


def test_nan_in_a_row_stops_the_run_naming_the_step_and_stage(tmp_path, capsys):
    code, rows = _run(tmp_path, 16, 10**9, **{"trainer.max_consecutive_nonfinite_steps": 2})
    assert code == 2
    err = capsys.readouterr().err
    assert "rlcamp: step 3: a NaN or inf gradient in 2 steps in a row (trainer.max_consecutive_nonfinite_steps=2)" in err
    assert "update_critic: 2 optimizer step(s) skipped, update_actor: 2 optimizer step(s) skipped" in err  # all NaN
    assert max(rows) == 3  # the step that stopped the run is logged


def test_the_guard_counts_only_steps_in_a_row():
    guard = NonFiniteGuard(limit=2)
    bad, good = {"actor/nonfinite_grad_steps": 1.0}, {"actor/nonfinite_grad_steps": 0.0}
    for metrics in (dict(bad), dict(good), dict(bad)):
        guard.check(1, guard.count(metrics), lambda: None)
    assert guard.in_a_row == 1
    with pytest.raises(Exception, match="2 steps in a row"):
        guard.check(4, guard.count(dict(bad)), lambda: None)
    assert NonFiniteGuard(limit=0).check(1, {"update_actor": 1.0}, lambda: None) is None


@pytest.mark.slow
def test_a_nan_on_one_rank_skips_the_step_on_both(tmp_path):
    """GRPO over 2 Ray ranks: the NaN sample's group lives on rank 0 only, its gradient reaches both
    ranks' shards through the reduce-scatter, and both skip; a rank that stepped would show as 0.5."""
    import ray

    try:
        code, rows = _run(tmp_path, 16, 17, **{"algorithm.adv_estimator": "grpo", "trainer.n_gpus_per_node": 2,
                                               "ray_init.num_cpus": 4, "trainer.stage_timeout_s": 120})
    finally:
        ray.shutdown()
    assert code == 0
    assert rows[2]["actor/nonfinite_grad_steps"] == 1.0  # the NaN group's mini batch, on both ranks
    assert all(rows[s]["actor/nonfinite_grad_steps"] == 0 for s in (1, 3, 4))
    assert math.isfinite(rows[4]["actor/pg_loss"])
