"""Training tokens/s on a batch with very uneven response lengths (SmolLM2-135M, CPU, one process).

32 responses: 4 of 256 tokens and 28 of 16, in random order (prompts ~45 tokens). One actor update
(fwd + bwd over every response, one optimizer step) in three modes, alternating A B C A B C:
  fixed:   ppo_micro_batch_size_per_gpu=8 (each micro batch padded to its longest; the order puts a
           long response in most of them)
  dynamic: use_dynamic_bsz with ppo_max_token_len_per_gpu=2400 (similar lengths grouped, trimmed)
  dynamic+packed: the same with use_remove_padding
tokens/s counts real (unpadded) tokens.

    python benchmarks/uneven_lengths.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from rlcamp.batch import Batch
    from rlcamp.config import build_config, resolve
    from rlcamp.models.prepare import prepare
    from rlcamp.utils.device import tune_cpu
    from rlcamp.workers.actor import ActorRolloutRefWorker

    tune_cpu()
    model = prepare("smollm2-135m-instruct")
    overrides = [f"actor_rollout_ref.model.path={model}", "trainer.n_gpus_per_node=1", "data.train_batch_size=32",
                 "data.max_response_length=256", "actor_rollout_ref.actor.ppo_mini_batch_size=32",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "critic.ppo_micro_batch_size_per_gpu=8",
                 "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=2400",
                 "actor_rollout_ref.model.enable_gradient_checkpointing=False", "actor_rollout_ref.actor.optim.lr=1e-7",
                 "trainer.device=cpu"]
    resolved = resolve(build_config(overrides), 64)
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
    tok = worker.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about the number {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(32)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([256] * 4 + [16] * 28)[torch.randperm(32, generator=g)]
    response_mask = (torch.arange(256)[None] < lengths[:, None]).long()
    responses = torch.randint(100, 40000, (32, 256), generator=g) * response_mask
    batch = Batch({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "responses": responses,
                   "response_mask": response_mask, "loss_mask": response_mask})
    batch.update(worker.compute_log_prob(batch))
    batch["advantages"] = torch.randn(responses.shape, generator=g) * response_mask
    real_tokens = int(enc["attention_mask"].sum() + response_mask.sum())

    base = worker.actor_cfg
    modes = {"fixed": (dataclasses.replace(base, use_dynamic_bsz=False), False),
             "dynamic": (dataclasses.replace(base, use_dynamic_bsz=True), False),
             "dynamic+packed": (dataclasses.replace(base, use_dynamic_bsz=True), True)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, (cfg, packed) in modes.items():
            worker.actor_cfg, worker.remove_padding = cfg, packed
            start = time.perf_counter()
            worker.update_actor(batch)
            times[mode].append(time.perf_counter() - start)
    fixed = statistics.median(times["fixed"])
    print(f"{real_tokens} real tokens; lengths 4 x 256 + 28 x 16 responses\n")
    print("| mode | seconds | tokens/s | speed-up |\n| --- | --- | --- | --- |")
    for mode in modes:
        t = statistics.median(times[mode])
        print(f"| {mode} | {t:.2f} | {real_tokens / t:.0f} | {fixed / t:.2f}x |")


if __name__ == "__main__":
    main()
