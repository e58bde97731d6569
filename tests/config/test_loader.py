import dataclasses

import pytest

from rlcamp.config import ConfigError, build_config, config_to_yaml
from rlcamp.config.loader import FIELDS, SECTIONS, parse_value, suggest


def cfg(*overrides, yaml_file=None):
    return build_config(list(overrides), yaml_file).config


def problems(*overrides, yaml_file=None):
    with pytest.raises(ConfigError) as err:
        build_config(list(overrides), yaml_file)
    return err.value.problems


def test_every_field_has_a_one_line_doc():
    assert len(FIELDS) > 150
    for key, info in FIELDS.items():
        assert info.doc and "\n" not in info.doc, key


def test_verl_defaults():
    c = cfg()
    assert c.data.train_batch_size == 1024 and c.data.max_prompt_length == 512
    assert c.actor_rollout_ref.actor.optim.lr == 1e-6 and c.critic.optim.lr == 1e-5
    assert c.actor_rollout_ref.actor.ppo_mini_batch_size == 256 and c.actor_rollout_ref.actor.clip_ratio_c == 3.0
    assert c.actor_rollout_ref.actor.kl_loss_type == "low_var_kl" and c.algorithm.kl_penalty == "kl"
    assert c.algorithm.adv_estimator == "gae" and c.algorithm.gamma == 1.0 and c.algorithm.lam == 1.0
    assert c.trainer.total_epochs == 30 and c.trainer.resume_mode == "auto" and c.trainer.n_gpus_per_node == 8
    assert c.critic.cliprange_value == 0.5 and c.critic.ppo_max_token_len_per_gpu == 32768
    assert c.trainer.default_local_dir == "checkpoints/verl_examples/gsm8k"


def test_values_parse_as_yaml_like_verl():
    c = cfg("actor_rollout_ref.actor.optim.lr=3e-6", 'trainer.logger=["console","file"]',
            "data.train_files=['a.parquet','b.parquet']", "data.val_files=one.parquet",
            "actor_rollout_ref.rollout.top_p=1", "trainer.experiment_name=2024", "trainer.total_training_steps=null")
    assert c.actor_rollout_ref.actor.optim.lr == 3e-6
    assert c.trainer.logger == ["console", "file"]
    assert c.data.train_files == ["a.parquet", "b.parquet"] and c.data.val_files == ["one.parquet"]
    assert c.actor_rollout_ref.rollout.top_p == 1.0 and isinstance(c.actor_rollout_ref.rollout.top_p, float)
    assert c.trainer.experiment_name == "2024" and c.trainer.total_training_steps is None
    assert parse_value("1e-6") == 1e-6 and parse_value("True") is True and parse_value("[1, 2]") == [1, 2]


def test_unknown_key_suggests_the_closest():
    (message,) = problems("actor_rollout_ref.actor.lrr=1e-6")
    assert message.startswith("unknown key 'actor_rollout_ref.actor.lrr'; did you mean 'actor_rollout_ref.actor.optim.lr'")
    assert suggest("trainer.n_gpu_per_node")[0] == "trainer.n_gpus_per_node"
    assert suggest("data.train_file")[0] == "data.train_files"
    assert suggest("algorithm.adv_estimater") == ["algorithm.adv_estimator"]


def test_wrong_types_name_key_value_and_type():
    found = problems("data.train_batch_size=abc", "data.truncation=mid", "trainer.val_before_train=maybe",
                     "actor_rollout_ref.actor.optim.lr=fast", "data.max_prompt_length=1.5")
    assert "data.train_batch_size='abc' (str) is not valid: expected int" in found
    assert "data.truncation='mid' (str) is not valid: one of 'error' | 'left' | 'right' | 'middle'" in found
    assert "trainer.val_before_train='maybe' (str) is not valid: expected bool" in found
    assert "actor_rollout_ref.actor.optim.lr='fast' (str) is not valid: expected float" in found
    assert "data.max_prompt_length=1.5 (float) is not valid: expected int" in found


def test_all_problems_reported_at_once_and_bad_syntax():
    assert len(problems("a.b=1", "data.train_batch_size=x")) == 2
    assert "'trainer.logger' is not a key=value override" in problems("trainer.logger")
    assert any("deleting keys" in p for p in problems("~trainer.logger"))
    assert any("is a section" in p for p in problems("trainer=3"))
    assert any("interpolations" in p for p in problems("critic.optim.lr=${actor_rollout_ref.actor.optim.lr}"))


def test_plus_prefix_and_free_form_mappings():
    c = cfg("+actor_rollout_ref.model.override_config.attn_implementation=eager",
            "++custom_reward_function.reward_kwargs.format_score=0.1", "+trainer.val_before_train=False")
    assert c.actor_rollout_ref.model.override_config == {"attn_implementation": "eager"}
    assert c.custom_reward_function.reward_kwargs == {"format_score": 0.1}
    assert c.trainer.val_before_train is False
    assert any("unknown key 'trainer.new_thing'" in p for p in problems("+trainer.new_thing=1"))


def test_links_follow_unless_set():
    c = cfg("actor_rollout_ref.actor.ppo_mini_batch_size=32", "actor_rollout_ref.actor.clip_ratio=0.1",
            "actor_rollout_ref.model.path=/m", "data.max_response_length=64", "actor_rollout_ref.actor.ppo_epochs=2")
    assert c.critic.ppo_mini_batch_size == 32 and c.critic.ppo_epochs == 2
    assert c.actor_rollout_ref.actor.clip_ratio_low == 0.1 and c.actor_rollout_ref.actor.clip_ratio_high == 0.1
    assert c.critic.model.path == "/m" and c.actor_rollout_ref.rollout.response_length == 64
    c = cfg("actor_rollout_ref.actor.ppo_mini_batch_size=32", "critic.ppo_mini_batch_size=8",
            "actor_rollout_ref.actor.clip_ratio_high=0.28", "critic.model.path=/critic")
    assert c.critic.ppo_mini_batch_size == 8 and c.actor_rollout_ref.actor.clip_ratio_high == 0.28
    assert c.actor_rollout_ref.actor.clip_ratio_low == 0.2 and c.critic.model.path == "/critic"
    # a chain: critic.forward_micro_batch_size_per_gpu -> critic.ppo_micro_batch_size_per_gpu
    assert cfg("critic.ppo_micro_batch_size_per_gpu=4").critic.forward_micro_batch_size_per_gpu == 4


def test_yaml_file_then_cli_later_wins(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train_batch_size: 64\n  max_prompt_length: 128\n"
                    "actor_rollout_ref:\n  actor:\n    optim:\n      lr: 2e-6\ntrainer:\n  logger: [console, file]\n")
    c = cfg("data.train_batch_size=32", yaml_file=path)
    assert c.data.train_batch_size == 32 and c.data.max_prompt_length == 128
    assert c.actor_rollout_ref.actor.optim.lr == 2e-6 and c.trainer.logger == ["console", "file"]
    path.write_text("data:\n  train_bach_size: 64\n")
    assert any("unknown key 'data.train_bach_size'" in p and str(path) in p for p in problems(yaml_file=path))
    assert any("does not exist" in p for p in problems(yaml_file=tmp_path / "nope.yaml"))


def test_config_is_frozen_and_round_trips_through_yaml(tmp_path):
    c = cfg("data.train_batch_size=16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.data.train_batch_size = 3
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(c))
    assert build_config([], path).config == c


def test_sections_cover_the_issue_keys():
    for key in ["data.train_files", "actor_rollout_ref.model.path", "actor_rollout_ref.actor.optim.lr",
                "actor_rollout_ref.actor.fsdp_config.param_offload", "actor_rollout_ref.actor.megatron.tensor_model_parallel_size",
                "actor_rollout_ref.actor.ulysses_sequence_parallel_size", "actor_rollout_ref.actor.use_dynamic_bsz",
                "actor_rollout_ref.rollout.gpu_memory_utilization", "actor_rollout_ref.rollout.val_kwargs.temperature",
                "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", "actor_rollout_ref.rollout.mode",
                "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", "critic.cliprange_value",
                "reward_model.sandbox_fusion.max_concurrent", "reward_model.sandbox_fusion.url",
                "custom_reward_function.path", "algorithm.kl_ctrl.target_kl", "algorithm.pf_ppo.weight_pow",
                "algorithm.norm_adv_by_std_in_grpo", "trainer.max_critic_ckpt_to_keep", "trainer.resume_from_path"]:
        assert key in FIELDS, key
    assert "actor_rollout_ref.actor.optim" in SECTIONS
