"""Validation: ``val_kwargs`` generation (greedy by default) on the validation set, scored as in training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlcamp.batch import Batch
from rlcamp.data import PromptLoader, RLDataset
from rlcamp.trainer.metrics import numeric_extras, validation_metrics
from rlcamp.trainer.scoring import Scored, Scorer, decode_prompts, dump_generations

VAL_TABLE = "val/generations"  # verl's name for the validation samples' table
VAL_COLUMNS = ["input", "output", "ground_truth", "score"]


def prompt_batch(prompts: dict) -> Batch:
    """The loader's prompts as the step's first batch."""
    return Batch({k: prompts[k] for k in ("input_ids", "attention_mask")},
                 {k: prompts[k] for k in ("data_source", "ground_truth", "extra_info", "raw_prompt")})


class Validator:
    def __init__(self, config, dataset: RLDataset, actor, scorer: Scorer, tokenizer):
        self.config, self.dataset, self.actor, self.scorer, self.tokenizer = config, dataset, actor, scorer, tokenizer

    def _generate(self, prompts: Batch) -> Batch:
        """Validation responses: on rank 0 (the set need not split evenly over the ranks), except with a
        tensor-parallel rollout, whose engine needs every rank of its group: there the prompts are padded
        to a multiple of the ranks with copies of the last one, whose responses are dropped."""
        if self.config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1:
            return self.actor.call_rank0("generate", prompts, validate=True)
        world, n = self.actor.world_size, self.config.actor_rollout_ref.rollout.val_kwargs.n
        extra = -len(prompts) % world
        padded = Batch.concat([prompts, prompts.index(torch.full((extra,), len(prompts) - 1))]) if extra else prompts
        out = self.actor.call("generate", padded, validate=True)
        return out.index(torch.arange(len(prompts) * n)) if extra else out

    def __call__(self, step: int, tracking=None) -> dict[str, float]:
        """verl's per-data-source metrics (``val-core/<data_source>/reward/mean@n``, ...) and ``val/acc``, the
        share of samples that earn the full score (>= 1) or, where the scorer reports ``acc``, that. Also logs
        ``trainer.log_val_generations`` samples as a table and writes ``trainer.validation_data_dir``."""
        c = self.config
        n = c.actor_rollout_ref.rollout.val_kwargs.n
        size = c.data.val_batch_size or len(self.dataset)
        loader = PromptLoader(self.dataset, size, pad_token_id=self.tokenizer.pad_token_id,
                              shuffle=c.data.validation_shuffle, seed=c.data.seed, drop_last=False)
        batches, parts = [], []
        for prompts in loader:
            batch = self._generate(prompt_batch(prompts))
            batches.append(batch.select("input_ids", "attention_mask", "data_source", "ground_truth"))
            parts.append(self.scorer(batch))
        batch = Batch.concat(batches)
        scored = Scored.concat(parts)
        scores = scored.scores.sum(-1)
        extras = numeric_extras(scored.extra)
        reported = extras.pop("acc", None)  # a scorer that reports its own accuracy is believed
        acc = reported if reported is not None else (scores >= 1.0 - 1e-6).float().tolist()
        core = "acc" if reported is not None else "reward"  # verl's choice of the val-core variable
        out = validation_metrics(batch["data_source"], [i // n for i in range(len(batch))],
                                 {"reward": scores.tolist(), "acc": acc, **extras}, core)
        out["val/acc"] = sum(acc) / len(acc)
        if c.trainer.log_val_generations > 0 and tracking is not None:
            tracking.log_table(VAL_TABLE, VAL_COLUMNS, self._samples(batch, scored), step)
        if c.trainer.validation_data_dir:
            dump_generations(Path(c.trainer.validation_data_dir), step, self.tokenizer, batch, scored)
        return out

    def _samples(self, batch: Batch, scored: Scored) -> list[list[Any]]:
        """``trainer.log_val_generations`` samples, the same prompts at every validation: sorted by
        input, then a fixed-seed shuffle (as verl picks them)."""
        inputs, scores = decode_prompts(self.tokenizer, batch), scored.scores.sum(-1).tolist()
        by_input = sorted(range(len(inputs)), key=lambda i: inputs[i])
        shuffled = [by_input[i] for i in torch.randperm(len(by_input), generator=torch.Generator().manual_seed(42))]
        picked = shuffled[:self.config.trainer.log_val_generations]
        return [[inputs[i], scored.texts[i], batch["ground_truth"][i], scores[i]] for i in picked]
