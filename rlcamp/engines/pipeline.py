"""Pipeline parallelism of an HF decoder on ``torch.distributed.pipelining`` (``pipeline_model_parallel_size``).

The decoder's layers are cut into ``pp x vpp`` consecutive chunks (stages); stage s lives on
pipeline rank s % pp, so with ``virtual_pipeline_model_parallel_size`` each rank holds vpp chunks
spread over the depth, as Megatron's interleaved schedule places them. The first stage also holds
the token embedding, the last the final norm and the head (log-probs or the critic's value head);
every stage keeps the rotary embedding. A stage runs the HF decoder's own forward over its layers
(a shallow view of the decoder with its own layer list), so masks, rotary positions and packed
sequences are built exactly as without pipelining.

Each call (a ``forward`` for log-probs / values, or a ``forward_backward`` of one mini batch) cuts
the batch into the engine's micro batches and pads them to one shape (rows repeated, packed
sequences extended by a dummy sequence; padding never reaches an output or a loss), because a
pipeline stage's receive buffers have one shape per schedule. The schedules are PyTorch's: 1F1B
(Megatron's default), GPipe, and interleaved 1F1B with virtual stages. A schedule that needs more
micro batches than a call has (1F1B: one per stage) runs extra ones whose loss is zero.

The micro batches' layouts travel by index: every rank of a data-parallel part cuts the same batch
the same way, so each stage looks its micro batch's masks and positions up locally and only the
hidden states cross between ranks (in the model's parameter dtype).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from rlcamp.batch import Batch
from rlcamp.models.forward import (
    SequenceInputs,
    _pad_back,
    _unpack,
    pack,
    sequence_inputs,
    to_multiple,
)

SCHEDULES = ("1f1b", "gpipe")


def layer_bounds(n_layers: int, stages: int, first: int | None = None, last: int | None = None,
                 key: str = "pipeline_model_parallel_size") -> list[tuple[int, int]]:
    """[start, end) of each stage's layers: ``first`` / ``last`` layers on the first / last stage when
    given (``num_layers_in_{first,last}_pipeline_stage``), the rest as evenly as they go, earlier stages
    taking one more where they do not divide."""
    fixed = {0: first, stages - 1: last} if stages > 1 else {}
    fixed = {s: n for s, n in fixed.items() if n is not None}
    free = [s for s in range(stages) if s not in fixed]
    rest = n_layers - sum(fixed.values())
    if rest < 0 or (free and rest < len(free)) or (not free and rest != 0):
        raise ValueError(f"{key}: {n_layers} decoder layers cannot be cut into {stages} stages "
                         f"(first/last stage layers {first}/{last}); every stage needs at least one layer")
    counts = [fixed.get(s, 0) for s in range(stages)]
    for i, s in enumerate(free):
        counts[s] = rest // len(free) + (i < rest % len(free))
    if min(counts) < 1:
        raise ValueError(f"{key}: a stage of {counts} would hold no decoder layer; use fewer stages")
    bounds, start = [], 0
    for n in counts:
        bounds.append((start, start + n))
        start += n
    return bounds


@dataclass
class _Micro:
    """One micro batch as every stage sees it (padded to the call's common shape)."""

    rows: torch.Tensor  # its rows in the call's batch
    part: Batch | None  # the rows themselves (None: a filler micro batch)
    inputs: SequenceInputs  # of the real rows
    input_ids: torch.Tensor  # [R, T] padded, or [1, L] packed
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor
    packed: object = None  # rlcamp.models.forward.Packed of the real rows (packed layout)
    router_mask: torch.Tensor | None = None  # 1 for the tokens a router loss counts (not padding, not fillers)


def _micro_layouts(batch: Batch, parts: list[tuple[torch.Tensor, Batch]], packed: bool, device) -> list[_Micro]:
    whole = sequence_inputs(batch["input_ids"], batch["attention_mask"], batch["responses"], batch["response_mask"])
    out = []
    for rows, part in parts:
        inputs = SequenceInputs(whole.input_ids[rows].to(device), whole.attention_mask[rows].to(device),
                                whole.position_ids[rows].to(device), whole.response_len, whole.full_response_len)
        if packed:
            p = pack(inputs)
            out.append(_Micro(rows, part, inputs, p.input_ids, None, p.position_ids, p))
        else:
            out.append(_Micro(rows, part, inputs, inputs.input_ids, inputs.attention_mask, inputs.position_ids))
    if packed:  # extend each packed row by a dummy sequence (its own positions from 0) to the longest
        length = max(m.input_ids.shape[1] for m in out)
        for m in out:
            real = m.input_ids.shape[1]
            if real < length:
                m.input_ids, _, m.position_ids = to_multiple(m.input_ids, None, m.position_ids, length, packed=True)
            m.router_mask = (torch.arange(length, device=device) < real).float()
    else:  # repeat the first row up to the most rows
        rows = max(m.input_ids.shape[0] for m in out)
        for m in out:
            extra = rows - m.input_ids.shape[0]
            if extra:
                pad = lambda x: torch.cat([x, x[:1].expand(extra, -1)], 0)  # noqa: E731
                m.input_ids, m.attention_mask, m.position_ids = (pad(m.input_ids), pad(m.attention_mask),
                                                                 pad(m.position_ids))
            m.router_mask = m.attention_mask.float() * (torch.arange(rows, device=device) < rows - extra)[:, None]
    return out


class Chunk(nn.Module):
    """One pipeline stage: (embedding) -> its decoder layers -> (norm -> head). ``head`` maps the last
    hidden states at the positions that predict response tokens, and their labels, to per-token values."""

    def __init__(self, decoder: nn.Module, start: int, end: int, first: bool, last: bool, runner: Pipeline,
                 head: nn.Module | None):
        super().__init__()
        view = copy.copy(decoder)  # the decoder's forward and config, over this stage's own modules
        view._modules = dict(decoder._modules)
        view._modules["layers"] = nn.ModuleList(decoder.layers[start:end])
        view._modules["embed_tokens"] = None
        if not last:
            view._modules["norm"] = nn.Identity()
        self.view = view
        self.embed = decoder.embed_tokens if first else None
        self.head = head if last else None  # registered so that its parameters are this stage's
        self.first, self.last, self.span = first, last, (start, end)
        self._runner = [runner]  # not a submodule

    def forward(self, *args: torch.Tensor, mb: torch.Tensor):
        """args: the token ids (first stage) or the hidden states, and with a router loss the running
        ``experts.router_sums`` of the stages before (which the last turns into the loss)."""
        runner = self._runner[0]
        micro = runner.micros[int(mb[0])]
        h = self.embed(args[0]) if self.first else args[0]
        carry = None if self.first or runner.router is None else args[1]
        extra = {"output_router_logits": True} if runner.router is not None else {}
        out = self.view(inputs_embeds=h, attention_mask=micro.attention_mask, position_ids=micro.position_ids,
                        use_cache=False, **extra)
        h = out.last_hidden_state
        if runner.router is not None:
            from rlcamp.engines.experts import router_loss, router_sums

            sums = router_sums(out.router_logits, *runner.router, micro.router_mask)
            carry = sums if carry is None else carry + sums
        if not self.last:
            return (h.to(runner.wire_dtype), carry) if carry is not None else h.to(runner.wire_dtype)
        values = runner.head_outputs(h, micro)
        if not torch.is_grad_enabled():
            runner.outputs[int(mb[0])] = values
        if carry is not None:
            return values, router_loss(carry, runner.router[1])[None]
        return values


class Pipeline:
    """This rank's stages of ``model`` and the schedule that runs them. ``head``: the module the last stage
    applies (the output layer, or the critic's value head: its parameters are that stage's); each call
    passes ``head_fn(hidden [n, d], labels [n]) -> [n, k]``, what the last stage computes with it."""

    def __init__(self, model: nn.Module, *, pp_rank: int, pp: int, vpp: int, group, device: torch.device,
                 bounds: list[tuple[int, int]], head: nn.Module, schedule: str = "1f1b",
                 router: tuple[int, int] | None = None):
        if schedule not in SCHEDULES:
            raise ValueError(f"pipeline schedule {schedule!r}: choose one of {SCHEDULES}")
        self.pp_rank, self.pp, self.vpp, self.group, self.device = pp_rank, pp, vpp, group, device
        self.schedule_name = schedule
        self.n_stages = pp * vpp
        self.stage_ids = [pp_rank + c * pp for c in range(vpp)]
        self.wire_dtype = next(model.parameters()).dtype
        decoder = model.get_decoder()
        self.chunks = [Chunk(decoder, *bounds[s], first=s == 0, last=s == self.n_stages - 1, runner=self,
                             head=head) for s in self.stage_ids]
        self.holds_first, self.holds_last = 0 in self.stage_ids, self.n_stages - 1 in self.stage_ids
        self.head = head if self.holds_last else None
        self.micros: list[_Micro] = []
        self.outputs: dict[int, torch.Tensor] = {}
        self.head_fn: Callable | None = None
        self.hidden_size = model.config.hidden_size
        self.router = router  # (top_k, experts) of a MoE model whose router loss the stages carry, or None

    # --------------------------------------------------------------------------- running
    def head_outputs(self, h: torch.Tensor, micro: _Micro) -> torch.Tensor:
        """[R, response_len, k] from the last hidden states of one micro batch (rows past the real ones zero)."""
        inputs, r = micro.inputs, micro.inputs.response_len
        n = inputs.input_ids.shape[0]
        if micro.packed is not None:
            p = micro.packed
            values = self.head_fn(h[0, p.predict_at], p.input_ids[0, p.predict_at + 1])
            per_row = [_unpack(values[:, i], p, inputs) for i in range(values.shape[1])]
        else:
            hidden = h[:n, -r - 1:-1]
            values = self.head_fn(hidden.reshape(-1, hidden.shape[-1]), inputs.input_ids[:, -r:].reshape(-1))
            per_row = [_pad_back(values[:, i].view(n, r), inputs) for i in range(values.shape[1])]
        out = torch.stack(per_row, -1)
        return torch.nn.functional.pad(out, (0, 0, 0, 0, 0, self._rows - n)) if self._rows > n else out

    def _n_micro(self, n: int) -> int:
        """The fewest micro batches >= n that the schedule runs."""
        if self.vpp > 1:
            while n % max(1, n // self.pp):
                n += 1
            return n
        return max(n, self.pp) if self.schedule_name == "1f1b" else n

    def _schedule(self, n_micro: int, loss_fn):
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining.schedules import (
            Schedule1F1B,
            ScheduleGPipe,
            ScheduleInterleaved1F1B,
        )

        m = self.micros[0]
        k_out = self._k
        stages = []
        for chunk, s in zip(self.chunks, self.stage_ids):
            hidden = (*m.input_ids.shape, self.hidden_size)
            carry = [] if self.router is None else [torch.empty(2 * self.router[1] + 1, device="meta")]
            if chunk.first:
                example_in = [torch.empty(m.input_ids.shape, dtype=m.input_ids.dtype, device="meta")]
            else:
                example_in = [torch.empty(hidden, dtype=self.wire_dtype, device="meta"), *carry]
            if chunk.last:
                values = torch.empty((self._rows, m.inputs.full_response_len, k_out), device="meta")
                example_out = [values, *([torch.empty(1, device="meta")] if carry else [])]
            else:
                example_out = [torch.empty(hidden, dtype=self.wire_dtype, device="meta"), *carry]
            if loss_fn is not None:  # the receive buffers of hidden states and of their gradients follow these
                for t in example_in:
                    t.requires_grad_(not chunk.first)
                for t in example_out:
                    t.requires_grad_(True)
            stages.append(PipelineStage(chunk, s, self.n_stages, self.device, input_args=tuple(example_in),
                                        output_args=tuple(example_out), group=self.group))
        if self.vpp > 1:
            return ScheduleInterleaved1F1B(stages, n_micro, loss_fn=loss_fn, scale_grads=False)
        cls = Schedule1F1B if (self.schedule_name == "1f1b" and loss_fn is not None) else ScheduleGPipe
        return cls(stages[0], n_micro, loss_fn=loss_fn, scale_grads=False)

    def run(self, batch: Batch, parts: list[tuple[torch.Tensor, Batch]], head_fn: Callable, k: int, packed: bool,
            loss_fn: Callable | None = None) -> tuple[dict[int, torch.Tensor], list[torch.Tensor]]:
        """Run the micro batches ``parts`` of ``batch`` through the pipeline. ``loss_fn(outputs [rows, r, k],
        micro index) -> loss``: train (gradients accumulate in the stages' parameters). Returns the last
        stage's outputs by micro batch (forward only) and nothing elsewhere."""
        self.micros = _micro_layouts(batch, parts, packed, self.device)
        self.head_fn, self._k, self.outputs = head_fn, k, {}
        self._rows = max(m.inputs.input_ids.shape[0] for m in self.micros)
        real = len(self.micros)
        n_micro = self._n_micro(real)
        self.micros += [replace(self.micros[0], part=None) for _ in range(n_micro - real)]  # fillers

        def loss(out, target):
            i = int(target[0])
            if i >= real:
                return sum(o.sum() for o in (out if isinstance(out, tuple) else (out,))) * 0.0
            return loss_fn(out, i)

        schedule = self._schedule(n_micro, loss if loss_fn is not None else None)
        index = torch.arange(n_micro, device=self.device)
        args = (torch.cat([m.input_ids for m in self.micros], 0),) if self.holds_first else ()
        kwargs = {"mb": index}
        if loss_fn is not None:
            schedule.step(*args, target=index if self.holds_last else None, return_outputs=False, **kwargs)
        else:
            with torch.no_grad():
                schedule.step(*args, return_outputs=False, **kwargs)
        outputs = {i: v for i, v in self.outputs.items() if i < real}
        self.micros, self.outputs, self.head_fn = [], {}, None
        return outputs
