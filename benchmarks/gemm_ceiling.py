"""How fast can a training step of this model go on this CPU if it were nothing but its matrix products?

    python benchmarks/gemm_ceiling.py [--model smollm2] [--dtype bf16] [--tokens 692] [--head-rows 512]

Lists the GEMMs of one forward + backward of a decoder layer stack (q, k, v, o, gate, up, down: the forward
product, the input gradient and the weight gradient of each) and of the output head at the response
positions, times each at its own shape (best of a few repeats, the machine's threads), and reports the
FLOP-weighted rate they reach together: the ceiling a step made only of these products could reach, against
the square 2048^3 product the peer harness calls the machine's peak. Defaults: the peer work's actor micro
batch on SmolLM2-135M (4 distinct prompts of ~45 tokens shared by 16 samples of 32 tokens: 692 positions,
512 of them responses). Attention's score products are left out (as in the harness's FLOP count).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rate(m: int, k: int, n: int, dtype: torch.dtype, min_s: float = 0.2, a_t: bool = False, b_t: bool = False) -> float:
    """GFLOP/s of an [m, k] x [k, n] product, best of repeated timings; ``a_t`` / ``b_t``: that operand is the
    transposed view of a contiguous tensor, as nn.Linear's products see them."""
    a = torch.randn(k, m, dtype=dtype).t() if a_t else torch.randn(m, k, dtype=dtype)
    b = torch.randn(n, k, dtype=dtype).t() if b_t else torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, spent = float("inf"), 0.0
    while spent < min_s:
        start = time.perf_counter()
        a @ b
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2 * m * k * n / best / 1e9


def linear_gemms(name: str, tokens: int, fan_in: int, fan_out: int) -> list[tuple[str, int, int, int, bool, bool]]:
    """(name, m, k, n, a transposed, b transposed) of one nn.Linear (weight W [out, in]): forward y = x W^T,
    input gradient dX = dY W, weight gradient dW = dY^T x."""
    return [(f"{name} forward", tokens, fan_in, fan_out, False, True), (f"{name} dX", tokens, fan_out, fan_in, False, False),
            (f"{name} dW", fan_out, tokens, fan_in, True, False)]


def layer_gemms(tokens: int, hidden: int, inter: int, q_out: int, kv_out: int) -> list[tuple]:
    """The GEMMs of one decoder layer's linear maps."""
    out = []
    for name, fan_in, fan_out in (("q", hidden, q_out), ("k", hidden, kv_out), ("v", hidden, kv_out),
                                  ("o", q_out, hidden), ("gate", hidden, inter), ("up", hidden, inter),
                                  ("down", inter, hidden)):
        out += linear_gemms(name, tokens, fan_in, fan_out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model rlcamp prepares, or a folder")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--tokens", type=int, default=692, help="positions in one micro batch")
    parser.add_argument("--head-rows", type=int, default=512, help="positions the output head runs at")
    args = parser.parse_args()
    from transformers import AutoConfig

    from benchmarks.learning import cpu_kind
    from rlcamp.models.prepare import prepare

    cfg = AutoConfig.from_pretrained(args.model if Path(args.model).is_dir() else prepare(args.model))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    gemms = layer_gemms(args.tokens, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * head_dim,
                        cfg.num_key_value_heads * head_dim)
    head = linear_gemms("head", args.head_rows, cfg.hidden_size, cfg.vocab_size)
    rows, flops, seconds = [], 0.0, 0.0
    for name, m, k, n, a_t, b_t in gemms + head:
        r = rate(m, k, n, dtype, a_t=a_t, b_t=b_t)
        count = cfg.num_hidden_layers if name.split()[0] != "head" else 1
        f = 2.0 * m * k * n * count
        flops, seconds = flops + f, seconds + f / (r * 1e9)
        rows.append({"gemm": name, "shape": [m, k, n], "gflops_per_s": round(r, 1), "share_of_flops": f})
    peak = rate(2048, 2048, 2048, dtype, min_s=1.0)
    for r in rows:
        r["share_of_flops"] = round(r["share_of_flops"] / flops, 4)
    ceiling = flops / seconds / 1e9
    print(f"{cpu_kind()}, {torch.get_num_threads()} threads, {args.dtype}, {args.model}: "
          f"{args.tokens} positions, head at {args.head_rows}\n")
    print("| GEMM | m x k x n | GFLOP/s | share of the step's GEMM FLOPs |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['gemm']} | {' x '.join(map(str, r['shape']))} | {r['gflops_per_s']:.0f} | "
              f"{r['share_of_flops']:.1%} |")
    print(f"\nsquare 2048^3 peak: {peak:.0f} GFLOP/s; this step's GEMMs together: {ceiling:.0f} GFLOP/s "
          f"({ceiling / peak:.0%} of the peak); {flops / 1e9:.0f} GFLOP per micro batch forward + backward")
    print(json.dumps({"peak": round(peak), "ceiling": round(ceiling), "gflop": round(flops / 1e9, 1)}))


if __name__ == "__main__":
    main()
