"""Small pieces the workers share."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch

from rlcamp.batch import Batch


def prepare_trained_model(model, model_cfg, forward, key: str) -> bool:
    """Training set-up shared by actor and critic: gradient checkpointing, no KV cache, and the
    packing self-check when ``use_remove_padding`` is on. Returns that flag."""
    from rlcamp.models.forward import check_packing

    if model_cfg.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if model_cfg.use_remove_padding:
        check_packing(model, forward, model.config.vocab_size, key)
    return model_cfg.use_remove_padding


def global_norm(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token and sequence counts of a mini batch over all data-parallel ranks (see agg_loss)."""
    from rlcamp.utils.dist import all_reduce_sum

    return {"global_tokens": all_reduce_sum(mask.sum()), "global_seqs": all_reduce_sum((mask.sum(-1) > 0).sum())}


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
    """An HF folder (loadable by transformers as it is) plus optimizer, scheduler and RNG state.

    Sharded (FSDP2) models gather full weights and optimizer state to rank 0, which writes them;
    every rank writes its own sampling RNG. Collective: all ranks call it."""
    from rlcamp.utils import dist

    rank = dist.rank()
    if dist.is_sharded(model):
        weights, optim = dist.full_state_dict(model, rank0_only=True), dist.full_optimizer_state(model, engine.optimizer)
    else:
        weights, optim = None, engine.optimizer.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        model.save_pretrained(folder / "huggingface", safe_serialization=True, state_dict=weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder / "huggingface")
        torch.save({"optimizer": optim, "scheduler": engine.scheduler.state_dict(), "world_size": dist.world_size()},
                   folder / "state.pt")
    torch.save(generator.get_state(), folder / f"rng_rank{rank}.pt")


def load_model_state(folder, model, engine, generator: torch.Generator, role: str) -> None:
    from safetensors.torch import load_file

    from rlcamp.utils import dist

    state = torch.load(folder / "state.pt", weights_only=False)
    if state.get("world_size", 1) != dist.world_size():
        raise RuntimeError(f"{role} checkpoint {folder} was written by {state.get('world_size', 1)} ranks, this run has "
                           f"{dist.world_size()}; resume with the same trainer.nnodes x trainer.n_gpus_per_node")
    weights = {}
    for file in sorted((folder / "huggingface").glob("*.safetensors")):
        weights.update(load_file(file))
    # a tied output layer is saved once (as the embedding); only models with an lm_head have one
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "lm_head") \
        else set()
    if dist.is_sharded(model):
        if "lm_head.weight" in tied and "lm_head.weight" not in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        dist.load_full_state_dict(model, weights)
        dist.load_full_optimizer_state(model, engine.optimizer, state["optimizer"] if dist.rank() == 0 else {})
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise RuntimeError(f"{role} checkpoint {folder} does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        engine.optimizer.load_state_dict(state["optimizer"])
    engine.scheduler.load_state_dict(state["scheduler"])
    generator.set_state(torch.load(folder / f"rng_rank{dist.rank()}.pt", weights_only=False))


def micro_batches(batch: Batch, dynamic: bool, size: int | None, max_tokens: int) -> list[tuple[list[int], Batch]]:
    """(row indices, micro batch) pairs: fixed ``size`` rows, or filled by ``max_tokens`` (use_dynamic_bsz)."""
    if not dynamic:
        return [(list(range(s, min(s + size, len(batch)))), part) for s, part in zip(range(0, len(batch), size),
                                                                                     batch.split(size))]
    from rlcamp.controller.balance import token_budget_micro_batches

    from rlcamp.utils.dist import all_reduce_max

    lengths = (batch["attention_mask"].sum(-1) + batch["response_mask"].sum(-1)).tolist()
    groups = token_budget_micro_batches(lengths, max_tokens)
    # sharded forward passes are collective: every rank must run as many micro batches
    target = all_reduce_max(len(groups))
    while len(groups) < target:
        largest = max(range(len(groups)), key=lambda g: len(groups[g]))
        half = len(groups[largest]) // 2
        groups[largest:largest + 1] = [groups[largest][:half], groups[largest][half:]]
    return [(group, batch.index(group)) for group in groups]


def in_original_order(parts: list[tuple[list[int], torch.Tensor]], n: int) -> torch.Tensor:
    """Concatenate per-micro-batch outputs back into the batch's row order."""
    first = parts[0][1]
    out = first.new_zeros((n,) + tuple(first.shape[1:]))
    for rows, values in parts:
        out[rows] = values
    return out
