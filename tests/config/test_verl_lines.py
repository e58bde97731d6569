"""verl's own launch lines (examples/ppo_trainer at b178a3c) pass --dry-run with only their model
and data paths changed; verl's keys and named configs are answered as such; every problem of a
line comes out in one round."""

from __future__ import annotations

import os

import pytest

from rlcamp.config.loader import ConfigError, assemble, build_config
from rlcamp.config.verl_keys import VERL_KEYS
from rlcamp.trainer.main_ppo import main
from tests.verl_lines import launch_lines, materialize

SCRIPTS = sorted(launch_lines())


def test_the_fixture_holds_all_of_verls_scripts():
    assert len(SCRIPTS) == 24 and all(name.endswith(".sh") for name in SCRIPTS)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    return tmp_path_factory.mktemp("verl_lines")


@pytest.mark.parametrize("name", SCRIPTS)
def test_verls_launch_line_passes_the_dry_run(name, stand_ins, monkeypatch, capsys):
    args, env = materialize(name, stand_ins)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["--dry-run", *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    # what this machine lacks is said, not refused: wandb without an account, no GPU, ...
    if "wandb" in " ".join(args):
        assert "a run here would stop: trainer.logger 'wandb'" in out


def test_a_run_stops_on_what_the_dry_run_warned_about(stand_ins, monkeypatch, capsys):
    args, _ = materialize("run_qwen1.5_moe_a2.7b-gsm8k_megatron.sh", stand_ins)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(args) == 2  # before any model loads
    err = capsys.readouterr().err
    # its stand-in is a tiny Qwen-MoE, read from its config.json before any weights load: vLLM on this CPU
    assert "actor_rollout_ref.rollout.name=vllm on the CPU with a mixture-of-experts model" in err
    assert "trainer.logger 'wandb'" in err


def test_the_megatron_named_config_selects_megatron_for_every_role(tmp_path):
    from rlcamp.config.named import load_named

    tree, origin = load_named("./config", "ppo_megatron_trainer")
    cfg = build_config(tree=tree).config
    assert (cfg.actor_rollout_ref.actor.strategy, cfg.actor_rollout_ref.ref.strategy, cfg.critic.strategy,
            cfg.reward_model.strategy) == ("megatron",) * 4
    assert "built-in equivalent" in origin
    assert build_config(tree=load_named("./config", "ppo_trainer")[0]).config.critic.strategy == "fsdp"
    with pytest.raises(ConfigError, match="not one of the built-in configs"):
        load_named(str(tmp_path), "ppo_trainerr")


def test_a_users_hydra_yaml_composes_defaults_and_resolves_interpolations(tmp_path, monkeypatch):
    from rlcamp.config.named import load_named

    (tmp_path / "actor").mkdir()
    (tmp_path / "actor" / "small.yaml").write_text("ppo_mini_batch_size: 4\noptim:\n  lr: 3.0e-6\n")
    (tmp_path / "base.yaml").write_text("data:\n  train_batch_size: 8\n  max_response_length: 64\n")
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - base\n  - actor@actor_rollout_ref.actor: small\n  - ppo_megatron_trainer\n  - _self_\n"
        "data:\n  max_prompt_length: ${data.max_response_length}\n"
        "trainer:\n  experiment_name: ${oc.env:RLCAMP_TEST_NAME}\n"
        "critic:\n  strategy: fsdp\n  ppo_mini_batch_size: ${actor_rollout_ref.actor.ppo_mini_batch_size}\n")
    monkeypatch.setenv("RLCAMP_TEST_NAME", "from-env")
    tree, _ = load_named(str(tmp_path), "mine")
    loaded = build_config(["data.train_batch_size=16"], tree=tree)  # the command line still wins
    cfg = loaded.config
    assert cfg.data.train_batch_size == 16 and cfg.data.max_prompt_length == 64
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 4 and cfg.actor_rollout_ref.actor.optim.lr == 3e-6
    assert cfg.trainer.experiment_name == "from-env" and cfg.critic.ppo_mini_batch_size == 4
    assert cfg.actor_rollout_ref.actor.strategy == "megatron" and cfg.critic.strategy == "fsdp"  # _self_ last
    # only what the files set counts as set by the user (no "has no effect" flood for defaults)
    assert "actor_rollout_ref.rollout.gpu_memory_utilization" not in loaded.user_keys
    (tmp_path / "bad.yaml").write_text("data:\n  max_prompt_length: ${data.no_such_key}\n")
    with pytest.raises(ConfigError, match="an interpolation does not resolve"):
        load_named(str(tmp_path), "bad")


def test_verls_keys_are_answered_as_verls_not_as_typos():
    _, problems = assemble(["actor_rollout_ref.model.lora.rank=8", "transfer_queue.enable=True",
                            "data.train_max_samples=100", "actor_rollout_ref.actor._target_=x",
                            "actor_rollout_ref.actor.ppo_mini_batchsize=2", "trainer.no_such_thing=1"])
    text = "\n".join(problems)
    assert "verl's `actor_rollout_ref.model.lora.rank` is not supported by rlcamp yet" in text and "LoRA" in text
    assert "verl's `transfer_queue.enable` is not supported by rlcamp yet" in text
    assert "verl's `data.train_max_samples` is not supported by rlcamp yet (verl b178a3c): remove it (verl's default is -1)" in text
    assert "it names the Python class verl builds the section with" in text
    assert "did you mean 'actor_rollout_ref.actor.ppo_mini_batch_size'" in text  # a typo is still a typo
    assert "unknown key 'trainer.no_such_thing'; see `rlcamp config keys`" in text  # nothing close: no guess
    assert not any("did you mean" in p for p in problems if "verl's" in p)


def test_no_verl_key_gets_an_unrelated_suggestion():
    """Every verl key rlcamp lacks is answered as verl's (the 35 of the issue were 'did you mean <unrelated>')."""
    _, problems = assemble([f"{k}=1" for k in VERL_KEYS if not k.endswith("._target_")])
    wrong = [p for p in problems if "did you mean" in p or p.startswith("unknown key")]
    assert not wrong, wrong[:5]


def test_verls_ray_kwargs_land_on_rlcamps_keys():
    cfg = build_config(["ray_kwargs.ray_init.num_cpus=3", "ray_kwargs.timeline_json_file=/tmp/t.json"]).config
    assert cfg.ray_init.num_cpus == 3 and cfg.ray_init.timeline_json_file == "/tmp/t.json"


def test_every_problem_of_a_line_comes_out_in_one_round(tmp_path, capsys):
    code = main(["--dry-run", "trainer.n_gpus_per_node=1", "actor_rollout_ref.actor.lrr=1",  # unknown key
                 "data.max_prompt_length=abc",  # a bad type
                 "data.train_batch_size=6", "actor_rollout_ref.actor.ppo_mini_batch_size=4",  # does not divide
                 f"data.train_files={tmp_path / 'missing.parquet'}",  # a missing file
                 f"actor_rollout_ref.model.path={tmp_path / 'no_model'}"])  # a missing model
    err = capsys.readouterr().err
    assert code == 2
    for fragment in ("unknown key 'actor_rollout_ref.actor.lrr'", "data.max_prompt_length='abc'",
                     "data.train_batch_size=6 is not divisible by actor_rollout_ref.actor.ppo_mini_batch_size=4",
                     "missing.parquet does not exist", "no_model: no such folder"):
        assert fragment in err, (fragment, err)


def test_modelscope_ids_are_fetched_through_modelscope_and_say_so_offline(monkeypatch, capsys, tmp_path):
    pytest.importorskip("modelscope")
    from rlcamp.config import build_config as build
    from rlcamp.trainer.preflight import fetch_modelscope_models, preflight

    monkeypatch.setenv("VERL_USE_MODELSCOPE", "True")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # not a Hugging Face download: that would be refused
    cfg = build(["actor_rollout_ref.model.path=deepseek-ai/deepseek-llm-7b-chat", "data.train_files=[]",
                 "data.val_files=[]"]).config
    checks = preflight(cfg)
    assert not checks.problems and not checks.blockers
    assert any("deepseek-ai/deepseek-llm-7b-chat is not in ModelScope's cache; the run downloads it" in w
               for w in checks.warnings)
    # a folder in ModelScope's cache is used as it is
    cached = tmp_path / "ms" / "models" / "deepseek-ai" / "deepseek-llm-7b-chat"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert fetch_modelscope_models(cfg).actor_rollout_ref.model.path == str(cached)
    assert not preflight(cfg).warnings


@pytest.mark.slow  # modelscope retries for ~20 s before it gives up
def test_modelscope_offline_says_what_to_do(monkeypatch, tmp_path):
    pytest.importorskip("modelscope")
    from rlcamp.models.loading import ModelError
    from rlcamp.trainer.preflight import fetch_modelscope_models

    monkeypatch.setenv("VERL_USE_MODELSCOPE", "True")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    cfg = build_config(["actor_rollout_ref.model.path=deepseek-ai/deepseek-llm-7b-chat"]).config
    if os.environ.get("RLCAMP_ONLINE") != "1":  # no network here: the error says what to do
        with pytest.raises(ModelError, match="could not download it from ModelScope .*set actor_rollout_ref.model.path"):
            fetch_modelscope_models(cfg)


def test_config_file_of_any_yaml_suffix_composes_too(tmp_path):
    from rlcamp.trainer.main_ppo import _config_tree, parse_args

    (tmp_path / "base.yaml").write_text("data:\n  train_batch_size: 8\n")
    (tmp_path / "run.yml").write_text("defaults: [base]\ndata:\n  max_prompt_length: ${data.train_batch_size}\n")
    tree, origin = _config_tree(parse_args(["--config", str(tmp_path / "run.yml")])[0])
    assert tree == {"data": {"train_batch_size": 8, "max_prompt_length": 8}} and origin is None
