"""The reward stage's work, shared by training and validation: rule scores (a reward manager) plus the
reward model's score, what each sample earned, and where generations are written."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlcamp.batch import Batch
from rlcamp.trainer.profiling import call_stage


class Scored:
    """What the reward stage hands on: token-level scores and, per sample, the decoded response,
    the reward model's score and the scorer's extras (a pass fraction, timeouts, ...)."""

    def __init__(self, scores: torch.Tensor, texts: list[str], extra: dict[str, list[Any]], rm: torch.Tensor | None,
                 seconds: float, rm_seconds: float = 0.0):
        self.scores, self.texts, self.extra, self.rm, self.seconds = scores, texts, extra, rm, seconds
        self.rm_seconds = rm_seconds  # the reward model's part of ``seconds``

    def index(self, order: torch.Tensor) -> "Scored":
        rows = order.tolist()
        return Scored(self.scores[order], [self.texts[i] for i in rows],
                      {k: [v[i] for i in rows] for k, v in self.extra.items()},
                      None if self.rm is None else self.rm[order], self.seconds, self.rm_seconds)

    @staticmethod
    def concat(parts: list["Scored"]) -> "Scored":
        """Batches scored one after another, as one (an extra a part lacks is None on its rows)."""
        keys = dict.fromkeys(k for p in parts for k in p.extra)
        extra = {k: [v for p in parts for v in p.extra.get(k, [None] * len(p.texts))] for k in keys}
        rms = [p.rm for p in parts]
        return Scored(torch.cat([p.scores for p in parts]), [t for p in parts for t in p.texts], extra,
                      None if any(r is None for r in rms) else torch.cat(rms), sum(p.seconds for p in parts),
                      sum(p.rm_seconds for p in parts))


class Scorer:
    """Rule scores on each response's last token (``manager``), plus the reward model's score when one is on."""

    # what scoring reads: the rest of the batch stays behind when it scores on the reward thread
    NEEDS = ("responses", "response_mask", "data_source", "ground_truth", "extra_info", "raw_prompt")

    def __init__(self, manager, reward_model=None):
        self.manager, self.reward_model = manager, reward_model

    def __call__(self, batch: Batch) -> Scored:
        start = time.perf_counter()
        scores, extra, texts = self.manager(batch)
        rm, rm_seconds = None, 0.0
        if self.reward_model is not None:
            rm_start = time.perf_counter()
            last = (batch["response_mask"].sum(-1) - 1).clamp(min=0)
            rm = call_stage(self.reward_model, "__call__", batch)  # None: a generative RM scores via the function
            if rm is not None:
                scores[torch.arange(len(batch)), last] += rm
            rm_seconds = time.perf_counter() - rm_start
        return Scored(scores, texts, extra, rm, time.perf_counter() - start, rm_seconds)

    def close(self) -> None:
        if self.reward_model is not None:
            self.reward_model.close()


def decode_prompts(tokenizer, batch: Batch) -> list[str]:
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    return [tokenizer.decode(row[keep], skip_special_tokens=True) for row, keep in zip(ids, mask)]


def dump_generations(folder: Path, step: int, tokenizer, batch: Batch, scored: Scored) -> Path:
    """``<folder>/<step>.jsonl``: one line per sample with its input, output, ground truth, score,
    step and the scorer's extras (trainer.rollout_data_dir / trainer.validation_data_dir)."""
    folder = folder.expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{step}.jsonl"
    inputs, scores = decode_prompts(tokenizer, batch), scored.scores.sum(-1).tolist()
    with path.open("w") as f:
        for i, (text, output) in enumerate(zip(inputs, scored.texts)):
            row = {"input": text, "output": output, "gts": batch["ground_truth"][i], "score": scores[i],
                   "step": step, "data_source": batch["data_source"][i],
                   **{k: v[i] for k, v in scored.extra.items()}}
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path
