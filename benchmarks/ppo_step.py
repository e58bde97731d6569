"""Benchmarks on SmolLM2-135M-Instruct, CPU.

1. One PPO step of the main job's work order, per stage: seconds and tokens/s (median of --steps).
2. Rollout tokens/s of rlcamp's engine vs transformers' ``model.generate`` on the same prompts,
   same dtype, same sampling, interleaved A B A B; reported as medians and their ratio.

    python benchmarks/ppo_step.py [--steps 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def ppo_step_stages(steps: int) -> dict[str, float]:
    from _main_job import main_job_trainer

    trainer = main_job_trainer("/tmp/rlcamp_bench_run")
    rows = []
    loader = iter(trainer.loader)
    for _ in range(steps):
        trainer.global_step += 1
        rows.append(trainer.step(next(loader)))
    keys = [k for k in rows[0] if k.startswith(("timing_s/", "perf/"))]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def rollout_vs_generate(repeats: int, batch: int = 32, new_tokens: int = 64) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcamp.models.prepare import prepare
    from rlcamp.rollout.hf import HFRollout, SamplingParams

    path = prepare("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    texts = [tok.apply_chat_template([{"role": "user", "content": f"What is {a} + {a * 7 % 10}? "
                                       "Write the final answer after ####."}], add_generation_prompt=True,
                                     tokenize=False) for a in range(batch)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    engine = HFRollout(copy.deepcopy(model), [tok.eos_token_id], tok.pad_token_id)
    # ignore EOS on both sides so both produce exactly batch x new_tokens tokens (equal work)
    engine.eos = torch.tensor([-1])
    params = SamplingParams(new_tokens, temperature=1.0)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = engine.generate(enc["input_ids"], enc["attention_mask"], params, torch.Generator().manual_seed(0))
        ours.append(out["response_mask"].sum().item() / (time.perf_counter() - start))
        start = time.perf_counter()
        gen = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
        theirs.append((gen.shape[1] - enc["input_ids"].shape[1]) * batch / (time.perf_counter() - start))
    return {"rlcamp_tokens_per_s": statistics.median(ours), "generate_tokens_per_s": statistics.median(theirs),
            "ratio": statistics.median(ours) / statistics.median(theirs)}


def main() -> None:
    from rlcamp.utils.device import tune_cpu

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tune_cpu()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    stages = ppo_step_stages(args.steps)
    print("\n| stage | seconds | tokens/s |\n| --- | --- | --- |")
    for stage in ("gen", "reward", "old_log_prob", "values", "adv", "update_critic", "update_actor", "step"):
        rate = stages.get(f"perf/{stage}_tokens_per_s")
        print(f"| {stage} | {stages[f'timing_s/{stage}']:.2f} | {rate:.0f} |" if rate else
              f"| {stage} | {stages[f'timing_s/{stage}']:.2f} | |")
    rollout = rollout_vs_generate(args.repeats)
    print(f"\nrollout, 32 prompts x 64 new tokens, bf16, T=1.0: rlcamp {rollout['rlcamp_tokens_per_s']:.0f} tok/s, "
          f"transformers generate {rollout['generate_tokens_per_s']:.0f} tok/s, ratio {rollout['ratio']:.2f}x")


if __name__ == "__main__":
    main()
