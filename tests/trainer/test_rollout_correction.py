"""algorithm.rollout_correction.bypass_mode: the engine's log-probs become old_log_probs, no recompute pass."""

import pytest
import torch

from rlcamp.config import ConfigError, build_config, resolve
from rlcamp.trainer.build import build_trainer
from tests.helpers import make_tiny_setup, tiny_run_overrides

BYPASS = {"algorithm.rollout_correction.bypass_mode": True, "actor_rollout_ref.rollout.calculate_log_probs": True}


def _one_step(tmp_path, name: str, **extra):
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / name, **{
        "trainer.total_training_steps": 1, "trainer.test_freq": -1, "algorithm.adv_estimator": "grpo",
        "actor_rollout_ref.rollout.n": 4, **extra})
    trainer = build_trainer(resolve(build_config(overrides), 16), tmp_path / name)
    worker = trainer.actor.workers[0]
    calls = []
    recompute = worker.compute_log_prob
    worker.compute_log_prob = lambda batch: calls.append(1) or recompute(batch)
    seen = {}
    update = worker.update_actor

    def spy(batch):
        seen["old"], seen["rollout"] = batch["old_log_probs"].clone(), batch["rollout_log_probs"].clone()
        return update(batch)

    worker.update_actor = spy
    torch.manual_seed(0)
    metrics = trainer.fit()
    params = {n: p.detach().clone() for n, p in worker.model.named_parameters()}
    trainer.shutdown()
    return metrics, calls, seen, params


def test_bypass_trains_on_rollout_log_probs_and_matches_the_recomputed_step(tmp_path):
    base, base_calls, base_seen, base_params = _one_step(tmp_path, "recompute")
    fast, fast_calls, fast_seen, fast_params = _one_step(tmp_path, "bypass", **BYPASS)
    assert base_calls and not fast_calls  # the recompute pass is skipped
    assert "timing_s/old_log_prob" in base and "timing_s/old_log_prob" not in fast
    assert torch.equal(fast_seen["old"], fast_seen["rollout"])
    # same seed, same weights: the same rollouts, and fp32 engine log-probs equal to the recomputation
    assert torch.equal(fast_seen["rollout"], base_seen["rollout"])
    torch.testing.assert_close(base_seen["old"], base_seen["rollout"], atol=1e-5, rtol=0)
    for key in ("actor/pg_loss", "actor/grad_norm"):
        assert fast[key] == pytest.approx(base[key], rel=1e-4, abs=1e-6), key
    for name, p in base_params.items():
        torch.testing.assert_close(fast_params[name], p, atol=1e-6, rtol=1e-5)
    assert "actor/entropy" in base and "actor/entropy" in fast  # the update's forward reports it instead
    assert fast["actor/entropy"] == pytest.approx(base["actor/entropy"], rel=0.05)
    assert "rollout/log_prob_diff_max" in base and "rollout/log_prob_diff_max" not in fast


@pytest.mark.parametrize("extra, message", [
    ({"algorithm.rollout_correction.bypass_mode": True}, "calculate_log_probs=True"),
    ({**BYPASS, "actor_rollout_ref.actor.tis_imp_ratio_cap": 2.0}, "tis_imp_ratio_cap=2.0"),
])
def test_bypass_needs_engine_log_probs_and_no_tis(tmp_path, extra, message):
    model, data = make_tiny_setup(tmp_path)
    with pytest.raises(ConfigError, match=message):
        resolve(build_config(tiny_run_overrides(model, data, tmp_path / "run", **extra)), 16)
