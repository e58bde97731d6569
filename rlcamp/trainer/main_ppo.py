"""The verl-style entry point: ``python -m rlcamp.trainer.main_ppo [--dry-run] [--config FILE] key=value ...``.

One launch line = one config. ``--dry-run`` validates, checks what can be checked before a model
loads (data files, model folders, the reward function, the sandbox; ``rlcamp.trainer.preflight``),
prints the resolved config and the derived batch plan, and exits without writing anything.

Problems found by rlcamp's own checks print as ``rlcamp: ...`` and exit with code 2, without a
traceback; ``RLCAMP_DEBUG=1`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from rlcamp.config import ConfigError, ResolvedConfig, config_to_yaml, resolve
from rlcamp.config.loader import assemble
from rlcamp.data.files import DataError, count_records, expand


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are rlcamp telling the user what to fix (exit code 2, no traceback)."""
    from rlcamp.models.loading import ModelError
    from rlcamp.rewards.registry import RewardError
    from rlcamp.sandbox.client import SandboxUnavailable
    from rlcamp.trainer.checkpoint import CheckpointError
    from rlcamp.trainer.faults import NonFiniteError
    from rlcamp.workers.memory import OutOfMemory
    from rlcamp.trainer.preflight import PreflightError
    from rlcamp.trainer.run import RunFolderError

    return (ConfigError, DataError, ModelError, RewardError, SandboxUnavailable, PreflightError, RunFolderError,
            CheckpointError, NonFiniteError, OutOfMemory)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="rlcamp train", description="PPO / GRPO / RLOO / REINFORCE++ post-training, configured by key=value "
        "overrides with verl's key names (e.g. data.train_batch_size=64 actor_rollout_ref.rollout.n=4).")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the resolved config, and exit")
    parser.add_argument("--config", help="a YAML file of settings, applied before the key=value overrides")
    parser.add_argument("--config-path", help="(Hydra style) folder of the YAML file named by --config-name")
    parser.add_argument("--config-name", help="(Hydra style) YAML file name, with or without .yaml")
    parser.add_argument("overrides", nargs="*", help="key=value settings; +key=value is accepted as in verl")
    args, unknown = parser.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("-")]
    if stray:
        parser.error(f"unknown option(s) {stray}")
    return args, args.overrides + unknown


def _config_tree(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    """The settings of --config FILE or --config-path/--config-name (verl's named configs included)."""
    from rlcamp.config.named import load_file, load_named

    if args.config and (args.config_path or args.config_name):
        raise ConfigError(["give either --config FILE or --config-path/--config-name, not both"])
    if args.config_name:
        return load_named(args.config_path, args.config_name)
    if args.config:
        path = Path(args.config).expanduser()
        if not path.is_file():
            raise ConfigError([f"--config {path}: no such file"])
        return load_file(path), None
    if args.config_path:
        raise ConfigError([f"--config-path={args.config_path} needs --config-name=<file in it, or ppo_trainer / "
                           "ppo_megatron_trainer>"])
    return None, None


def count_train_prompts(files: list[str]) -> int | None:
    """Rows in the training files, or None when some file is not there yet (a dry run may precede data)."""
    if not all(expand(f).exists() for f in files):
        return None
    return sum(count_records(f) for f in files)


def describe(resolved: ResolvedConfig) -> str:
    d = resolved.derived
    lines = [
        f"devices: {d.n_devices} ({d.dp_size} data-parallel ranks); responses per step: {d.responses_per_step}",
        f"actor: {d.actor.mini_batches_per_epoch} mini batch(es) of {d.actor.mini_batch_prompts} prompts per epoch, "
        f"{d.actor.optimizer_steps_per_train_step} optimizer step(s) per training step, micro batch "
        f"{d.actor.micro_batch_per_device} x {d.actor.grad_accum_steps} accumulation per device",
    ]
    if d.critic:
        lines.append(f"critic: {d.critic.optimizer_steps_per_train_step} optimizer step(s) per training step, micro "
                     f"batch {d.critic.micro_batch_per_device} x {d.critic.grad_accum_steps} accumulation per device")
    lines.append(f"reference model: {'yes' if d.uses_ref else 'no (no KL in loss or reward)'}; "
                 f"critic: {'yes' if d.uses_critic else 'no'}")
    if d.total_training_steps is not None:
        per_epoch = f"{d.steps_per_epoch} steps/epoch over {d.n_train_prompts} prompts, " if d.steps_per_epoch else ""
        lines.append(f"training steps: {per_epoch}{d.total_training_steps} in total; actor warm-up "
                     f"{d.actor_lr_warmup_steps} steps")
    else:
        lines.append("training steps: unknown until the training files exist")
    arr = resolved.config.actor_rollout_ref
    if arr.rollout.name == "hf" and arr.actor.strategy == "megatron" and arr.rollout.tensor_model_parallel_size > 1:
        lines.append(f"rollout: {_where_rollout_decodes(arr)}")
    lines += [f"warning: {w}" for w in resolved.warnings]
    lines += [f"warning: a run here would stop: {b}" for b in resolved.blockers]
    return "\n".join(lines)


def _where_rollout_decodes(arr) -> str:
    """rlcamp's engine next to a Megatron actor: on the actor's own shards, or on a split copy and why."""
    from rlcamp.workers.actor import decodes_on_trainer_shards

    tp = arr.rollout.tensor_model_parallel_size
    if decodes_on_trainer_shards(arr.rollout, arr.actor, moe=False):
        return f"rlcamp's engine decodes on the actor's own TP-{tp} shards (no copy, nothing refreshed after an update)"
    copy = f"rlcamp's engine decodes on its own copy split over {tp} ranks, refreshed after every update"
    if decodes_on_trainer_shards(arr.rollout, arr.actor, moe=True):  # only sequence parallelism stands in the way
        return (f"{copy} (a dense model's sequence parallelism splits every sequence, a one-token decode step cannot "
                "be: with actor.megatron.sequence_parallel=False, or a MoE model, it decodes on the actor's shards)")
    return (f"{copy} (it decodes on the actor's shards at the actor's TP with one pipeline stage, no context "
            "parallelism and EP 1)")


def load(argv: list[str]) -> tuple[argparse.Namespace, ResolvedConfig]:
    """The config and the checks that need the disk, all their problems in one round: a setting
    that is wrong is left out so that the checks after it still run on the rest."""
    from rlcamp.trainer.preflight import preflight

    args, overrides = parse_args(argv)
    problems: list[str] = []
    try:
        tree, origin = _config_tree(args)
    except ConfigError as exc:
        problems += exc.problems
        tree, origin = None, None
    loaded, found = assemble(overrides, tree=tree)
    problems += found
    n_prompts = count_train_prompts(loaded.config.data.train_files)
    resolved = None
    try:
        resolved = resolve(loaded, n_prompts)
    except ConfigError as exc:
        problems += exc.problems
    checks = preflight(resolved.config if resolved else loaded.config)
    problems += checks.problems
    if problems:
        raise ConfigError(problems)
    notes = [origin] if origin else []
    return args, replace(resolved, warnings=notes + resolved.warnings + checks.warnings,
                         blockers=resolved.blockers + checks.blockers)


def main(argv: list[str] | None = None) -> int:
    from rlcamp.controller.ray_group import WorkerError
    from rlcamp.rollout.base import RolloutEngineDied
    from rlcamp.trainer.preflight import PreflightError

    argv = sys.argv[1:] if argv is None else argv
    try:
        args, resolved = load(argv)
        print(config_to_yaml(resolved.config), end="")
        print("# ---- derived ----")
        print("\n".join(f"# {line}" for line in describe(resolved).splitlines()))
        if args.dry_run:
            return 0
        if resolved.blockers:
            raise PreflightError(resolved.blockers)
        from rlcamp.trainer.preflight import fetch_modelscope_models
        from rlcamp.trainer.run import run_training

        return run_training(replace(resolved, config=fetch_modelscope_models(resolved.config)))
    except user_errors() as exc:
        if os.environ.get("RLCAMP_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"rlcamp: {exc}", file=sys.stderr)
        return 2
    except (WorkerError, RolloutEngineDied) as exc:  # the workers were torn down; the last checkpoint is intact
        restarts = resolved.config.trainer.max_restarts
        hint = ("; trainer.max_restarts=K restarts the workers and resumes from the last checkpoint by itself"
                if exc.restartable and not restarts else f" (after {restarts} restart(s))" if exc.restartable else "")
        print(f"rlcamp: the run stopped: {exc}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
