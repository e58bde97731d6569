"""No key accepted without an effect: every schema key is read by the code, refused with a message,
or listed as without effect (with the reason printed when it is set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlcamp.config import build_config, resolve
from rlcamp.config.loader import FIELDS
from rlcamp.config.support import NO_EFFECT, UNSUPPORTED, always
from tests.config.key_reads import keys_read, matches

ROOT = Path(__file__).resolve().parents[2]
BATCH = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]


def test_every_key_is_read_refused_or_listed():
    read = keys_read(ROOT / "rlcamp", exclude=("config/support.py",))
    refused = {u.key for u in UNSUPPORTED}
    listed = {n.key for n in NO_EFFECT if n.applies is always}  # keys without effect only in some runs must be read
    orphans = [k for k in FIELDS if k not in read | refused | listed]
    assert not orphans, f"{len(orphans)} key(s) nothing reads, refuses or lists: {orphans}"


def test_the_registries_name_real_keys():
    for key in [u.key for u in UNSUPPORTED] + [n.key for n in NO_EFFECT]:
        assert key in FIELDS, key


def test_the_reader_is_not_fooled_by_a_shared_leaf_name():
    # an attribute chain must agree with the key for as far as its names are schema names
    assert matches("critic.model.fsdp_config.param_offload", ["c", "model", "fsdp_config", "param_offload"])
    assert not matches("actor_rollout_ref.actor.megatron.param_offload", ["arr", "actor", "fsdp_config", "param_offload"])
    assert matches("trainer.logger", ["self", "cfg", "trainer", "logger"])
    assert not matches("trainer.logger", ["self", "cfg", "data", "logger"])


@pytest.mark.parametrize("setting, fragment", [
    ("data.use_shm=True", "data.use_shm=True has no effect: models and data are read from their local paths"),
    ("actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
     "gpu_memory_utilization=0.4 has no effect: rlcamp's own engine (rollout.name=hf) has no such setting"),
    ("actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4",
     "it is only read with the role's strategy=megatron"),
    ("actor_rollout_ref.actor.fsdp_config.forward_prefetch=True", "one device without offload: nothing is sharded"),
    ("ray_init.timeline_json_file=/tmp/t.json", "this run uses no Ray"),
])
def test_a_key_without_effect_says_so_when_set(setting, fragment):
    warnings = resolve(build_config(BATCH + [setting])).warnings
    assert any(fragment in w for w in warnings), warnings


def test_keys_left_at_their_defaults_say_nothing():
    assert not [w for w in resolve(build_config(BATCH)).warnings if "has no effect" in w]


def test_a_key_that_has_an_effect_in_this_run_says_nothing():
    line = BATCH + ["trainer.n_gpus_per_node=2", "actor_rollout_ref.actor.fsdp_config.forward_prefetch=True"]
    assert not [w for w in resolve(build_config(line)).warnings if "forward_prefetch" in w]
