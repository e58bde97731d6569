"""One full PPO step (actor, critic, reference) for every supported model family."""

import math

import pytest
import torch

from rlcamp.config import build_config, resolve
from rlcamp.models.tiny import TINY_FAMILIES
from rlcamp.trainer.build import build_trainer
from tests.helpers import make_tiny_setup, tiny_run_overrides


# a reward that varies with the response, so advantages, returns and the critic's gradient are non-zero
LENGTH_REWARD = "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n" \
                "    return len(solution_str) / 10.0\n"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_one_ppo_step(tmp_path, family):
    model, data = make_tiny_setup(tmp_path, family)
    (tmp_path / "reward.py").write_text(LENGTH_REWARD)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{
        "trainer.total_training_steps": 1, "actor_rollout_ref.actor.use_kl_loss": True,
        "custom_reward_function.path": tmp_path / "reward.py"})
    overrides = [o for o in overrides if "reward_kwargs" not in o]
    trainer = build_trainer(resolve(build_config(overrides), 16), tmp_path / "run")
    actor = trainer.actor.workers[0]
    before = {n: p.detach().clone() for n, p in actor.model.named_parameters()}
    critic_before = trainer.critic.workers[0].model.score.weight.detach().clone()
    metrics = trainer.fit()
    for key in ("actor/pg_loss", "actor/kl_loss", "critic/vf_loss", "critic/values/mean", "critic/advantages/mean",
                "actor/grad_norm", "critic/grad_norm", "timing_s/ref", "timing_s/update_actor", "val/acc"):
        assert key in metrics and math.isfinite(metrics[key]), key
    changed = [n for n, p in actor.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2
    assert not torch.equal(trainer.critic.workers[0].model.score.weight, critic_before)
    if family == "qwen2_moe":
        assert metrics["actor/moe_aux_loss"] > 0  # the router balance loss the model defines
    assert (tmp_path / "run" / "global_step_1" / "actor" / "huggingface" / "config.json").exists()
