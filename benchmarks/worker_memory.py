"""Peak memory per actor worker: one process, FSDP2 over 2, FSDP2 + offload, FSDP2 + Ulysses (3 ranks).

SmolLM2-135M actor (bf16 rollout copy included, no reference), one PPO update over 32 responses of
128 tokens (micro batch 8, fp32 master weights, AdamW). Every configuration runs in fresh Ray
worker processes, so each figure is that configuration's own peak: on CUDA the allocator's
``max_memory_allocated``, on CPU the process's peak resident set (ru_maxrss), as the workers report
in ``perf/actor_peak_memory_gb``. Also reported: the update's wall time and its loss, which must not
change with the placement.

    python benchmarks/worker_memory.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time


def run(resolved, batch, world: int, sp: int) -> dict:
    from rlcamp.controller.ray_group import RayWorkerGroup
    from rlcamp.utils.device import collective_backend
    from rlcamp.workers.actor import ActorRolloutRefWorker

    device = resolved.config.trainer.device
    group = RayWorkerGroup("rlcamp.workers.actor:ActorRolloutRefWorker", world,
                           {"config": resolved.config, "derived": resolved.derived, "device": device},
                           device=device, backend=collective_backend(device), stage_timeout_s=1800, name="actor",
                           cpus_per_worker=1, sp_size=sp, sp_methods=ActorRolloutRefWorker.SEQUENCE_PARALLEL)
    try:
        start = time.perf_counter()
        metrics = group.call("update_actor", batch)
        seconds = time.perf_counter() - start
        peaks = [group._wait([a.execute.remote("peak_memory_gb")], "peak")[0] for a in group.actors]
    finally:
        group.shutdown()
    return {"seconds": seconds, "pg_loss": metrics["actor/pg_loss"], "peaks": peaks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import ray
    import torch

    from rlcamp.batch import Batch
    from rlcamp.config import build_config, resolve
    from rlcamp.models.prepare import prepare

    model = prepare("smollm2-135m-instruct")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about the number {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(32)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    responses = torch.randint(100, 40000, (32, 128), generator=g)
    batch = Batch({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "responses": responses,
                   "response_mask": torch.ones_like(responses), "old_log_probs": torch.zeros(32, 128) - 2.0,
                   "advantages": torch.randn(32, 128, generator=g)})
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
        overrides = [f"actor_rollout_ref.model.path={model}", f"trainer.n_gpus_per_node={world}",
                     f"trainer.device={args.device}", "data.train_batch_size=16", "actor_rollout_ref.rollout.n=2", "data.max_response_length=128",
                     "actor_rollout_ref.actor.ppo_mini_batch_size=16", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
                     "critic.ppo_micro_batch_size_per_gpu=8", "actor_rollout_ref.model.enable_gradient_checkpointing=False",
                     "actor_rollout_ref.actor.optim.lr=1e-6", "algorithm.adv_estimator=grpo", *extra]  # no critic
        r = run(resolve(build_config(overrides), 64), batch, world, sp)
        peaks = " / ".join(f"{p:.2f}" for p in r["peaks"])
        print(f"| {name} | {peaks} | {r['seconds']:.1f} | {r['pg_loss']:.6f} |", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
