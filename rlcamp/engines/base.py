"""The training-engine protocol: what a role (actor, reference, critic) asks of the engine that holds its model.

A role adapter supplies *what* is computed (a head: log-probs or values; a loss function); the
engine owns *how*: micro batching, the schedule (one forward after another for FSDP, a pipeline
schedule for Megatron-style engines), gradient accumulation and its normalisation over the
data-parallel group, the optimizer, exporting weights to the rollout engine and checkpoints.

Every rank of a worker group holds one engine. ``Mesh`` says where the rank sits: which
data-parallel part of a batch it is given and whether its outputs are the ones returned (ranks of
one Ulysses, tensor- or pipeline-parallel group share a part; one of them returns it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

import torch

from rlcamp.batch import Batch


class Place(NamedTuple):
    """Where a rank's share of a batch comes from and whether its result is kept (``controller.dispatch``)."""

    dp_rank: int
    dp_size: int
    returns: bool = True


@dataclass(frozen=True)
class Mesh:
    """This rank's place in its engine's device mesh. Sizes of dimensions an engine does not use are 1.

    ``dp_group``: the ranks that hold the other parts of a batch and the same position in every
    other dimension (None with ``dp_size`` > 1: the whole world). Counts that normalise a loss are
    summed over it."""

    dp_rank: int = 0
    dp_size: int = 1
    dp_group: object = None
    sp: object = None  # rlcamp.models.ulysses.SequenceParallel, or None
    tp_size: int = 1
    pp_size: int = 1
    ep_size: int = 1
    cp_size: int = 1
    returns_outputs: bool = True

    @property
    def sp_size(self) -> int:
        return self.sp.size if self.sp is not None else 1

    @property
    def place(self) -> Place:
        return Place(self.dp_rank, self.dp_size, self.returns_outputs)


@dataclass(frozen=True)
class LogProbs:
    """Head: per-token log-probs of the response under softmax(logits / temperature) (``log_probs``),
    the entropy when asked (``entropy``), and the model's MoE aux loss (``aux_loss``, training only)."""

    temperature: float = 1.0
    entropy: bool = False


@dataclass(frozen=True)
class Values:
    """Head: the value of the state before each response token (``values``)."""


@dataclass(frozen=True)
class MicroBatching:
    """How a batch is cut for one pass: ``size`` rows each, or filled up to ``max_tokens`` (dynamic)."""

    size: int | None = None
    dynamic: bool = False
    max_tokens: int = 0


# loss_fn(outputs, micro_batch, norm) -> (loss to differentiate, loss to report). ``outputs`` holds the
# head's tensors for the micro batch; ``norm`` the mini batch's counts over the data-parallel group
# (``global_tokens``, ``global_seqs``, ``sum_norm``: see rlcamp.algos.agg_loss).
LossFn = Callable[[dict, Batch, dict], tuple[torch.Tensor, torch.Tensor]]


class TrainingEngine(Protocol):
    mesh: Mesh

    def forward(self, batch: Batch, head: LogProbs | Values, micro: MicroBatching) -> Batch:
        """The head's per-token outputs for every row, in the batch's order, without gradients."""

    def forward_backward(self, mini_batch: Batch, head: LogProbs | Values, loss_fn: LossFn, micro: MicroBatching,
                         *, loss_scale_factor: int, accumulation: int) -> dict[str, torch.Tensor | int]:
        """Gradients of one mini batch accumulated over its micro batches; returns ``loss`` (the
        reported loss summed over micro batches and the data-parallel group) and ``micro_batches``."""

    def optimizer_step(self) -> torch.Tensor:
        """Clip, step, zero; returns the gradient norm before clipping."""

    def scheduler_step(self) -> None: ...

    def export_weights(self, layered: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) pairs for the rollout engine; consume it to the end (collective)."""

    def offload(self) -> None:
        """The end of a use (a stage of the step): whatever the role's offload keys keep in host memory
        between uses goes there; the next call brings it back."""

    def onload(self) -> None:
        """The weights on the device for a use outside the engine (a rollout that decodes on them)."""

    def save(self, folder: Path, contents, generators: dict[str, torch.Generator], tokenizer=None) -> None: ...

    def load(self, folder: Path, contents, generators: dict[str, torch.Generator], role: str) -> None: ...
