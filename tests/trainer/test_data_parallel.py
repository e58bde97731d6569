"""A 2-process PPO run end to end over Ray (FSDP2 + gloo), with a checkpoint and a resume."""

import json

import pytest

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
        assert (run / "global_step_2" / "actor" / "rng_rank1.pt").exists()
        assert main(tiny_run_overrides(model, data, run, **common, **{"trainer.total_training_steps": 3})) == 0
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # the second run resumed at step 2
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "global_step_3" / "actor" / "huggingface")
