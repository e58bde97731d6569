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


def save_model_state(folder, model, engine, generator: torch.Generator, tokenizer=None) -> None:
    """An HF folder (loadable by transformers as it is) plus optimizer, scheduler and RNG state."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "huggingface", safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder / "huggingface")
    torch.save({"engine": engine.state_dict(), "generator": generator.get_state()}, folder / "state.pt")


def load_model_state(folder, model, engine, generator: torch.Generator, role: str) -> None:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted((folder / "huggingface").glob("*.safetensors")):
        weights.update(load_file(file))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"{role} checkpoint {folder} does not match the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    state = torch.load(folder / "state.pt", weights_only=False)
    engine.load_state_dict(state["engine"])
    generator.set_state(state["generator"])


def micro_batches(batch: Batch, dynamic: bool, size: int | None, max_tokens: int) -> list[tuple[list[int], Batch]]:
    """(row indices, micro batch) pairs: fixed ``size`` rows, or filled by ``max_tokens`` (use_dynamic_bsz)."""
    if not dynamic:
        return [(list(range(s, min(s + size, len(batch)))), part) for s, part in zip(range(0, len(batch), size),
                                                                                     batch.split(size))]
    from rlcamp.controller.balance import token_budget_micro_batches

    lengths = (batch["attention_mask"].sum(-1) + batch["response_mask"].sum(-1)).tolist()
    return [(group, batch.index(group)) for group in token_budget_micro_batches(lengths, max_tokens)]


def in_original_order(parts: list[tuple[list[int], torch.Tensor]], n: int) -> torch.Tensor:
    """Concatenate per-micro-batch outputs back into the batch's row order."""
    first = parts[0][1]
    out = first.new_zeros((n,) + tuple(first.shape[1:]))
    for rows, values in parts:
        out[rows] = values
    return out
