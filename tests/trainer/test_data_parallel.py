"""A 2-process PPO run end to end over Ray (FSDP2 + gloo), with a checkpoint and a resume."""

import json

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (extra 'ray')")

from rlcamp.trainer.main_ppo import main  # noqa: E402
from tests.helpers import make_tiny_setup, tiny_run_overrides  # noqa: E402


def test_two_process_run_checkpoints_and_resumes(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    common = {"trainer.n_gpus_per_node": 2, "trainer.save_freq": 1, "trainer.stage_timeout_s": 300,
              "ray_init.num_cpus": 4}
    try:
        assert main(tiny_run_overrides(model, data, run, **common, **{"trainer.total_training_steps": 2})) == 0
        actor = run / "global_step_2" / "actor"
        assert (actor / "rng_rank1.pt").exists()
        # sharded state: one file per rank (torch.distributed.checkpoint), nothing gathered but the HF export
        assert sorted(p.name for p in (actor / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert "optimizer" not in torch.load(actor / "state.pt", weights_only=False)
        assert main(tiny_run_overrides(model, data, run, **common, **{"trainer.total_training_steps": 3})) == 0
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # the second run resumed at step 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "global_step_3" / "actor" / "huggingface")


def test_ulysses_run_end_to_end(tmp_path):
    """trainer.n_gpus_per_node=2 with Ulysses degree 2 for actor and critic: one data-parallel rank
    whose sequences are split over two processes, through the trainer and a checkpoint."""
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(model, data, run, **{
        "trainer.n_gpus_per_node": 2, "trainer.total_training_steps": 1, "trainer.stage_timeout_s": 300,
        "ray_init.num_cpus": 4, "actor_rollout_ref.actor.ulysses_sequence_parallel_size": 2,
        "critic.ulysses_sequence_parallel_size": 2, "actor_rollout_ref.model.use_remove_padding": True,
        "actor_rollout_ref.actor.use_kl_loss": True, "trainer.balance_batch": True})
    try:
        assert main(overrides) == 0
    finally:
        ray.shutdown()
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 1 and "critic/vf_loss" in row and "actor/pg_loss" in row  # numbers: test_ray_equivalence
    assert abs(row["actor/kl_loss"]) < 1e-5  # the reference (sequence-parallel too) equals the actor before the update


def test_tensor_parallel_rollout_run_keeps_its_engine_in_sync(tmp_path):
    """rollout.tensor_model_parallel_size=2 on 2 processes: one engine split over both; after each
    update its shards are refreshed, so the engine's log-probs stay the actor's (fp32)."""
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(model, data, run, **{
        "trainer.n_gpus_per_node": 2, "trainer.total_training_steps": 3, "trainer.stage_timeout_s": 300,
        "ray_init.num_cpus": 4, "actor_rollout_ref.rollout.tensor_model_parallel_size": 2})
    try:
        assert main(overrides) == 0
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["rollout/log_prob_diff_max"] < 1e-4 for r in rows), [r["rollout/log_prob_diff_max"] for r in rows]
