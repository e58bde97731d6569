"""The batch that flows through a step: tensors with a leading batch dim, plus per-sample fields.

Deliberately small (select / split / concat / repeat-interleave / reorder / to): per-sample Python
objects (chat messages, ground truths, extra_info dicts) are first-class here, which tensordict's
non-tensor stacks make awkward and slow to index.

Every key a step's batch may hold is declared in ``KEYS`` (the stage that makes it, its shape, dtype
and meaning); ``check_batch`` holds a batch to that, and tests/test_batch.py runs it after every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class Key:
    stage: str  # the stage that writes it (``rlcamp.trainer.stages``; "prompts": the data loader)
    shape: str  # "B" (one per row), "B,P" (prompt tokens, left-padded) or "B,R" (response tokens)
    dtype: str  # a torch dtype's name, or "list" for a per-sample Python field
    meaning: str


KEYS: dict[str, Key] = {
    "input_ids": Key("prompts", "B,P", "int64", "prompt token ids, left-padded"),
    "attention_mask": Key("prompts", "B,P", "int64", "1 where a prompt token exists (0 on the left padding)"),
    "data_source": Key("prompts", "B", "list", "which rule scores the row (gsm8k, math, a code set, ...)"),
    "ground_truth": Key("prompts", "B", "list", "the reference answer the rule compares with"),
    "extra_info": Key("prompts", "B", "list", "the dataset row's extra_info dict (tests, split, index, ...)"),
    "raw_prompt": Key("prompts", "B", "list", "the chat messages (a reward model re-templates them)"),
    "uid": Key("gen", "B", "list", "the prompt's group id: its rollout.n responses share it (GRPO, RLOO)"),
    "responses": Key("gen", "B,R", "int64", "response token ids, padded after the end"),
    "response_mask": Key("gen", "B,R", "int64", "1 where a response token exists (through its first EOS): "
                         "attention, lengths, trimming, token budgets, decoding and reward placement"),
    "loss_mask": Key("gen", "B,R", "int64", "1 where a response token is trained on (<= response_mask; 0 on a "
                     "tool's output in a multi-turn rollout): losses, their token counts, KL, advantages"),
    "rollout_log_probs": Key("gen", "B,R", "float32", "the rollout engine's log-prob of each sampled token"),
    "token_level_scores": Key("reward", "B,R", "float32", "the reward (rules + reward model) on each response's "
                              "last token"),
    "token_level_rewards": Key("reward", "B,R", "float32", "the scores, minus the KL penalty when "
                               "algorithm.use_kl_in_reward (kl_in_reward replaces it)"),
    "rm_scores": Key("reward", "B", "float32", "the reward model's score of each response"),
    "old_log_probs": Key("old_log_prob", "B,R", "float32", "the actor's log-probs before the update (PPO's "
                         "anchor; the rollout's under bypass_mode)"),
    "entropys": Key("old_log_prob", "B,R", "float32", "the actor's per-token entropy before the update"),
    "ref_log_probs": Key("ref", "B,R", "float32", "the reference model's log-probs (KL loss / KL in reward)"),
    "values": Key("values", "B,R", "float32", "the critic's value of each response position"),
    "advantages": Key("adv", "B,R", "float32", "the estimator's advantage of each trained token"),
    "returns": Key("adv", "B,R", "float32", "the critic's regression target (GAE: advantages + values)"),
}


def check_batch(batch: "Batch") -> None:
    """Every key declared in ``KEYS``, with its declared dtype and shape; names each key that is not."""
    sizes = {"B": len(batch)}
    if "input_ids" in batch:
        sizes["P"] = batch["input_ids"].shape[1]
    if "responses" in batch:
        sizes["R"] = batch["responses"].shape[1]
    problems = []
    for name in list(batch.tensors) + list(batch.meta):
        key = KEYS.get(name)
        if key is None:
            problems.append(f"'{name}' is not declared in rlcamp.batch.KEYS")
            continue
        value = batch[name]
        if key.dtype == "list":
            if name in batch.tensors:
                problems.append(f"'{name}' is a tensor; KEYS declares a per-sample list")
            continue
        if name not in batch.tensors or str(value.dtype) != f"torch.{key.dtype}":
            problems.append(f"'{name}' is {getattr(value, 'dtype', type(value).__name__)}; KEYS declares {key.dtype}")
            continue
        want = tuple(sizes.get(d, -1) for d in key.shape.split(","))
        if tuple(value.shape) != want:
            problems.append(f"'{name}' has shape {tuple(value.shape)}; KEYS declares [{key.shape}] = {want}")
    if problems:
        raise ValueError("batch keys do not match their declarations: " + "; ".join(problems))


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self):
        sizes = {k: v.shape[0] for k, v in self.tensors.items()} | {k: len(v) for k, v in self.meta.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch fields disagree on the batch size: {sizes}")

    def __len__(self) -> int:
        for v in self.tensors.values():
            return v.shape[0]
        for v in self.meta.values():
            return len(v)
        return 0

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.meta

    def __getitem__(self, key: str):
        return self.tensors[key] if key in self.tensors else self.meta[key]

    def __setitem__(self, key: str, value) -> None:
        size = len(self)
        n = value.shape[0] if isinstance(value, torch.Tensor) else len(value)
        if (self.tensors or self.meta) and n != size:
            raise ValueError(f"field '{key}' has {n} rows, the batch has {size}")
        (self.tensors if isinstance(value, torch.Tensor) else self.meta)[key] = value if isinstance(value, torch.Tensor) else list(value)

    def update(self, other: "Batch | dict") -> "Batch":
        items = other.items() if isinstance(other, dict) else list(other.tensors.items()) + list(other.meta.items())
        for k, v in items:
            self[k] = v
        return self

    def select(self, *keys: str) -> "Batch":
        return Batch({k: v for k, v in self.tensors.items() if k in keys}, {k: v for k, v in self.meta.items() if k in keys})

    def index(self, idx: torch.Tensor | Sequence[int]) -> "Batch":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        idx_l = idx_t.tolist()
        return Batch({k: v[idx_t] for k, v in self.tensors.items()}, {k: [v[i] for i in idx_l] for k, v in self.meta.items()})

    def slice(self, start: int, stop: int) -> "Batch":
        return Batch({k: v[start:stop] for k, v in self.tensors.items()}, {k: v[start:stop] for k, v in self.meta.items()})

    def split(self, size: int) -> list["Batch"]:
        return [self.slice(i, i + size) for i in range(0, len(self), size)]

    def chunk(self, n: int) -> list["Batch"]:
        """n nearly equal consecutive parts (the first ones one longer when it does not divide)."""
        base, extra = divmod(len(self), n)
        out, start = [], 0
        for i in range(n):
            stop = start + base + (i < extra)
            out.append(self.slice(start, stop))
            start = stop
        return out

    def to(self, device: torch.device | str) -> "Batch":
        """The tensors on ``device`` (the per-sample fields as they are)."""
        return Batch({k: v.to(device) for k, v in self.tensors.items()}, dict(self.meta))

    @staticmethod
    def concat(batches: Sequence["Batch"]) -> "Batch":
        """Batches with the same keys, one after another; a key some lack is named (with which lack it)."""
        if not batches:
            raise ValueError("Batch.concat needs at least one batch")
        first = batches[0]
        keys = [set(b.tensors) | set(b.meta) for b in batches]
        every = set().union(*keys)
        if any(k != every for k in keys):
            missing = {name: [i for i, k in enumerate(keys) if name not in k] for name in sorted(every)}
            detail = "; ".join(f"'{name}' missing from batch(es) {idx}" for name, idx in missing.items() if idx)
            raise ValueError(f"Batch.concat: the batches' keys differ: {detail}")
        return Batch({k: torch.cat([b.tensors[k] for b in batches]) for k in first.tensors},
                     {k: [x for b in batches for x in b.meta[k]] for k in first.meta})

    def repeat_interleave(self, n: int) -> "Batch":
        """Each row n times in a row (a prompt's n samples stay together)."""
        return self.index(torch.arange(len(self)).repeat_interleave(n))
