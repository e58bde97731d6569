"""The chunked log-prob head (``rlcamp.models.head``) at SmolLM2-135M's shape: forward + backward
seconds for several chunk sizes, and the full-logits way for reference.

    python benchmarks/head_chunks.py [--rows 512] [--repeats 4]

Rows are response tokens of a micro batch. GFLOP/s count the three [rows x 49152 x 576] products
the head needs (projection, two gradients); the chunked head also recomputes the projection in the
backward for the chunks beyond ``SAVED_ELEMENTS``, the full-logits way keeps the whole [rows, 49152]
logits and their softmax. Runs alternate between the settings, medians reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlcamp.algos.losses import log_probs_from_logits
from rlcamp.models import head
from rlcamp.utils.device import tune_cpu

VOCAB, HIDDEN = 49152, 576


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    tune_cpu()
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(VOCAB, HIDDEN, generator=g) * 0.02).requires_grad_()
    hidden = torch.randn(args.rows, HIDDEN, generator=g).requires_grad_()
    labels = torch.randint(0, VOCAB, (args.rows,), generator=g)

    def chunked():
        return head.chunked_log_probs(hidden, weight, labels)[0]

    def full():
        return log_probs_from_logits(hidden @ weight.T, labels)

    settings = {f"chunked, {elements // VOCAB} rows a chunk": (chunked, elements)
                for elements in (1 << 22, 1 << 23, 1 << 24, 1 << 25)}
    settings["full logits"] = (full, None)
    times: dict[str, list[float]] = {name: [] for name in settings}
    default = head.CHUNK_ELEMENTS
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, (fn, elements) in settings.items():
            head.CHUNK_ELEMENTS = elements or default
            weight.grad = hidden.grad = None
            start = time.perf_counter()
            (fn() * torch.linspace(-1, 1, args.rows)).sum().backward()
            times[name].append(time.perf_counter() - start)
    head.CHUNK_ELEMENTS = default
    product = 2 * args.rows * VOCAB * HIDDEN
    print(f"| head, {args.rows} rows x {VOCAB} vocabulary, forward + backward | seconds | GFLOP/s |")
    print("| --- | --- | --- |")
    for name, ts in times.items():
        s = statistics.median(ts[1:])
        note = " (default)" if settings[name][1] == default else ""
        print(f"| {name}{note} | {s:.3f} | {3 * product / s / 1e9:.0f} |")


if __name__ == "__main__":
    main()
