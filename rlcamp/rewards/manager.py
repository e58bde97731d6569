"""Reward managers: turn decoded responses into token-level scores.

``naive`` scores one sample after another; ``prime`` scores them in parallel threads (for rewards
that wait on a sandbox or a service). The score goes on the last real token of each response,
which is where a terminal reward belongs for GAE and for the outcome estimators.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from rlcamp.batch import Batch
from rlcamp.rewards.registry import ScoreFn, score_sample


class NaiveRewardManager:
    def __init__(self, tokenizer, score_fn: ScoreFn):
        self.tokenizer, self.score_fn = tokenizer, score_fn

    def decode(self, batch: Batch) -> list[str]:
        lengths = batch["response_mask"].sum(-1).tolist()
        return [self.tokenizer.decode(row[:n], skip_special_tokens=True)
                for row, n in zip(batch["responses"].tolist(), lengths)]

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, list[Any]], list[str]]:
        """Returns token_level_scores [batch, response_len], extra per-sample info, and the texts."""
        texts = self.decode(batch)
        scores = torch.zeros(batch["responses"].shape, dtype=torch.float32)
        last = (batch["response_mask"].sum(-1) - 1).clamp(min=0)
        extra: dict[str, list[Any]] = {}
        for i, result in enumerate(self.score_all(batch, texts)):
            scores[i, last[i]] = result["score"]
            for key, value in result.items():
                if key != "score":
                    extra.setdefault(key, [None] * len(texts))[i] = value
        return scores, extra, texts

    def score_all(self, batch: Batch, texts: list[str]) -> list[dict[str, Any]]:
        return [self._score_one(batch, texts, i) for i in range(len(texts))]

    def _score_one(self, batch: Batch, texts: list[str], i: int) -> dict[str, Any]:
        return score_sample(self.score_fn, i, batch["data_source"][i], texts[i], batch["ground_truth"][i],
                            batch["extra_info"][i])


class PrimeRewardManager(NaiveRewardManager):
    """Scores up to ``max_concurrent`` samples at once, in order."""

    def __init__(self, tokenizer, score_fn: ScoreFn, max_concurrent: int):
        super().__init__(tokenizer, score_fn)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="rlcamp-reward")

    def score_all(self, batch: Batch, texts: list[str]) -> list[dict[str, Any]]:
        return list(self.pool.map(lambda i: self._score_one(batch, texts, i), range(len(texts))))
