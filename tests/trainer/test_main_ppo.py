import os
import subprocess
import sys

import pytest
import yaml

from rlcamp.config import build_config, resolve
from rlcamp.trainer.main_ppo import main
from rlcamp.trainer.run import RunFolderError, prepare_run_folder
from tests.helpers import make_tiny_setup

BATCH = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_tiny_setup(tmp_path_factory.mktemp("main_ppo"))


@pytest.fixture
def valid(setup):
    """A launch line whose model folder and data files exist (16 train prompts)."""
    model, data = setup
    return BATCH + [f"actor_rollout_ref.model.path={model}", f"data.train_files={data / 'train.parquet'}",
                    f"data.val_files={data / 'test.parquet'}"]


def test_dry_run_prints_resolved_config_and_plan(valid, capsys):
    assert main(["--dry-run", *valid, "actor_rollout_ref.actor.optim.lr=2e-6", "trainer.total_epochs=3"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out.split("# ---- derived ----")[0])
    assert resolved["actor_rollout_ref"]["actor"]["optim"]["lr"] == 2e-6
    assert resolved["critic"]["ppo_mini_batch_size"] == 4  # link resolved
    assert "micro batch 2 x 2 accumulation per device" in out
    assert "2 steps/epoch over 16 prompts, 6 in total" in out


def test_config_errors_exit_2_with_the_fix(valid, capsys):
    assert main(["--dry-run", *valid, "actor_rollout_ref.actor.lrr=1"]) == 2
    assert "did you mean 'actor_rollout_ref.actor.optim.lr'" in capsys.readouterr().err


def test_missing_data_and_model_are_found_before_any_model_loads(valid, setup, tmp_path, capsys):
    model, data = setup
    typo = data / "trian.parquet"  # the real one is train.parquet
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    code = main(["--dry-run", *valid, f"data.train_files={typo}", f"data.val_files={tmp_path / 'nowhere' / 'x.parquet'}",
                 f"critic.model.path={empty}", "actor_rollout_ref.model.path=./models/smollm"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"data.train_files: {typo} does not exist; did you mean {data / 'train.parquet'}?" in err
    assert f"its folder {tmp_path / 'nowhere'} does not exist" in err
    assert f"critic.model.path={empty} is a folder without config.json" in err
    # a relative path is a folder that is not there, not a hub name tried online
    assert "actor_rollout_ref.model.path=./models/smollm: no such folder" in err
    assert "rlcamp models prepare smollm2-135m-instruct" in err


def test_hub_names_are_refused_offline_unless_cached(valid, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    assert main(["--dry-run", *valid, "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct"]) == 2
    assert "no such folder and HF_HUB_OFFLINE=1 forbids downloading it" in capsys.readouterr().err


def test_a_megatron_layout_is_checked_against_the_models_config_before_weights_load(valid, capsys):
    # the tiny model: 2 layers, 4 heads, 2 KV heads
    megatron = ["actor_rollout_ref.actor.strategy=megatron", "critic.strategy=megatron", "trainer.n_gpus_per_node=4",
                "actor_rollout_ref.actor.ppo_mini_batch_size=8"]
    assert main(["--dry-run", *valid, *megatron, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4",
                 "critic.megatron.pipeline_model_parallel_size=4"]) == 2
    err = capsys.readouterr().err
    assert "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4 does not divide the model's " \
           "num_key_value_heads=2" in err
    assert "critic.megatron.pipeline_model_parallel_size: 2 decoder layers cannot be cut into 4 stages" in err
    assert main(["--dry-run", *valid, *megatron, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
                 "critic.megatron.pipeline_model_parallel_size=2"]) == 0


def test_the_dry_run_says_where_rlcamps_rollout_decodes_next_to_a_megatron_actor(valid, capsys):
    line = ["actor_rollout_ref.actor.strategy=megatron", "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.name=hf",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
            "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2"]
    assert main(["--dry-run", *valid, *line, "actor_rollout_ref.actor.megatron.sequence_parallel=False"]) == 0
    assert "# rollout: rlcamp's engine decodes on the actor's own TP-2 shards" in capsys.readouterr().out
    assert main(["--dry-run", *valid, *line]) == 0  # verl's default sequence_parallel=True
    out = capsys.readouterr().out
    assert "# rollout: rlcamp's engine decodes on its own copy split over 2 ranks" in out
    assert "with actor.megatron.sequence_parallel=False, or a MoE model, it decodes on the actor's shards" in out


def test_reward_function_file_and_name_are_checked(valid, tmp_path, capsys):
    fn = tmp_path / "my_reward.py"
    fn.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    assert main(["--dry-run", *valid, f"custom_reward_function.path={fn}", "custom_reward_function.name=score"]) == 2
    assert "has no function 'score'; its functions: ['compute_score']" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    assert main(["--dry-run", *valid, f"custom_reward_function.path={tmp_path / 'broken.py'}"]) == 2
    assert "importing it failed: ModuleNotFoundError" in capsys.readouterr().err
    assert main(["--dry-run", *valid, f"custom_reward_function.path={fn}"]) == 0


def test_sandbox_url_must_answer_when_code_data_is_scored(setup, tmp_path, capsys, service):
    from rlcamp.data.preprocess import write_parquet
    from tests.conftest import free_port

    model, _ = setup
    row = {"data_source": "humaneval", "prompt": [{"role": "user", "content": "write f"}], "ability": "code",
           "reward_model": {"ground_truth": '{"test": "def check(f): pass", "entry_point": "f"}'}, "extra_info": {"index": 0}}
    data = write_parquet([row] * 8, tmp_path / "code.parquet")
    line = BATCH + [f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
                    f"reward_model.sandbox_fusion.url=http://127.0.0.1:{free_port()}/run_code"]
    # the URL may answer on the machine the line is for: a dry run warns, a run stops before any model loads
    assert main(["--dry-run", *line]) == 0
    out = capsys.readouterr().out
    assert "a run here would stop: reward_model.sandbox_fusion.url: the code data (['humaneval']) is scored there" in out
    assert main(line) == 2
    err = capsys.readouterr().err
    assert "reward_model.sandbox_fusion.url: the code data (['humaneval']) is scored there" in err
    assert "rlcamp sandbox serve" in err
    answering = [o for o in line if "sandbox_fusion.url" not in o] + [f"reward_model.sandbox_fusion.url={service['run_url']}"]
    assert main(["--dry-run", *answering]) == 0  # a real `rlcamp sandbox serve` ran print(1 + 1)


def test_debug_shows_the_traceback(valid, tmp_path):
    line = [sys.executable, "-m", "rlcamp.trainer.main_ppo", "--dry-run", *valid, f"data.train_files={tmp_path / 'x'}"]
    quiet = subprocess.run(line, capture_output=True, text=True)
    loud = subprocess.run(line, capture_output=True, text=True, env=dict(os.environ, RLCAMP_DEBUG="1"))
    assert quiet.returncode == loud.returncode == 2
    assert quiet.stderr.startswith("rlcamp: ") and "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr and "ConfigError" in loud.stderr


def test_yaml_config_and_hydra_style_flags(valid, tmp_path, capsys):
    (tmp_path / "exp.yaml").write_text("data:\n  train_batch_size: 16\n")
    rest = [o for o in valid if not o.startswith("data.train_batch_size")]
    assert main(["--dry-run", "--config-path", str(tmp_path), "--config-name", "exp", *rest]) == 0
    assert "train_batch_size: 16" in capsys.readouterr().out
    assert main(["--dry-run", "--config", str(tmp_path / "exp.yaml"), *rest]) == 0


def test_run_folder_gets_the_resolved_config(tmp_path):
    resolved = resolve(build_config(BATCH + [f"trainer.default_local_dir={tmp_path / 'run'}"]))
    folder = prepare_run_folder(resolved)
    written = yaml.safe_load((folder / "resolved_config.yaml").read_text())
    assert written["data"]["train_batch_size"] == 8 and written["trainer"]["default_local_dir"] == str(tmp_path / "run")


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    fresh = resolve(build_config(BATCH + [f"trainer.default_local_dir={run}", "trainer.resume_mode=disable"]))
    with pytest.raises(RunFolderError, match="already holds a run") as caught:
        prepare_run_folder(fresh)
    assert "set another trainer.default_local_dir" in str(caught.value) and "trainer.resume_mode=auto" in str(caught.value)
    prepare_run_folder(resolve(build_config(BATCH + [f"trainer.default_local_dir={run}"])))  # auto resumes it


def test_module_and_console_entry_points(valid):
    for cmd in ([sys.executable, "-m", "rlcamp.trainer.main_ppo", "--dry-run", *valid],
                [sys.executable, "-m", "rlcamp.cli.main", "train", "--dry-run", *valid]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "adv_estimator: gae" in result.stdout
    keys = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "config", "keys", "algorithm.kl_ctrl"],
                          capture_output=True, text=True)
    assert "algorithm.kl_ctrl.target_kl: float = 0.1" in keys.stdout
