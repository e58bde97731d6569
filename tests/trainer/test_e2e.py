"""End-to-end runs of the trainer on tiny models: a short run, learning, checkpoints and exact resume."""

import json
import signal
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from rlcamp.trainer.main_ppo import main
from tests.helpers import assert_same_metrics, make_tiny_setup, read_metrics, start_trainer, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[2]
SEVEN = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """1 for an answer that starts with the digit 7."""
    return float(solution_str.strip().startswith("7"))
'''


def test_short_run_writes_config_metrics_and_loadable_checkpoints(tmp_path, capsys):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 2, "trainer.total_training_steps": 3,
                                                         "trainer.logger": "[console]"})) == 0
    out = capsys.readouterr().out
    assert "step    3/3 [====================] 100%" in out
    assert (run / "resolved_config.yaml").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("global_step")) == ["global_step_2", "global_step_3"]
    assert (run / "latest_checkpointed_iteration.txt").read_text() == "3"
    AutoModelForCausalLM.from_pretrained(run / "global_step_3" / "actor" / "huggingface")
    AutoModelForTokenClassification.from_pretrained(run / "global_step_3" / "critic" / "huggingface")
    assert (run / "global_step_3" / "critic" / "huggingface" / "tokenizer.json").exists()  # critic.model.tokenizer_path
    assert "Loading weights" not in out  # transformers' progress bars are silenced
    rows = read_metrics(run)
    assert set(rows) == {1, 2, 3} and "val/acc" in rows[3]
    # verl's names, so that dashboards carry over
    for key in ("timing_s/gen", "timing_s/adv", "timing_s/update_actor", "timing_per_token_ms/gen",
                "perf/throughput", "perf/total_num_tokens", "perf/time_per_step", "perf/gen_tokens_per_s", "actor/lr",
                "response_length/mean", "prompt_length/clip_ratio", "critic/returns/mean", "critic/vf_explained_var",
                "rollout/log_prob_diff_max", "training/global_step"):
        assert key in rows[1], key
    assert rows[3]["val-core/rlcamp/arith/reward/mean@1"] >= rows[3]["val-aux/rlcamp/arith/acc/mean@1"]
    assert (run / "report.html").exists()
    summary = out[out.index("== run summary =="):]
    assert f"checkpoint: {run / 'global_step_3'}/" in summary and f"report: {run / 'report.html'}" in summary


SCORED = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    right = solution_str.strip().endswith(str(ground_truth))
    return {"score": float(right) + 0.5, "acc": right, "pass_fraction": 0.25, "note": "text extras are dumped too"}
'''


def test_a_run_leaves_behind_samples_dumps_and_the_scorers_extras(tmp_path, capsys):
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "scored.py").write_text(SCORED)
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(model, data, run, **{
        "custom_reward_function.path": tmp_path / "scored.py", "trainer.total_training_steps": 2,
        "trainer.val_before_train": True, "trainer.logger": "[console]", "trainer.log_val_generations": 3,
        "trainer.rollout_data_dir": tmp_path / "rollouts", "trainer.validation_data_dir": tmp_path / "val",
        "reward_model.launch_reward_fn_async": True, "data.val_batch_size": 30}) if "reward_kwargs" not in o]
    assert main(overrides) == 0
    out = capsys.readouterr().out
    rows = read_metrics(run)
    # the scorer reports acc: it is verl's val-core variable, and val/acc is it
    assert rows[2]["val-core/rlcamp/arith/acc/mean@1"] == rows[2]["val/acc"]
    assert rows[2]["val-aux/rlcamp/arith/reward/mean@1"] == pytest.approx(rows[2]["val/acc"] + 0.5)
    assert rows[2]["val-aux/rlcamp/arith/pass_fraction/mean@1"] == 0.25
    assert "timing_s/reward" in rows[1] and "timing_s/reward_wait" in rows[1]  # scored on the reward thread
    step_rows = [json.loads(line) for line in (tmp_path / "rollouts" / "1.jsonl").read_text().splitlines()]
    assert len(step_rows) == 16 and {"input", "output", "gts", "score", "step", "acc", "pass_fraction", "note"} <= set(step_rows[0])
    assert step_rows[0]["step"] == 1 and "What is" in step_rows[0]["input"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["0.jsonl", "2.jsonl"]
    assert len((tmp_path / "val" / "2.jsonl").read_text().splitlines()) == 84
    samples = [json.loads(line) for line in (run / "val_generations.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [0, 0, 0, 2, 2, 2]
    assert [s["input"] for s in samples[:3]] == [s["input"] for s in samples[3:]]  # the same prompts each time
    assert out.count("val/generations (step ") == 2
    assert "val acc" in out and "arith acc" not in out  # one accuracy on the console line


def test_keep_last_checkpoints(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.save_freq": 1, "trainer.total_training_steps": 4,
                                                         "trainer.max_actor_ckpt_to_keep": 2,
                                                         "trainer.max_critic_ckpt_to_keep": 1})) == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("global_step")) == ["global_step_3", "global_step_4"]
    assert not (run / "global_step_3" / "critic").exists() and (run / "global_step_4" / "critic").exists()


def test_a_resumed_run_deletes_the_checkpoint_it_loaded_once_a_newer_one_exists(tmp_path, capsys):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.total_training_steps": 2})) == 0
    assert (run / "global_step_2").is_dir()
    assert main(tiny_run_overrides(model, data, run, **{"trainer.total_training_steps": 4, "trainer.save_freq": 1,
                                                         "trainer.del_local_ckpt_after_load": True})) == 0
    assert f"deleted {run / 'global_step_2'} (trainer.del_local_ckpt_after_load; {run / 'global_step_3'}" in \
        capsys.readouterr().out
    assert sorted(p.name for p in run.glob("global_step_*")) == ["global_step_3", "global_step_4"]


def test_tiny_model_learns_to_answer_seven(tmp_path):
    """From chance to > 90% greedy accuracy on a trivially learnable reward, well within a minute."""
    model, data = make_tiny_setup(tmp_path)
    (tmp_path / "seven.py").write_text(SEVEN)
    run = tmp_path / "run"
    start = time.monotonic()
    overrides = tiny_run_overrides(model, data, run, **{
        "custom_reward_function.path": tmp_path / "seven.py", "data.max_response_length": 2,
        "actor_rollout_ref.rollout.n": 16, "data.train_batch_size": 8, "actor_rollout_ref.actor.ppo_mini_batch_size": 8,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 128, "critic.ppo_micro_batch_size_per_gpu": 128,
        "actor_rollout_ref.actor.optim.lr": 1e-2, "critic.optim.lr": 1e-2, "trainer.total_training_steps": 40,
        "trainer.test_freq": 10, "trainer.val_before_train": True})
    overrides = [o for o in overrides if "reward_kwargs" not in o]
    assert main(overrides) == 0
    rows = read_metrics(run)
    assert rows[0]["val/acc"] < 0.1
    assert rows[40]["val/acc"] > 0.9
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("kill_after", [3, 4])  # mid-epoch (2 steps per epoch) and at an epoch boundary
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, kill_after):
    model, data = make_tiny_setup(tmp_path)
    total = 6
    common = {"trainer.save_freq": 1, "trainer.total_training_steps": total, "trainer.resume_mode": "auto",
              "actor_rollout_ref.rollout.temperature": 1.0, "trainer.val_before_train": False}
    straight = tmp_path / "straight"
    assert main(tiny_run_overrides(model, data, straight, **common)) == 0

    broken = tmp_path / "broken"
    overrides = tiny_run_overrides(model, data, broken, **common)
    with open(tmp_path / "killed.log", "w") as log:
        proc = start_trainer(overrides, log)
        marker = broken / "latest_checkpointed_iteration.txt"
        deadline = time.monotonic() + 120
        while not (marker.exists() and int(marker.read_text() or 0) >= kill_after):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = int(marker.read_text())
    assert killed_at < total
    with open(tmp_path / "resumed.log", "w") as log:
        assert start_trainer(overrides, log).wait() == 0
    assert f"resumed from {broken / f'global_step_{killed_at}'}" in (tmp_path / "resumed.log").read_text()

    a, b = read_metrics(straight), read_metrics(broken)
    assert set(a) == set(b) == set(range(1, total + 1))
    assert_same_metrics(a, b, range(1, total + 1))


def test_val_only_validates_and_trains_nothing(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{"trainer.val_only": True,
                                                         "trainer.val_before_train": False})) == 0
    rows = read_metrics(run)
    assert list(rows) == [0] and "val/acc" in rows[0]
    assert not list(run.glob("global_step_*"))


def test_a_reward_model_on_a_pool_of_its_own_scores_every_step(tmp_path):
    """reward_model.enable_resource_pool: the reward loop's engine in a process of its own, in a whole run."""
    from rlcamp.models.tiny import build_tiny_model

    model, data = make_tiny_setup(tmp_path)
    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    run = tmp_path / "run"
    assert main(tiny_run_overrides(model, data, run, **{
        "trainer.total_training_steps": 2, "reward_model.enable": True, "reward_model.model.path": rm,
        "reward_model.enable_resource_pool": True, "reward_model.nnodes": 1, "reward_model.n_gpus_per_node": 1,
        "reward_model.num_workers": 2, "trainer.save_freq": -1})) == 0
    rows = read_metrics(run)
    assert set(rows) == {1, 2} and all("critic/rm_score/mean" in rows[s] for s in rows)
