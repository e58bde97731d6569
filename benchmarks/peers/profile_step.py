"""Where an rlcamp step of a peer benchmark goes: per-phase seconds, and optionally torch-profiler
tables of chosen worker methods (their last call: the first ones still fault memory in).

    python benchmarks/peers/profile_step.py ppo bf16                      # phases of 3 steps
    python benchmarks/peers/profile_step.py ppo bf16 --profile actor.update_actor,critic.update_critic
    python benchmarks/peers/profile_step.py grpo bf16 -- actor_rollout_ref.model.share_prompt_prefix=False

Same work as ``harness.py --model smollm2`` (8 prompts x 4 samples x 32 tokens, 2 optimizer steps);
extra config overrides after ``--``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import matmul_peak_gflops, model_flops_per_token, model_path  # noqa: E402
from rlcamp_run import make_trainer  # noqa: E402


def profiled(method, rows: int, at_call: int, by_shape: bool = False):
    from torch.profiler import ProfilerActivity, profile

    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) != at_call:
            return method(*args, **kwargs)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
            out = method(*args, **kwargs)
        print(f"===== {method.__qualname__} (call {at_call})")
        print(prof.key_averages(group_by_input_shape=by_shape).table(sort_by="self_cpu_time_total", row_limit=rows))
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pair", choices=["grpo", "ppo"])
    parser.add_argument("precision", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--profile", default="", help="comma-separated role.method, e.g. actor.update_actor")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--by-shape", action="store_true", help="profiler rows per operator and input shapes")
    parser.add_argument("extra", nargs="*", help="config overrides")
    args = parser.parse_intermixed_args()
    spec = {"model": model_path("smollm2"), "prompts_per_step": 8, "samples": 4, "response_tokens": 32,
            "prompts_per_optimizer_step": 4, "epochs": 1, "lr": 1e-5, "steps": args.steps, "seed": 0, "n_test": 32,
            "eval_tokens": 32, "threads": 2, "precision": args.precision}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trainer = make_trainer(args.pair, spec, tmp, args.extra)
        for target in filter(None, args.profile.split(",")):
            role, name = target.split(".")
            worker = getattr(trainer, role).workers[0]
            setattr(worker, name, profiled(getattr(worker, name), args.rows, args.steps, args.by_shape))
        try:
            trainer.fit()
        finally:
            trainer.shutdown()
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    _, n_params = model_flops_per_token(args.pair, spec["model"])
    peak = matmul_peak_gflops(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    passes = {"old_log_prob": 2, "ref": 2, "values": 2, "update_actor": 6, "update_critic": 6}
    for m in rows:
        if "timing_s/step" not in m:
            continue
        print({k.split("/")[-1]: round(v, 2) for k, v in m.items() if k.startswith("timing_s")})
        rates = {stage: k * n_params * m["perf/total_num_tokens"] / m[f"timing_s/{stage}"] / 1e9
                 for stage, k in passes.items() if m.get(f"timing_s/{stage}")}
        print("  GFLOP/s of the work: " + ", ".join(f"{stage} {r:.0f} ({r / peak:.0%})" for stage, r in rates.items())
              + f"  [square {args.precision} peak {peak:.0f}]")


if __name__ == "__main__":
    main()
