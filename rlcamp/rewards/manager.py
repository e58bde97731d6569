"""Reward managers: turn decoded responses into token-level scores.

``naive`` scores one sample after another. The score goes on the last real token of each
response, which is where a terminal reward belongs for GAE and for the outcome estimators.
"""

from __future__ import annotations

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
        for i, text in enumerate(texts):
            result = score_sample(self.score_fn, i, batch["data_source"][i], text, batch["ground_truth"][i],
                                  batch["extra_info"][i])
            scores[i, last[i]] = result["score"]
            for key, value in result.items():
                if key != "score":
                    extra.setdefault(key, [None] * len(texts))[i] = value
        return scores, extra, texts
