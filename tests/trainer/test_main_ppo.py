import subprocess
import sys

import yaml

from rlcamp.config import build_config, resolve
from rlcamp.trainer.main_ppo import main
from rlcamp.trainer.run import prepare_run_folder

VALID = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]


def test_dry_run_prints_resolved_config_and_plan(capsys):
    assert main(["--dry-run", *VALID, "actor_rollout_ref.actor.optim.lr=2e-6"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out.split("# ---- derived ----")[0])
    assert resolved["actor_rollout_ref"]["actor"]["optim"]["lr"] == 2e-6
    assert resolved["critic"]["ppo_mini_batch_size"] == 4  # link resolved
    assert "micro batch 2 x 2 accumulation per device" in out
    assert "training steps: unknown until the training files exist" in out


def test_dry_run_counts_prompts_when_files_exist(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"data_source": "gsm8k", "prompt": [{"role": "user", "content": "q"}]}] * 20), path)
    assert main(["--dry-run", *VALID, f"data.train_files={path}", "trainer.total_epochs=3"]) == 0
    assert "2 steps/epoch over 20 prompts, 6 in total" in capsys.readouterr().out


def test_config_errors_exit_2_with_the_fix(capsys):
    assert main(["--dry-run", *VALID, "actor_rollout_ref.actor.lrr=1"]) == 2
    assert "did you mean 'actor_rollout_ref.actor.optim.lr'" in capsys.readouterr().err


def test_yaml_config_and_hydra_style_flags(tmp_path, capsys):
    (tmp_path / "exp.yaml").write_text("data:\n  train_batch_size: 16\n")
    assert main(["--dry-run", "--config-path", str(tmp_path), "--config-name", "exp", *VALID[:1], *VALID[2:]]) == 0
    assert "train_batch_size: 16" in capsys.readouterr().out
    assert main(["--dry-run", "--config", str(tmp_path / "exp.yaml"), *VALID[:1], *VALID[2:]]) == 0


def test_run_folder_gets_the_resolved_config(tmp_path):
    resolved = resolve(build_config(VALID + [f"trainer.default_local_dir={tmp_path / 'run'}"]))
    folder = prepare_run_folder(resolved)
    written = yaml.safe_load((folder / "resolved_config.yaml").read_text())
    assert written["data"]["train_batch_size"] == 8 and written["trainer"]["default_local_dir"] == str(tmp_path / "run")


def test_module_and_console_entry_points():
    for cmd in ([sys.executable, "-m", "rlcamp.trainer.main_ppo", "--dry-run", *VALID],
                [sys.executable, "-m", "rlcamp.cli.main", "train", "--dry-run", *VALID]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "adv_estimator: gae" in result.stdout
    keys = subprocess.run([sys.executable, "-m", "rlcamp.cli.main", "config", "keys", "algorithm.kl_ctrl"],
                          capture_output=True, text=True)
    assert "algorithm.kl_ctrl.target_kl: float = 0.1" in keys.stdout
