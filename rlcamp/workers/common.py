"""Small pieces the workers share."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch

from rlcamp.batch import Batch


def prepare_trained_model(model, model_cfg, forward, key: str) -> bool:
    """Training set-up shared by actor and critic: gradient checkpointing, no KV cache, the
    attention function for CPU (``rlcamp.models.cpu_attention``) and the packing self-check when
    ``use_remove_padding`` is on. Returns that flag."""
    from rlcamp.models.cpu_attention import use_on_cpu
    from rlcamp.models.forward import check_packing

    use_on_cpu(model, model_cfg.override_config)
    if model_cfg.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if model_cfg.use_remove_padding:
        check_packing(model, forward, model.config.vocab_size, key)
    return model_cfg.use_remove_padding


def shard_trained_model(model, fsdp_config, device: torch.device) -> None:
    """FSDP2 for a trained model (actor or critic) when it is sharded at all (data parallel and/or
    offload), as its ``fsdp_config`` says; a no-op otherwise."""
    from rlcamp.utils import dist
    from rlcamp.utils.device import collective_backend, to_dtype

    if not dist.needs_sharding(fsdp_config):
        return
    dist.ensure_process_group(collective_backend(device.type))
    dist.shard(model, reduce_dtype=to_dtype(fsdp_config.mixed_precision.reduce_dtype),
               reshard_after_forward=fsdp_config.reshard_after_forward,
               offload=fsdp_config.param_offload or fsdp_config.offload_policy, pin_memory=device.type == "cuda",
               forward_prefetch=fsdp_config.forward_prefetch, min_num_params=fsdp_config.wrap_policy.min_num_params)


def global_norm(mask: torch.Tensor, replicas: int = 1, loss_scale_factor: int = 1,
                micro_batches: int = 1) -> dict[str, torch.Tensor]:
    """Token and sequence counts of a mini batch over all data-parallel ranks, and the divisor of
    seq-mean-token-sum-norm (see agg_loss).

    ``replicas``: how many ranks hold each row (the Ulysses degree), so each is counted once.
    ``micro_batches``: how many micro batches verl would accumulate per mini batch (the config's
    gradient accumulation; 1 with token budgets)."""
    from rlcamp.algos.losses import sum_norm_divisor
    from rlcamp.utils.dist import all_reduce_sum, world_size

    return {"global_tokens": all_reduce_sum(mask.sum()) / replicas,
            "global_seqs": all_reduce_sum((mask.sum(-1) > 0).sum()) / replicas,
            "sum_norm": sum_norm_divisor(loss_scale_factor, micro_batches, world_size())}


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


def save_model_state(folder, model, engine, generators: dict[str, torch.Generator], contents, tokenizer=None) -> None:
    """Write the parts of a worker's state named in ``contents`` (``checkpoint.save_contents``).

    Sharded (FSDP2) models: 'model' and 'optimizer' are written by every rank, each its own shards,
    with torch.distributed.checkpoint (folder ``sharded/``): no rank ever holds the full state.
    'hf_model' gathers the full weights to rank 0 and writes a transformers folder (``huggingface/``).
    One process: weights are the transformers folder ('model' or 'hf_model'), the optimizer goes
    into ``state.pt``. 'extra': LR schedule (``state.pt``) and each rank's RNG. Collective."""
    from rlcamp.utils import dist

    contents, rank, sharded = set(contents), dist.rank(), dist.is_sharded(model)
    folder.mkdir(parents=True, exist_ok=True)
    if sharded and contents & {"model", "optimizer"}:
        dist.save_sharded(folder / "sharded", model, engine.optimizer, "model" in contents, "optimizer" in contents)
    if "hf_model" in contents or (not sharded and "model" in contents):
        weights = dist.full_state_dict(model, rank0_only=True) if sharded else None
        if rank == 0:
            model.save_pretrained(folder / "huggingface", safe_serialization=True, state_dict=weights)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder / "huggingface")
    if rank == 0:
        meta = {"world_size": dist.world_size(), "contents": sorted(contents), "sharded": sharded}
        if "extra" in contents:
            meta["scheduler"] = engine.scheduler.state_dict()
        if not sharded and "optimizer" in contents:
            meta["optimizer"] = engine.optimizer.state_dict()
        torch.save(meta, folder / "state.pt")
    if "extra" in contents:
        torch.save({name: g.get_state() for name, g in generators.items()}, folder / f"rng_rank{rank}.pt")


def load_model_state(folder, model, engine, generators: dict[str, torch.Generator], contents, role: str) -> None:
    """Load the parts named in ``contents`` (``checkpoint.load_contents``) back; see save_model_state."""
    from rlcamp.config.validate import checkpoint_holds
    from rlcamp.utils import dist

    state = torch.load(folder / "state.pt", weights_only=False)
    contents, saved, sharded = set(contents), set(state["contents"]), dist.is_sharded(model)
    if state["world_size"] != dist.world_size():
        raise RuntimeError(f"{role} checkpoint {folder} was written by {state['world_size']} ranks, this run has "
                           f"{dist.world_size()}; resume with the same trainer.nnodes x trainer.n_gpus_per_node")
    for part in contents:
        if not checkpoint_holds(part, saved):
            key = {"actor": "actor_rollout_ref.actor"}.get(role, role)
            raise RuntimeError(f"{role} checkpoint {folder} holds no '{part}' (it saved {sorted(saved)}); drop "
                               f"'{part}' from {key}.checkpoint.load_contents to resume without it")
    if state["sharded"] != sharded:
        raise RuntimeError(f"{role} checkpoint {folder} was written {'with' if state['sharded'] else 'without'} FSDP "
                           f"sharding, this {role} is {'' if sharded else 'not '}sharded; resume with the same "
                           "trainer devices and fsdp_config offload settings")
    if sharded and contents & {"model", "optimizer"} & saved:
        dist.load_sharded(folder / "sharded", model, engine.optimizer, "model" in contents and "model" in saved,
                          "optimizer" in contents)
    if "model" in contents and not (sharded and "model" in saved):
        _load_hf_weights(folder, model, role)
    if "optimizer" in contents and not sharded:
        engine.optimizer.load_state_dict(state["optimizer"])
    if "extra" in contents:
        engine.scheduler.load_state_dict(state["scheduler"])
        states = torch.load(folder / f"rng_rank{dist.rank()}.pt", weights_only=False)
        for name, g in generators.items():
            g.set_state(states[name])


def _load_hf_weights(folder, model, role: str) -> None:
    from safetensors.torch import load_file

    from rlcamp.utils import dist

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
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"{role} checkpoint {folder} does not match the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")


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
