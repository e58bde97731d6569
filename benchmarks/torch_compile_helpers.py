"""actor.use_torch_compile: the full-logits log-prob and entropy helpers, eager against torch.compile.

These helpers run for model families without rlcamp's chunked head (Gemma 2's soft-capped head,
MoE models); dense families take their log-probs from the hidden states chunk by chunk and never
call them. Forward (and forward + backward) over [rows, vocab] fp32 logits, SmolLM2's vocabulary,
interleaved eager / compiled, medians of --repeats.

    python benchmarks/torch_compile_helpers.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlcamp.models.forward import logit_helpers
from rlcamp.utils.device import cpu_features, tune_cpu

VOCAB = 49152


def timed(helpers, rows: int, backward: bool, generator: torch.Generator) -> float:
    log_probs_of, entropy_of = helpers
    logits = torch.randn(rows, VOCAB, generator=generator, requires_grad=backward)
    labels = torch.randint(0, VOCAB, (rows,), generator=generator)
    start = time.perf_counter()
    lp, ent = log_probs_of(logits, labels), entropy_of(logits)
    if backward:
        (lp.sum() + ent.sum()).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tune_cpu()
    g = torch.Generator().manual_seed(0)
    eager, compiled = logit_helpers(False), logit_helpers(True)
    start = time.perf_counter()
    for rows in (300, 257):  # two shapes: compiled once with dynamic shapes
        timed(compiled, rows, True, g)
    print(f"CPU {cpu_features()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"first compile {time.perf_counter() - start:.1f} s")
    print("\n| rows | pass | eager s | compiled s | speed-up |\n| --- | --- | --- | --- | --- |")
    for rows in (128, 512, 1024):
        for backward in (False, True):
            e, c = [], []
            for _ in range(args.repeats):  # interleaved
                e.append(timed(eager, rows, backward, g))
                c.append(timed(compiled, rows, backward, g))
            me, mc = statistics.median(e), statistics.median(c)
            print(f"| {rows} | {'fwd+bwd' if backward else 'fwd'} | {me:.4f} | {mc:.4f} | {me / mc:.1f}x |")


if __name__ == "__main__":
    main()
