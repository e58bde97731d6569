"""rlcamp on the spec's work (GRPO or PPO with GAE + critic); run in rlcamp's own venv.

    python rlcamp_run.py grpo|ppo SPEC.json RESULT.json [-- KEY=VALUE ...]   (config overrides on top)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from task import StepClock, greedy_accuracy, load_spec, test_rows, train_rows, write_result


def overrides(algo: str, spec: dict, train_file: Path, run_dir: Path) -> list[str]:
    P, G, T, M = spec["prompts_per_step"], spec["samples"], spec["response_tokens"], spec["prompts_per_optimizer_step"]
    common = {
        "data.train_files": train_file, "data.val_files": "[]", "data.train_batch_size": P, "data.max_prompt_length": 128,
        "data.max_response_length": T, "data.shuffle": False, "actor_rollout_ref.model.path": spec["model"],
        "actor_rollout_ref.model.enable_gradient_checkpointing": False, "actor_rollout_ref.rollout.n": G,
        "actor_rollout_ref.rollout.temperature": 1.0, "actor_rollout_ref.rollout.dtype": "fp32",
        "actor_rollout_ref.rollout.ignore_eos": True, "actor_rollout_ref.actor.optim.lr": spec["lr"],
        "actor_rollout_ref.actor.ppo_mini_batch_size": M, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": M * G,
        "actor_rollout_ref.actor.ppo_epochs": spec["epochs"],
        "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "fp32",
        "trainer.device": "cpu", "trainer.n_gpus_per_node": 1, "trainer.total_training_steps": spec["steps"],
        "trainer.val_before_train": False, "trainer.test_freq": -1, "trainer.save_freq": -1,
        "trainer.logger": "[]", "trainer.default_local_dir": run_dir, "trainer.resume_mode": "disable",
        "trainer.seed": spec["seed"], "+custom_reward_function.reward_kwargs.format_score": 0.1,
        # the run's last step saves a checkpoint after its timing: keep it to the weights
        "actor_rollout_ref.actor.checkpoint.save_contents": "[hf_model]",
        "actor_rollout_ref.actor.checkpoint.load_contents": "[model]",
        "critic.checkpoint.save_contents": "[hf_model]", "critic.checkpoint.load_contents": "[model]",
    }
    if algo == "grpo":  # as TRL's GRPO: no KL term, token-level loss
        common.update({"algorithm.adv_estimator": "grpo", "actor_rollout_ref.actor.use_kl_loss": False,
                       "actor_rollout_ref.actor.loss_agg_mode": "token-mean"})
    else:  # as TRL's PPO: GAE(1, 0.95), KL penalty 0.05 in the reward (k1), critic
        common.update({"algorithm.adv_estimator": "gae", "algorithm.gamma": 1.0, "algorithm.lam": 0.95,
                       "algorithm.use_kl_in_reward": True, "algorithm.kl_ctrl.kl_coef": 0.05,
                       "algorithm.kl_penalty": "kl", "critic.optim.lr": spec["lr"], "critic.ppo_epochs": spec["epochs"],
                       "critic.ppo_micro_batch_size_per_gpu": M * G, "critic.model.enable_gradient_checkpointing": False,
                       "critic.model.fsdp_config.mixed_precision.param_dtype": "fp32", "critic.cliprange_value": 0.2})
    if spec.get("precision") == "bf16":  # fp32 master weights, bf16 compute, bf16 rollout copy
        common.update({"actor_rollout_ref.rollout.dtype": "bf16",
                       "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "bf16",
                       "critic.model.fsdp_config.mixed_precision.param_dtype": "bf16"})
    return [f"{k}={v}" for k, v in common.items()]


def make_trainer(algo: str, spec: dict, folder: Path, extra: list[str] = ()):
    """The spec's prompts as a parquet file in ``folder`` and a trainer on them (run folder ``folder/run``),
    with the spec's thread count; ``extra``: further config overrides."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlcamp.config import build_config, resolve
    from rlcamp.trainer.build import build_trainer

    rows = [{"data_source": "rlcamp/arith", "prompt": r["prompt"], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": r["ground_truth"]}, "extra_info": {"index": i}}
            for i, r in enumerate(train_rows(spec))]
    pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    config = build_config(overrides(algo, spec, folder / "train.parquet", folder / "run") + list(extra))
    trainer = build_trainer(resolve(config, len(rows)), folder / "run")
    torch.set_num_threads(spec["threads"])  # after build_trainer's own CPU tuning: the same threads as TRL
    return trainer


def main(algo: str, spec_path: str, out_path: str, extra: list[str] = ()) -> None:
    spec = load_spec(spec_path)
    torch.manual_seed(spec["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trainer = make_trainer(algo, spec, tmp, extra)
        worker = trainer.actor.workers[0]
        counts = {"optimizer_steps": 0}
        step_fn = worker.engine.optimizer_step

        def counted():
            counts["optimizer_steps"] += 1
            return step_fn()

        worker.engine.optimizer_step = counted
        clock = StepClock()
        try:
            trainer.fit()
        finally:
            trainer.shutdown()
        seen = 0
        for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            if "timing_s/step" not in m:
                continue
            clock.steps.append({"seconds": m["timing_s/step"], "generate_s": m["timing_s/gen"],
                                "generated_tokens": round(m["perf/generated_tokens"]),
                                "optimizer_steps": None, "reward": m["critic/score/mean"]})
            seen += 1
        per_step = counts["optimizer_steps"] / max(seen, 1)
        wall = 0.0
        for s in clock.steps:
            s["optimizer_steps"] = per_step
            wall += s["seconds"]
            s["wall"] = wall
        with worker.engine.full_precision():  # evaluated in fp32, as TRL's (autocast) model is
            accuracy = greedy_accuracy(worker.model, trainer.tokenizer, test_rows(spec), spec["eval_tokens"])
    import rlcamp

    write_result(out_path, f"rlcamp {rlcamp.__version__} {algo}", clock, accuracy, {"overrides": list(extra)})


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[4] != "--":
        sys.exit(f"expected '--' before config overrides, got {sys.argv[4]!r}")
    main(*sys.argv[1:4], sys.argv[5:])
