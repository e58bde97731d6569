"""Whether bf16 pays on this CPU: matmul GFLOP/s in fp32 and bf16 for the shapes a step runs, and
what torch reports about its bf16 kernels here (``rlcamp.utils.device.cpu_matmul_is_fast``, which
decides whether the bf16 defaults become fp32).

    python benchmarks/cpu_precision.py
"""

from __future__ import annotations

import time

import torch

from rlcamp.utils.device import cpu_features, cpu_matmul_is_fast, tune_cpu

# (name, m, k, n): a SmolLM2-135M layer's MLP on 512 tokens, its vocabulary head backward
# (d logits [128, 49152] x weight [49152, 576]), and a square product
SHAPES = [("MLP up, 512 tokens: [512, 576] x [576, 1536]", 512, 576, 1536),
          ("head backward: [128, 49152] x [49152, 576]", 128, 49152, 576),
          ("square: [2048, 2048] x [2048, 2048]", 2048, 2048, 2048)]


def gflops(m: int, k: int, n: int, dtype: torch.dtype, budget_s: float = 3.0) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    start = time.perf_counter()
    a @ b  # one warm-up, which also tells how many more fit the budget
    once = time.perf_counter() - start
    repeats = max(1, min(10, int(budget_s / max(once, 1e-6))))
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    tune_cpu()
    print(f"CPU capability torch uses: {cpu_features()}; threads: {torch.get_num_threads()}; "
          f"bf16 kernels: {cpu_matmul_is_fast(torch.bfloat16)}; fp16 kernels: {cpu_matmul_is_fast(torch.float16)}")
    print("| matmul | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("| --- | --- | --- | --- |")
    for name, m, k, n in SHAPES:
        fp32, bf16 = gflops(m, k, n, torch.float32), gflops(m, k, n, torch.bfloat16)
        print(f"| {name} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.3f} |", flush=True)


if __name__ == "__main__":
    main()
