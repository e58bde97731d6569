"""Small pieces the workers share."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch

from rlcamp.batch import Batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mini_batches(batch: Batch, size: int, epochs: int, shuffle: bool, generator: torch.Generator) -> Iterator[Batch]:
    """``epochs`` passes over ``batch`` in mini batches of ``size`` rows (reshuffled per pass if asked)."""
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator) if shuffle else None
        source = batch.index(order) if order is not None else batch
        yield from source.split(size)


class MetricSink:
    """Collects scalar metrics (tensors or floats) and averages them; one sync at the end."""

    def __init__(self):
        self.values: dict[str, list] = defaultdict(list)

    def add(self, key: str, value) -> None:
        self.values[key].append(value.detach().float() if isinstance(value, torch.Tensor) else float(value))

    def means(self) -> dict[str, float]:
        out = {}
        for key, values in self.values.items():
            tensors = [torch.as_tensor(v, dtype=torch.float32) for v in values]
            out[key] = torch.stack(tensors).mean().item()
        return out


def nonfinite_metrics(role: str, norms: list) -> dict[str, list]:
    """A role's update metrics from its optimizer steps' gradient norms: ``grad_norm``, the mean over
    the steps whose norm was finite (NaN when none was), and ``nonfinite_grad_steps``, how many were
    not: the engine skipped those, on every rank alike (the norm is the global one)."""
    finite = [n for n in norms if torch.isfinite(torch.as_tensor(n))]
    return {f"{role}/grad_norm": finite or [float("nan")],
            f"{role}/nonfinite_grad_steps": [float(len(norms) - len(finite))]}
