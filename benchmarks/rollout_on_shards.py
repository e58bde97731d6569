"""rlcamp's rollout at TP=T next to a Megatron actor at TP=T: its own split bf16 copy, refreshed after every
update (``TensorParallelRollout``), against decoding on the actor's own shards (``TrainerShardsRollout``: fp32
weights under bf16 autocast, nothing to refresh), side by side.

SmolLM2-135M-Instruct (9 heads, 3 KV heads: T = 3 processes), 32 chat prompts x 64 new tokens (EOS ignored,
so both do the same work), temperature 1. Each mode runs in fresh gloo processes (its memory is its own:
resident memory after the rollout is built minus before, and the peak); modes alternate A B A B over
``--rounds``. Reported per mode: one refresh (export + load; 0 when shared), one generation, memory.

    python benchmarks/rollout_on_shards.py [--rounds 2] [--tp 3] [--model smollm2|PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def _run(rank: int, world: int, port: int, path: str, mode: str, out: str) -> None:
    from transformers import AutoTokenizer

    from rlcamp.config.schema import OptimConfig
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm
    from rlcamp.rollout.hf import SamplingParams
    from rlcamp.rollout.tensor_parallel import TensorParallelRollout, TrainerShardsRollout
    from rlcamp.utils.dist import init_distributed

    torch.set_num_threads(1)
    init_distributed(rank, world, "127.0.0.1", port, "gloo", 600)
    tok = AutoTokenizer.from_pretrained(path)
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Write a short story about the number {i}."}],
                                     add_generation_prompt=True, tokenize=False) for i in range(32)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    mine = slice(rank * 32 // world, (rank + 1) * 32 // world)  # plain data parallel hands each rank its prompts
    ids, mask = enc["input_ids"][mine], enc["attention_mask"][mine]
    actor = load_causal_lm(path, dtype=torch.float32)
    engine = MegatronEngine(actor, device=torch.device("cpu"), tp=world, key="tp", optim=OptimConfig(lr=1e-6))
    before = _rss_gib()
    cpu = torch.device("cpu")
    if mode == "copy":
        rollout = TensorParallelRollout(actor, world, [], tok.pad_token_id, torch.bfloat16, cpu)
    else:
        rollout = TrainerShardsRollout(actor, world, [], tok.pad_token_id, torch.bfloat16, cpu)

    def refresh() -> float:
        start = time.perf_counter()
        if mode == "copy":
            rollout.load_weights(dict(engine.export_weights()))
        return time.perf_counter() - start

    refresh()
    held = _rss_gib() - before
    params = SamplingParams(64, temperature=1.0)
    rollout.generate(ids, mask, params, torch.Generator().manual_seed(0))  # warm-up
    sync_s = refresh()
    start = time.perf_counter()
    got = rollout.generate(ids, mask, params, torch.Generator().manual_seed(0))
    generate_s = time.perf_counter() - start
    assert int(got["response_mask"].sum()) == ids.shape[0] * 64
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"sync_s": sync_s, "generate_s": generate_s, "held_gib": held, "peak_gib": peak}, f)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tp", type=int, default=3)
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    from rlcamp.models.prepare import prepare
    from rlcamp.utils.dist import free_port

    path = str(prepare("smollm2-135m-instruct")) if args.model == "smollm2" else args.model
    modes = {"copy": "own bf16 copy (TensorParallelRollout)", "shards": "actor's shards (TrainerShardsRollout)"}
    results: dict[str, list[dict]] = {m: [] for m in modes}
    root = Path(tempfile.mkdtemp())
    for _ in range(args.rounds):
        for mode in modes:
            out = str(root / mode)
            mp.spawn(_run, args=(args.tp, free_port(), path, mode, out), nprocs=args.tp, join=True)
            ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(args.tp)]
            results[mode].append({k: max(r[k] for r in ranks) for k in ranks[0]})
            print(mode, results[mode][-1], file=sys.stderr, flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    print(f"| rollout at TP={args.tp} | refresh s | generate s (32 x 64 tokens) | rollout memory per rank GiB | "
          f"peak per rank GiB |")
    print("| --- | --- | --- | --- | --- |")
    for mode, label in modes.items():
        r = med[mode]
        print(f"| {label} | {r['sync_s']:.2f} | {r['generate_s']:.2f} | {r['held_gib']:.3f} | {r['peak_gib']:.2f} |")
    print(f"generate time shards / copy: {med['shards']['generate_s'] / med['copy']['generate_s']:.2f}; medians of "
          f"{args.rounds} rounds, the slowest rank of each")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
