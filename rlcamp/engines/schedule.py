"""The learning-rate schedule of a training engine: the multiplier of ``optim.lr`` at each optimizer step.

One optimizer step a training step (the LR scheduler steps once per ``update_actor`` / ``update_critic``,
as verl's does), 0-based. verl has two families of keys and rlcamp reads both:

- its FSDP optimizer's ``lr_scheduler_type`` (``warmup_style`` before): a linear warm-up of
  ``lr_warmup_steps`` (step s gets (s + 1) / warmup), then constant, or a cosine down to
  ``min_lr_ratio`` * lr over the rest of the schedule's steps (``num_cycles`` 0.5 = one half-cosine);
- its Megatron optimizer's ``lr_decay_style`` (Megatron-LM's ``OptimizerParamScheduler``): a warm-up
  from 0 (step s gets s / warmup: the first step's lr is 0), then linear, cosine, inverse-square-root or
  WSD from lr down to the absolute ``min_lr`` at ``lr_decay_steps``, ``min_lr`` after it.

WSD (warm-stable-decay; Hu et al., "MiniCPM", 2024) holds the full lr and decays only over the last
``lr_wsd_decay_steps``: a policy keeps learning at full speed and then settles instead of drifting,
which a cosine over the whole run does not give (it slows the seeds that learn late).
"""

from __future__ import annotations

import math
from typing import Callable

from rlcamp.config.schema import OptimConfig


# the final decay of WSD, 1 -> 0 as r goes 0 -> 1 (Megatron-LM's lr_wsd_decay_style)
WSD_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda r: 1.0 - r,
    "cosine": lambda r: 0.5 * (math.cos(math.pi * r) + 1.0),
    "exponential": lambda r: 2.0 * 0.5 ** r - 1.0,
    "minus_sqrt": lambda r: 1.0 - math.sqrt(r),
}


def cosine_multiplier(step: int, warmup_steps: int, total_steps: int, style: str, min_lr_ratio: float,
                      num_cycles: float) -> float:
    """verl's FSDP schedule: linear warm-up, then constant or cosine decay down to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if style == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * 2.0 * num_cycles * min(progress, 1.0)))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def decay_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, decay_steps: int, style: str,
             wsd_decay_steps: int | None = None, wsd_style: str = "exponential") -> float:
    """verl's Megatron schedule (Megatron-LM's ``OptimizerParamScheduler.get_lr``), as a learning rate."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    if style == "constant":
        return lr
    if step > decay_steps:
        return min_lr
    if style in ("inverse-square-root", "inverse_square_root"):
        return max(min_lr, lr * math.sqrt(max(warmup_steps, 1)) / math.sqrt(max(step, 1)))
    ratio = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    if style == "linear":
        coeff = 1.0 - ratio
    elif style == "cosine":
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
    elif style == "WSD":
        anneal_start = decay_steps - wsd_decay_steps
        if step <= anneal_start:
            coeff = 1.0
        else:
            coeff = WSD_SHAPES[wsd_style]((step - anneal_start) / wsd_decay_steps)
    else:
        raise ValueError(f"lr_decay_style={style!r} is not a schedule rlcamp knows")
    return min_lr + coeff * (lr - min_lr)


def lr_schedule(optim: OptimConfig, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier of ``optim.lr`` at optimizer step s, for ``torch.optim.lr_scheduler.LambdaLR``.
    ``optim.total_training_steps`` > 0 is the schedule's own length; otherwise the run's ``total_steps``."""
    if optim.total_training_steps > 0:
        total_steps = optim.total_training_steps
    if optim.lr_decay_style != "constant":
        decay_steps = optim.lr_decay_steps if optim.lr_decay_steps is not None else total_steps
        if optim.lr == 0:
            return lambda s: 0.0
        return lambda s: decay_lr(s, lr=optim.lr, min_lr=optim.min_lr, warmup_steps=warmup_steps,
                                  decay_steps=decay_steps, style=optim.lr_decay_style,
                                  wsd_decay_steps=optim.lr_wsd_decay_steps, wsd_style=optim.lr_wsd_decay_style) / optim.lr
    style = optim.warmup_style or optim.lr_scheduler_type
    min_ratio = optim.min_lr_ratio or 0.0
    return lambda s: cosine_multiplier(s, warmup_steps, total_steps, style, min_ratio, optim.num_cycles)
