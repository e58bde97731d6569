"""One PPO actor update of SmolLM2-135M under each training layout, side by side: FSDP2 (+ Ulysses),
Megatron-style pipeline, context and tensor parallel (``strategy=megatron``), at 2 and 3 processes.

The work is worker_memory.py's: 32 responses of 128 tokens, micro batch 8, fp32 master weights,
bf16 compute, AdamW, the bf16 rollout copy held next to the actor. Each configuration runs in fresh
Ray worker processes (its peak is its own: ru_maxrss on CPU, max_memory_allocated on CUDA), and the
whole list runs ``--rounds`` times interleaved, so a noisy neighbour hits every layout alike.
SmolLM2-135M has 9 attention heads and 3 KV heads: tensor parallelism splits it 3 ways, not 2.

    python benchmarks/megatron_layouts.py [--device cpu|cuda] [--rounds 2] [--only "Megatron CP=2" ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from worker_memory import model_and_batch, overrides, run  # noqa: E402

BF16 = ["actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=bf16",
        "actor_rollout_ref.actor.megatron.dtype=bfloat16"]
MEGATRON = ["actor_rollout_ref.actor.strategy=megatron"]
CONFIGS = [  # name, processes, overrides
    ("FSDP2 x2", 2, []),
    ("Megatron PP=2", 2, [*MEGATRON, "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2"]),
    ("Megatron CP=2", 2, [*MEGATRON, "actor_rollout_ref.actor.megatron.context_parallel_size=2"]),
    # 32 responses do not split over 3 data-parallel ranks: at 3 processes every layout is one copy split 3 ways
    ("FSDP2 x3 + Ulysses 3", 3, ["actor_rollout_ref.actor.ulysses_sequence_parallel_size=3"]),
    ("Megatron PP=3", 3, [*MEGATRON, "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=3"]),
    ("Megatron TP=3", 3, [*MEGATRON, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=3"]),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2", help="smollm2 | random (SmolLM2-135M's shape) | a local path")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run these layouts (names as in the table; FSDP2 x2 always runs)")
    args = parser.parse_args()
    configs = [c for c in CONFIGS if not args.only or c[0] == "FSDP2 x2" or c[0] in args.only]
    import ray

    from rlcamp.config import build_config, resolve

    model, batch = model_and_batch(args.model, Path(tempfile.mkdtemp()))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    results: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for _ in range(args.rounds):
        for name, world, extra in configs:
            resolved = resolve(build_config(overrides(model, args.device, world, [*BF16, *extra])), 64)
            results[name].append(run(resolved, batch, world, 1))
            print(f"{name}: {results[name][-1]}", file=sys.stderr, flush=True)
    ray.shutdown()
    base = statistics.median(r["seconds"] for r in results["FSDP2 x2"])
    print(f"| layout | processes | update s (median of {args.rounds}) | vs FSDP2 x2 | peak per rank GiB "
          f"({args.device}) | pg_loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, world, _ in configs:
        runs = results[name]
        seconds = statistics.median(r["seconds"] for r in runs)
        peaks = " / ".join(f"{max(r['peaks'][i] for r in runs):.2f}" for i in range(world))
        print(f"| {name} | {world} | {seconds:.1f} | {seconds / base:.2f}x | {peaks} | {runs[0]['pg_loss']:.6f} |")


if __name__ == "__main__":
    main()
