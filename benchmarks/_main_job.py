"""The main job's trainer on SmolLM2-135M, built the same way for every benchmark that needs it."""

from __future__ import annotations

from pathlib import Path


def main_job_trainer(run_dir: str):
    from rlcamp.cli.quickstart import MAIN_JOB
    from rlcamp.config import build_config, resolve
    from rlcamp.data.arith import write_splits
    from rlcamp.models.prepare import prepare
    from rlcamp.trainer.build import build_trainer

    model = prepare("smollm2-135m-instruct")
    train, test = write_splits("/tmp/rlcamp_bench_arith", n_test=32)
    overrides = MAIN_JOB + [f"actor_rollout_ref.model.path={model}", f"data.train_files={train}",
                            f"data.val_files={test}", f"trainer.default_local_dir={run_dir}", "trainer.resume_mode=disable"]
    return build_trainer(resolve(build_config(overrides), 68), Path(run_dir))
