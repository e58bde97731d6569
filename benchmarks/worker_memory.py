"""Peak memory per actor worker: one process, FSDP2 over 2, FSDP2 + offload, FSDP2 + Ulysses (3 ranks).

SmolLM2-135M actor (bf16 rollout copy included, no reference), one PPO update over 32 responses of
128 tokens (micro batch 8, fp32 master weights, AdamW). Every configuration runs in fresh Ray
worker processes, so each figure is that configuration's own peak: on CUDA the allocator's
``max_memory_allocated``, on CPU the process's peak resident set (ru_maxrss), as the workers report
in ``perf/actor_peak_memory_gb``. Also reported: the update's wall time and its loss, which must not
change with the placement.

    python benchmarks/worker_memory.py [--device cpu|cuda]

``--single-device`` (no Ray: one device, each configuration in a fresh process) compares plain,
optimizer offload, and FSDP2 parameter + optimizer offload over a one-rank group. Each runs two
updates (the second finds the optimizer state where the first left it) and reports the peak
during them and the memory the worker holds between steps. ``--model random`` uses a model of
SmolLM2-135M's shape with random weights, built from its config (no download, no package):

    python benchmarks/worker_memory.py --single-device --device cuda --model random
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# SmolLM2-135M's architecture (its config.json), for --model random
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0,
                     rms_norm_eps=1e-5)
SINGLE_DEVICE = {"plain": [], "optimizer offload": ["actor_rollout_ref.actor.fsdp_config.optimizer_offload=True"],
                 "FSDP2 (1 rank) param + optimizer offload": [
                     "actor_rollout_ref.actor.fsdp_config.param_offload=True",
                     "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True"]}


def run(resolved, batch, world: int, sp: int) -> dict:
    from rlcamp.controller.ray_group import RayWorkerGroup
    from rlcamp.utils.device import collective_backend

    device = resolved.config.trainer.device
    group = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", world,
                           {"config": resolved.config, "derived": resolved.derived, "device": device},
                           device=device, backend=collective_backend(device), stage_timeout_s=1800, name="actor",
                           cpus_per_worker=1)
    try:
        start = time.perf_counter()
        metrics = group.call("update_actor", batch)
        seconds = time.perf_counter() - start
        peaks = [group._wait([a.execute.remote("peak_memory_gb")], "peak")[0] for a in group.actors]
    finally:
        group.shutdown()
    return {"seconds": seconds, "pg_loss": metrics["actor/pg_loss"], "peaks": peaks}


def model_and_batch(model_arg: str, folder: Path):
    import torch
    from transformers import AutoTokenizer

    from rlcamp.batch import Batch

    if model_arg == "random":
        from rlcamp.models.tiny import build_tiny_model

        model = folder / "random_smollm2_shape"
        if not (model / "config.json").exists():
            build_tiny_model(model, "llama", **SMOLLM2_SHAPE)
    else:
        from rlcamp.models.prepare import prepare

        model = prepare("smollm2-135m-instruct") if model_arg == "smollm2" else Path(model_arg)
    tok = AutoTokenizer.from_pretrained(model)
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about the number {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(32)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(100, 40000, (32, 128), generator=g)
    batch = Batch({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "responses": responses,
                   "response_mask": torch.ones_like(responses), "loss_mask": torch.ones_like(responses), "old_log_probs": torch.zeros(32, 128) - 2.0,
                   "advantages": torch.randn(32, 128, generator=g)})
    return model, batch


def overrides(model, device: str, world: int, extra: list[str]) -> list[str]:
    return [f"actor_rollout_ref.model.path={model}", f"trainer.n_gpus_per_node={world}",
            f"trainer.device={device}", "data.train_batch_size=16", "actor_rollout_ref.rollout.n=2",
            "data.max_response_length=128", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "critic.ppo_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.model.enable_gradient_checkpointing=False", "actor_rollout_ref.actor.optim.lr=1e-6",
            "algorithm.adv_estimator=grpo", *extra]  # no critic


def one_device(spec: dict) -> dict:
    """One configuration in this process: the worker, two updates, its memory (run by --single-device)."""
    import torch

    from rlcamp.config import build_config, resolve
    from rlcamp.utils import dist
    from rlcamp.workers.actor import ActorRolloutRefWorker

    model, batch = model_and_batch(spec["model"], Path(spec["folder"]))
    resolved = resolve(build_config(overrides(model, spec["device"], 1, spec["extra"])), 64)
    device = torch.device(spec["device"])
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived, spec["device"])

    def held() -> float:  # what the worker keeps on the device (CPU: not measured)
        return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    at_start = held()
    seconds, losses = [], []
    for _ in range(2):
        start = time.perf_counter()
        losses.append(worker.update_actor(batch)["actor/pg_loss"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return {"peak_gb": dist.peak_memory_gb(device), "held_at_start_gb": at_start, "held_between_steps_gb": held(),
            "seconds": seconds, "pg_loss": losses}


def single_device(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        model_and_batch(args.model, Path(folder))  # built once, before the timed processes
        print(f"| configuration ({args.device}, one device) | peak GiB | held at start GiB | held between "
              "steps GiB | update s (1st, 2nd) | pg_loss (1st, 2nd) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, extra in SINGLE_DEVICE.items():
            spec = json.dumps({"model": args.model, "folder": folder, "device": args.device, "extra": extra})
            out = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} | | | | |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {r['peak_gb']:.2f} | {r['held_at_start_gb']:.2f} | {r['held_between_steps_gb']:.2f} | "
                  f"{r['seconds'][0]:.2f}, {r['seconds'][1]:.2f} | {r['pg_loss'][0]:.6f}, {r['pg_loss'][1]:.6f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="smollm2", help="smollm2 | random (SmolLM2-135M's shape) | a local path")
    parser.add_argument("--single-device", action="store_true", help="no Ray: one device, offload variants")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_device(json.loads(args.one))))
        return
    if args.single_device:
        single_device(args)
        return
    import ray

    from rlcamp.config import build_config, resolve

    model, batch = model_and_batch(args.model, Path(tempfile.mkdtemp()))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    configs = [("1 process", 1, 1, []),
               ("FSDP2 x2", 2, 1, []),
               ("FSDP2 x2 + param/optimizer offload", 2, 1,
                ["actor_rollout_ref.actor.fsdp_config.param_offload=True",
                 "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True"]),
               # SmolLM2-135M has 9 attention heads: Ulysses degree 3 (2 would not split them)
               ("FSDP2 x3 + Ulysses 3 (one data-parallel rank)", 3, 3,
                ["actor_rollout_ref.actor.ulysses_sequence_parallel_size=3"])]
    print(f"| configuration | peak per worker (GiB, {args.device}) | update s | pg_loss |")
    print("| --- | --- | --- | --- |")
    for name, world, sp, extra in configs:
        r = run(resolve(build_config(overrides(model, args.device, world, extra)), 64), batch, world, sp)
        peaks = " / ".join(f"{p:.2f}" for p in r["peaks"])
        print(f"| {name} | {peaks} | {r['seconds']:.1f} | {r['pg_loss']:.6f} |", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
