"""The LR schedule: verl's FSDP keys (lr_scheduler_type) and Megatron keys (lr_decay_style, WSD), by hand."""

import math

import pytest
import torch

from rlcamp.config import build_config, resolve
from rlcamp.config.loader import ConfigError
from rlcamp.config.schema import OptimConfig
from rlcamp.engines.local import LocalEngine
from rlcamp.engines.schedule import cosine_multiplier, decay_lr, lr_schedule

BATCH = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]
ACTOR = "actor_rollout_ref.actor.optim"


def test_the_fsdp_family_by_hand():
    # warm-up 2 of 10 steps: (s + 1) / 2; then a half cosine over the 8 left: s = 6 is half way, 10 the end
    assert [cosine_multiplier(s, 2, 10, "cosine", 0.0, 0.5) for s in (0, 1, 2, 6, 10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5, 0.0])
    assert cosine_multiplier(6, 2, 10, "cosine", 0.2, 0.5) == pytest.approx(0.2 + 0.8 * 0.5)
    assert cosine_multiplier(7, 2, 10, "constant", 0.2, 0.5) == 1.0


def test_the_megatron_family_by_hand():
    lr = 1.0
    # warm-up from 0: step s of 4 gets s / 4 (Megatron's first step has lr 0)
    assert [decay_lr(s, lr=lr, min_lr=0.0, warmup_steps=4, decay_steps=10, style="constant") for s in (0, 2, 4, 7)] \
        == pytest.approx([0.0, 0.5, 1.0, 1.0])
    # linear from 1 to 0.1 over 10 steps: half way 0.55; past the end the floor
    assert decay_lr(5, lr=lr, min_lr=0.1, warmup_steps=0, decay_steps=10, style="linear") == pytest.approx(0.55)
    assert decay_lr(11, lr=lr, min_lr=0.1, warmup_steps=0, decay_steps=10, style="linear") == pytest.approx(0.1)
    assert decay_lr(5, lr=lr, min_lr=0.0, warmup_steps=0, decay_steps=10, style="cosine") == pytest.approx(0.5)
    # inverse square root after 4 warm-up steps: sqrt(4) / sqrt(16) at step 16
    assert decay_lr(16, lr=lr, min_lr=0.0, warmup_steps=4, decay_steps=100, style="inverse-square-root") == \
        pytest.approx(0.5)


@pytest.mark.parametrize("wsd_style, at_11", [("linear", 0.75), ("cosine", 0.5 * (math.cos(math.pi / 4) + 1)),
                                              ("exponential", 2 * 0.5 ** 0.25 - 1), ("minus_sqrt", 0.5)])
def test_wsd_holds_the_full_lr_then_decays_over_its_last_steps(wsd_style, at_11):
    # 14 steps, the last 4 decay: steps 0-10 at lr; step 11 is a quarter into the decay, step 14 at min_lr
    lrs = [decay_lr(s, lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=14, style="WSD", wsd_decay_steps=4,
                    wsd_style=wsd_style) for s in range(15)]
    assert lrs[:11] == [1.0] * 11
    assert lrs[11] == pytest.approx(at_11)
    assert lrs[14] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_the_engine_steps_the_configured_schedule():
    """A WSD schedule from the launch line: the engine's lr at each training step, with min_lr 2e-6."""
    cfg = build_config(BATCH + [f"{ACTOR}.lr=2e-5", f"{ACTOR}.lr_decay_style=WSD", f"{ACTOR}.lr_wsd_decay_steps=4",
                                f"{ACTOR}.lr_wsd_decay_style=linear", f"{ACTOR}.min_lr=2e-6"]).config
    optim = cfg.actor_rollout_ref.actor.optim
    engine = LocalEngine(torch.nn.Linear(2, 2), optim, total_steps=14, warmup_steps=0, grad_clip=1.0,
                         compute_dtype=None, device=torch.device("cpu"))
    seen = []
    for _ in range(15):
        seen.append(engine.lr)
        engine.optimizer.step()
        engine.scheduler_step()
    want = [2e-5] * 11 + [2e-6 + c * 1.8e-5 for c in (0.75, 0.5, 0.25, 0.0)]
    assert seen == pytest.approx(want)


def test_warmup_style_is_verls_old_name_of_lr_scheduler_type():
    old, new = OptimConfig(lr=1.0, warmup_style="cosine"), OptimConfig(lr=1.0, lr_scheduler_type="cosine")
    assert [lr_schedule(old, 0, 10)(s) for s in range(11)] == [lr_schedule(new, 0, 10)(s) for s in range(11)]
    assert lr_schedule(new, 0, 10)(5) == pytest.approx(0.5)


@pytest.mark.parametrize("keys, fragment", [
    ([f"{ACTOR}.lr_decay_style=WSD"], "lr_decay_style=WSD needs actor_rollout_ref.actor.optim.lr_wsd_decay_steps >= 1"),
    ([f"{ACTOR}.lr_wsd_decay_steps=3"], "lr_wsd_decay_steps=3 is read only with actor_rollout_ref.actor.optim.lr_decay_style"),
    ([f"{ACTOR}.lr_decay_style=linear", f"{ACTOR}.lr_scheduler_type=cosine"], "are two schedules"),
    ([f"{ACTOR}.lr_decay_style=linear", f"{ACTOR}.min_lr_ratio=0.1"], "with lr_decay_style the floor is"),
    ([f"{ACTOR}.lr_decay_style=cosine", f"{ACTOR}.min_lr=1"], "min_lr=1.0 must be in [0, lr="),
    ([f"{ACTOR}.warmup_style=cosine", f"{ACTOR}.lr_scheduler_type=constant", "critic.optim.warmup_style=constant",
      "critic.optim.lr_scheduler_type=cosine"], "critic.optim.warmup_style=constant and critic.optim.lr_scheduler_type"),
])
def test_schedule_keys_that_disagree_are_refused(keys, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(build_config(BATCH + ["algorithm.adv_estimator=gae"] + keys))
    assert fragment in str(err.value), str(err.value)
