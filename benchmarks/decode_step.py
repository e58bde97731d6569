"""rlcamp's own rollout engine: decode steps through the model's forward against the lean decode step.

SmolLM2-135M-Instruct, the arithmetic prompts of the peer benchmark and of the main job, every row
generating exactly the new tokens asked (no EOS), sampling at temperature 1; A B A B (``--repeats``),
medians. Also the floor memory bandwidth puts under a decode step: every weight read once per step,
at the read rate this machine measures (a 1 GiB sum).

    python benchmarks/decode_step.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def read_bandwidth_gbs() -> float:
    x = torch.ones(2**29, dtype=torch.bfloat16)  # 1 GiB
    x.sum()
    start = time.perf_counter()
    for _ in range(5):
        x.sum()
    return 5 * x.numel() * x.element_size() / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from rlcamp.data.arith import row
    from rlcamp.models.cpu_attention import use_on_cpu
    from rlcamp.models.loading import load_causal_lm, load_tokenizer
    from rlcamp.models.prepare import prepare
    from rlcamp.rollout.hf import HFRollout, SamplingParams
    from rlcamp.utils.device import cpu_matmul_is_fast, tune_cpu

    tune_cpu()
    path = str(prepare("smollm2-135m-instruct"))
    tok = load_tokenizer(path)
    tok.padding_side = "left"
    bandwidth = read_bandwidth_gbs()
    print(f"read bandwidth (1 GiB sum): {bandwidth:.1f} GB/s; threads {torch.get_num_threads()}")
    print("| dtype | work (prompts x samples x tokens) | through the forward s | lean s | speed-up | "
          "lean tokens/s | decode step ms (lean) | weights-read floor ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    dtypes = [d for d in (torch.bfloat16, torch.float32) if d == torch.float32 or cpu_matmul_is_fast(d)]
    for dtype in dtypes:
        model = load_causal_lm(path, dtype=dtype).eval()
        use_on_cpu(model, {})  # as the actor's module is set up on the CPU
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        for prompts, samples, new_tokens in ((8, 4, 32), (16, 8, 32)):
            texts = [tok.apply_chat_template(row(i % 10, "+", (3 * i) % 10, i, "train")["prompt"],
                                             add_generation_prompt=True, tokenize=False) for i in range(prompts)]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            ids = enc["input_ids"].repeat_interleave(samples, 0)
            mask = enc["attention_mask"].repeat_interleave(samples, 0)
            params = SamplingParams(new_tokens, temperature=1.0)
            engines = {lean: HFRollout(model, [], tok.pad_token_id, lean_decode=lean) for lean in (False, True)}
            times = {lean: [] for lean in engines}
            outs = {}
            for engine in engines.values():
                engine.generate(ids, mask, params, torch.Generator().manual_seed(0))  # faults memory in
            for _ in range(args.repeats):
                for lean, engine in engines.items():
                    start = time.perf_counter()
                    outs[lean] = engine.generate(ids, mask, params, torch.Generator().manual_seed(0))
                    times[lean].append(time.perf_counter() - start)
            assert torch.equal(outs[True]["responses"], outs[False]["responses"])  # the same tokens
            plain, lean = statistics.median(times[False]), statistics.median(times[True])
            rows = prompts * samples
            floor_ms = weights / (bandwidth * 1e9) * 1e3
            print(f"| {str(dtype).removeprefix('torch.')} | {prompts} x {samples} x {new_tokens} | {plain:.2f} | "
                  f"{lean:.2f} | {plain / lean:.2f}x | {rows * new_tokens / lean:.0f} | {lean / new_tokens * 1e3:.1f} | "
                  f"{floor_ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
