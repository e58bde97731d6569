"""A seeded, resumable batch sampler and the left-padding collate used for generation.

Exact resume depends on this: the order of epoch ``e`` is a pure function of ``(seed, e)``, and
the state is just ``(epoch, position)``, so a run restored mid-epoch sees the very batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from rlcamp.data.dataset import PromptSample


class ResumableSampler:
    """Batches of dataset indices; the last incomplete batch of an epoch is dropped when ``drop_last``."""

    def __init__(self, size: int, batch_size: int, *, shuffle: bool = True, seed: int = 1, drop_last: bool = True):
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.size, self.batch_size, self.shuffle, self.seed, self.drop_last = size, batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def remaining(self) -> list[list[int]]:
        """The batches of the current epoch not handed out yet (the state does not move)."""
        order = self.order(self.epoch)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(self.position, len(self))]

    def __iter__(self) -> Iterator[list[int]]:
        """The remaining batches of the current epoch; afterwards the sampler stands at the next epoch."""
        for indices in self.remaining():
            self.position += 1
            yield indices
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume the data order: the checkpoint has {key}={state[key]} but this run "
                                 f"has {key}={getattr(self, key)}; resume with the same data and data.* settings")
        self.epoch, self.position = state["epoch"], state["position"]


def collate_prompts(samples: Sequence[PromptSample], pad_token_id: int) -> dict[str, Any]:
    """Left-pad prompts to the longest in the batch (generation appends on the right).

    Returns tensors ``input_ids``, ``attention_mask``, ``position_ids`` [batch, prompt_len] and the
    per-sample fields as lists.
    """
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, length - n:] = torch.tensor(sample.input_ids, dtype=torch.long)
        attention_mask[row, length - n:] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "raw_prompt": [s.raw_prompt for s in samples],
        "data_source": [s.data_source for s in samples],
        "ground_truth": [s.ground_truth for s in samples],
        "extra_info": [s.extra_info for s in samples],
        "source": [s.source for s in samples],
    }


class _Collated:
    """``data[indices]`` -> the collated batch of those prompts (what a DataLoader worker makes)."""

    def __init__(self, dataset, pad_token_id: int):
        self.dataset, self.pad_token_id = dataset, pad_token_id

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        return collate_prompts([self.dataset[i] for i in indices], self.pad_token_id)


class _Remaining:
    """The sampler's remaining batches, read afresh at every pass (a DataLoader's sampler)."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.sampler.remaining())


def _as_is(batch):
    return batch


class PromptLoader:
    """Iterates collated batches of a dataset in the sampler's order; its state resumes mid-epoch.

    ``num_workers`` > 0 (``data.dataloader_num_workers``): torch DataLoader worker processes (kept
    for the whole run) collate the next batches ahead. The order and the saved position are the
    same as without them: the position moves only when a batch is handed to the trainer, not when
    a worker prepares it."""

    def __init__(self, dataset, batch_size: int, *, pad_token_id: int, shuffle: bool = True, seed: int = 1,
                 drop_last: bool = True, num_workers: int = 0):
        self.dataset = dataset
        self.pad_token_id = pad_token_id
        self.sampler = ResumableSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.workers = None
        if num_workers > 0:
            from torch.utils.data import DataLoader

            self.workers = DataLoader(_Collated(dataset, pad_token_id), sampler=_Remaining(self.sampler),
                                      batch_size=None, collate_fn=_as_is, num_workers=num_workers,
                                      persistent_workers=True)

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.workers is None:
            for indices in self.sampler:
                yield collate_prompts([self.dataset[i] for i in indices], self.pad_token_id)
            return
        for batch in self.workers:
            self.sampler.position += 1
            yield batch
        self.sampler.epoch += 1
        self.sampler.position = 0

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
