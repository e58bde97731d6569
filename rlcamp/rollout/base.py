"""The rollout engine protocol: what the actor worker asks of any engine (rlcamp's own, vLLM, SGLang,
the tensor-parallel ones), so that it never asks which engine it holds.

    generate(input_ids, attention_mask, params, generator) -> {"responses", "response_mask", "rollout_log_probs"}
    load_weights(named_tensors)   the actor's full weights (HF names), in place, one tensor at a time
    sleep() / wake()              free and retake the engine's accelerator memory around training
    shutdown()                    stop what the engine started (its own process)
    shares_weights                True when it decodes on the trainer's own weights: nothing to load

The worker's order in a step: ``wake`` -> ``generate`` -> ``sleep``, and after an update
``load_weights`` (the ``sync_weights`` stage) unless the engine shares the weights.
"""

from __future__ import annotations

from typing import Iterable

import torch

NamedTensors = Iterable[tuple[str, torch.Tensor]]


class RolloutEngineDied(RuntimeError):
    """The rollout engine's own process died or stalled. ``restartable``: trainer.max_restarts rebuilds the
    workers (and the engine with them) and resumes from the last checkpoint."""

    restartable = True


class RolloutEngine:
    """The base of every rollout engine: sleeping, waking and shutting down do nothing unless an
    engine holds something to free."""

    shares_weights: bool = False

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_weights(self, weights: NamedTensors) -> None:
        raise NotImplementedError

    def sleep(self) -> None:
        """Free accelerator memory until ``wake`` (vLLM's and SGLang's ``free_cache_engine``)."""

    def wake(self) -> None:
        """Retake what ``sleep`` freed, before generating."""

    def shutdown(self) -> None:
        """Stop the engine's own process, if it has one."""


def named_items(weights: NamedTensors | dict) -> NamedTensors:
    """(name, tensor) pairs from a state dict or from a stream of pairs (an engine's ``export_weights``)."""
    return weights.items() if hasattr(weights, "items") else weights
