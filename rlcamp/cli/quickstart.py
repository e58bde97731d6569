"""The main job: PPO (GAE + critic) on SmolLM2-135M-Instruct for GSM8K-format arithmetic, on CPU.

`make run` / `rlcamp quickstart` prepares the model and the data, validates greedily before
training, trains, validates again, and prints both accuracies and where everything went. The same
run as a work order: examples/ppo_trainer/run_smollm2_135m_arith_cpu.sh.
"""

from __future__ import annotations

import json
from pathlib import Path

# the work order's settings (the .sh script lists the same keys; a test keeps them equal)
MAIN_JOB = [
    "algorithm.adv_estimator=gae",
    "data.train_batch_size=16",
    "data.max_prompt_length=128",
    "data.max_response_length=32",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.rollout.temperature=0.8",
    "actor_rollout_ref.actor.optim.lr=1e-5",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.model.enable_gradient_checkpointing=False",
    "critic.optim.lr=5e-5",
    "critic.ppo_micro_batch_size_per_gpu=32",
    "critic.model.enable_gradient_checkpointing=False",
    "+custom_reward_function.reward_kwargs.format_score=0.1",
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "trainer.total_training_steps=14",
    "trainer.val_before_train=True",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
    "trainer.logger=[console,file]",
    "trainer.project_name=rlcamp_quickstart",
    "trainer.experiment_name=smollm2_135m_arith_ppo",
]


def run(extra: list[str], data_dir: str = "~/data/rlcamp_arith", run_dir: str | None = None) -> int:
    from rlcamp.data.arith import write_splits
    from rlcamp.models.prepare import prepare
    from rlcamp.trainer.main_ppo import main as train_main

    model = prepare("smollm2-135m-instruct")
    train, test = write_splits(data_dir, n_test=32, digits=1)
    run_dir = Path(run_dir or "checkpoints/rlcamp_quickstart/smollm2_135m_arith_ppo").expanduser()
    # a run folder given among the overrides wins, and the summary below reads that one
    given = [o.split("=", 1)[1] for o in extra if o.lstrip("+").startswith("trainer.default_local_dir=")]
    run_dir = Path(given[-1]).expanduser() if given else run_dir
    overrides = MAIN_JOB + [f"actor_rollout_ref.model.path={model}", f"data.train_files={train}",
                            f"data.val_files={test}", f"trainer.default_local_dir={run_dir}",
                            "trainer.resume_mode=disable"] + extra
    code = train_main(overrides)
    if code != 0:
        return code
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    before = next(r for r in rows if r["step"] == 0)
    after = [r for r in rows if "val/acc" in r][-1]
    print(f"\nGSM8K-format arithmetic, greedy accuracy: before {before['val/acc']:.1%} -> after {after['val/acc']:.1%} "
          f"({after['step']} PPO steps)")
    print(f"checkpoints: {run_dir}/global_step_{after['step']}/ (actor/huggingface loads with transformers)")
    print(f"metrics: {run_dir}/metrics.jsonl; resolved config: {run_dir}/resolved_config.yaml")
    return 0
