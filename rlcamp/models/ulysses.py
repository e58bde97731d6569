"""Ulysses sequence parallelism (Jacobs et al. 2023, "DeepSpeed Ulysses").

A group of S ranks shares each micro batch. Every rank runs the model on 1/S of the columns
(embeddings, MLPs, norms and the output head are per token). Attention needs the whole
sequence: an all-to-all turns "my columns, all heads" into "all columns, my heads", attention
runs on H/S heads, and a second all-to-all turns it back. Memory for activations drops by S;
the price is two all-to-alls per layer.

How it plugs into transformers: models call the attention function registered under
``rlcamp_ulysses`` instead of sdpa/eager. No mask function is registered for that name, so
transformers builds no mask; the attention function builds the full one itself from
``segments`` (which sequence each column belongs to, -1 for padding), set per forward pass by
``forward_context``.

Context parallelism (strategy=megatron's ``context_parallel_size``) shares the same layout, forward
context and gathered outputs; only its attention differs: each rank keeps all heads of its columns and
gathers K and V whole in one collective (``context_parallel_attention``), instead of two all-to-alls.

Gradients: the per-position outputs (log-probs, values) are all-gathered over the group and every
rank computes the same full loss. The gather's backward keeps each rank's own columns only, so the
gradients summed over the group are the one-rank gradient of that loss. Counts that each rank of
a group sees in full (tokens of the mini batch) are divided by S (``SequenceParallel.size``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

ATTENTION_NAME = "rlcamp_ulysses"


@dataclass(frozen=True)
class SequenceParallel:
    """This rank's place: its Ulysses group of ``size`` consecutive ranks, and its data-parallel index."""

    group: object  # torch.distributed ProcessGroup
    size: int
    rank: int  # within the group
    dp_rank: int
    dp_size: int
    # context parallelism's causal balance: the columns cut into 2S chunks, rank r holding chunks r and 2S-1-r
    # (early and late positions), as megatron-core does; Ulysses keeps contiguous parts (it needs no balance)
    balanced: bool = False


def setup(size: int) -> SequenceParallel | None:
    """Groups of ``size`` consecutive ranks (collective: every rank calls it). None when size is 1."""
    if size <= 1:
        return None
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % size:
        raise ValueError(f"ulysses_sequence_parallel_size={size} does not divide the {world} ranks")
    mine = None
    for start in range(0, world, size):
        ranks = list(range(start, start + size))
        group = dist.new_group(ranks)  # every rank creates every group, in the same order
        if rank in ranks:
            mine = group
    return SequenceParallel(mine, size, rank % size, rank // size, world // size)


def install(model, sp: SequenceParallel, key: str) -> None:
    """Route ``model``'s attention through the Ulysses function (checks the heads split over S)."""
    from transformers import AttentionInterface

    config = model.config
    heads = config.num_attention_heads
    if heads % sp.size:
        raise ValueError(f"{key}={sp.size}: {type(model).__name__} has {heads} attention heads, which do not split "
                         f"over {sp.size} ranks; choose a degree that divides {heads}")
    AttentionInterface.register(ATTENTION_NAME, ulysses_attention)
    config._attn_implementation = ATTENTION_NAME


# ----------------------------------------------------------------------------- forward context
@dataclass
class _Context:
    sp: SequenceParallel
    segments: torch.Tensor  # [batch, padded_len]: sequence id of each column, -1 for padding
    order: torch.Tensor | None = None  # each column's place in the sequence (None: its index)
    masks: dict = field(default_factory=dict)  # by sliding window

    def mask(self, window: int | None) -> torch.Tensor:
        """[batch, 1, L, L] bool: causal, within one sequence, not to padding; plus the diagonal so that
        padding rows attend to themselves (a row with no key gives NaN, which poisons the backward)."""
        if window not in self.masks:
            seg = self.segments
            place = self.order if self.order is not None else torch.arange(seg.shape[1], device=seg.device)
            q, k = place[:, None], place[None, :]
            allowed = k <= q
            if window:
                allowed = allowed & (q - k < window)
            same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)
            self.masks[window] = ((allowed[None] & same) | (q == k)[None])[:, None]
        return self.masks[window]


_current: _Context | None = None


def forward_context(sp: SequenceParallel, segments: torch.Tensor, order: torch.Tensor | None = None) -> None:
    """Set the full-sequence layout for the next forward pass (``order``: each column's place in the sequence,
    when the columns are permuted). It stays set afterwards on purpose: gradient checkpointing re-runs
    attention during backward, outside the forward call."""
    global _current
    _current = _Context(sp, segments, order)


# ---------------------------------------------------------------------------- communication
def _all_to_all(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """x: [S, ...], slice j sent to group rank j; returns [S, ...], slice j received from rank j.
    Differentiable: the backward is the reverse all-to-all (torch's functional collectives, which
    replace the deprecated torch.distributed.nn version; they work over gloo too)."""
    from torch.distributed._functional_collectives import all_to_all_single_autograd

    return all_to_all_single_autograd(x.contiguous(), None, None, sp.group)


def seq_to_heads(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """[B, H, L/S, d] (my columns, all heads) -> [B, H/S, L, d] (all columns, my heads)."""
    b, h, c, d = x.shape
    s = sp.size
    out = _all_to_all(x.reshape(b, s, h // s, c, d).transpose(0, 1), sp)  # [S(from rank j = columns j), B, H/S, c, d]
    return out.permute(1, 2, 0, 3, 4).reshape(b, h // s, s * c, d)


def heads_to_seq(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """[B, H/S, L, d] -> [B, L/S, H, d] (the layout transformers' attention functions return)."""
    b, hs, length, d = x.shape
    s = sp.size
    c = length // s
    out = _all_to_all(x.reshape(b, hs, s, c, d).permute(2, 0, 1, 3, 4), sp)  # [S(from rank j = heads j), B, H/S, c, d]
    return out.permute(1, 3, 0, 2, 4).reshape(b, c, s * hs, d)


class _GatherColumns(torch.autograd.Function):
    """All-gather along dim 1; backward keeps this rank's own columns (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, sp):
        parts = [torch.empty_like(x) for _ in range(sp.size)]
        dist.all_gather(parts, x.contiguous(), group=sp.group)
        ctx.rank, ctx.width = sp.rank, x.shape[1]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        return grad[:, ctx.rank * ctx.width:(ctx.rank + 1) * ctx.width].contiguous(), None


def gather_columns(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    return _GatherColumns.apply(x, sp)


# -------------------------------------------------------------------------------- attention
def ulysses_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                      sliding_window=None, softcap=None, **_):
    """transformers' attention-function signature: q [B, H, L/S, d], k/v [B, Hkv, L/S, d] ->
    ([B, L/S, H, d], None). The model's own ``attention_mask`` is None here (see the module docstring)."""
    ctx = _current
    if ctx is None:
        raise RuntimeError("a Ulysses-installed model was called outside rlcamp's sequence-parallel forward")
    sp = ctx.sp
    heads, kv_heads = query.shape[1], key.shape[1]
    if kv_heads % sp.size:  # too few KV heads to split: repeat them up to the query heads first
        key = key.repeat_interleave(heads // kv_heads, dim=1)
        value = value.repeat_interleave(heads // kv_heads, dim=1)
    q, k, v = (seq_to_heads(t, sp) for t in (query, key, value))
    if q.shape[1] != k.shape[1]:  # grouped-query attention: contiguous head chunks keep the grouping
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return heads_to_seq(_attend(module, q, k, v, ctx.mask(sliding_window), scaling, dropout, softcap), sp), None


def _attend(module, q, k, v, mask, scaling, dropout, softcap):
    """softmax(q k^T * scaling) v under a boolean ``mask`` [B, 1, Lq, Lk]; q [B, H, Lq, d], k/v [B, H, Lk, d]."""
    if softcap is None:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                                scale=scaling)
    # Gemma 2's logit soft-capping, which sdpa does not do
    scores = (q @ k.transpose(-1, -2)) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return weights @ v


# ------------------------------------------------------------------- context parallel (K/V all-gather)
CONTEXT_PARALLEL_NAME = "rlcamp_context_parallel"


class _GatherKV(torch.autograd.Function):
    """Every rank's columns of K and V (concatenated on the last dim: ONE collective for both), whole on every
    rank. Backward: each rank's queries put gradient on every rank's keys and values; one all-to-all sends
    each column block to its owner, which sums them (a reduce-scatter, in a form gloo has)."""

    @staticmethod
    def forward(ctx, kv, sp):
        ctx.sp = sp
        parts = [torch.empty_like(kv) for _ in range(sp.size)]
        dist.all_gather(parts, kv.contiguous(), group=sp.group)
        return torch.cat(parts, dim=2)

    @staticmethod
    def backward(ctx, grad):
        sp = ctx.sp
        blocks = torch.stack(grad.chunk(sp.size, dim=2)).contiguous()  # [S, B, H, c, d]: block j for rank j
        received = torch.empty_like(blocks)
        dist.all_to_all_single(received, blocks, group=sp.group)
        return received.sum(0), None


def context_parallel_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                               sliding_window=None, softcap=None, **_):
    """Megatron's context parallelism without a ring: q/k/v of this rank's L/S columns [B, H(kv), L/S, d]; K and V
    are gathered whole (one all-gather), this rank's queries attend to them under the rows of the full mask
    that are its columns. Returns ([B, L/S, H, d], None)."""
    ctx = _current
    if ctx is None:
        raise RuntimeError("a context-parallel model was called outside rlcamp's sequence-parallel forward")
    sp, width, dk = ctx.sp, query.shape[2], key.shape[-1]
    kv = _GatherKV.apply(torch.cat([key, value], -1), sp)
    k, v = kv[..., :dk], kv[..., dk:]
    if query.shape[1] != k.shape[1]:  # grouped-query attention: contiguous head chunks share a KV head
        k = k.repeat_interleave(query.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(query.shape[1] // v.shape[1], dim=1)
    mask = ctx.mask(sliding_window)[:, :, sp.rank * width:(sp.rank + 1) * width]
    return _attend(module, query, k, v, mask, scaling, dropout, softcap).transpose(1, 2).contiguous(), None


def install_context_parallel(model) -> None:
    """Route ``model``'s attention through the K/V all-gather function (``context_parallel_attention``)."""
    from transformers import AttentionInterface

    AttentionInterface.register(CONTEXT_PARALLEL_NAME, context_parallel_attention)
    model.config._attn_implementation = CONTEXT_PARALLEL_NAME


# ----------------------------------------------------------------------------- model forward
def sharded_forward(model, sp: SequenceParallel, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    segments: torch.Tensor, keep: torch.Tensor, head, keep_in_model: bool = False):
    """Run ``model`` on this rank's columns and return per-position outputs at the global columns
    ``keep`` (sorted), gathered over the group: [batch, len(keep), ...].

    ``head(output, local_keep, global_keep)`` turns the model output into values [batch, k, ...] at the
    local columns ``local_keep`` (``global_keep`` are the same columns in full-sequence terms);
    ``keep_in_model`` passes ``logits_to_keep=local_keep`` so a causal LM projects only those columns.
    Columns are padded to a multiple of S; a padding column is a sequence of its own.
    Returns (gathered values, the model output)."""
    b, length = input_ids.shape
    s = sp.size
    parts = 2 * s if sp.balanced else s
    padded = -(-length // parts) * parts
    if padded != length:
        extra = padded - length
        input_ids = torch.nn.functional.pad(input_ids, (0, extra))
        position_ids = torch.nn.functional.pad(position_ids, (0, extra))
        fresh = segments.max() + 1 + torch.arange(extra, device=segments.device)
        segments = torch.cat([segments, fresh.expand(b, extra)], dim=1)
    width = padded // s
    start = sp.rank * width
    order, at = None, keep  # at: where each kept column sits in the (permuted) columns
    if sp.balanced:  # rank r: chunks r and 2S-1-r of the sequence
        chunk = padded // parts
        order = torch.cat([torch.arange(c * chunk, (c + 1) * chunk, device=input_ids.device)
                           for r in range(s) for c in (r, parts - 1 - r)])
        input_ids, position_ids, segments = input_ids[:, order], position_ids[:, order], segments[:, order]
        at = torch.argsort(order)[keep]
    forward_context(sp, segments, order)
    mine = (at >= start) & (at < start + width)
    local_keep = at[mine] - start
    kwargs = {"logits_to_keep": local_keep} if keep_in_model else {}
    out = model(input_ids=input_ids[:, start:start + width], position_ids=position_ids[:, start:start + width],
                use_cache=False, **kwargs)
    values = head(out, local_keep, keep[mine])  # [B, k_local, ...]
    local = values.new_zeros((b, width) + tuple(values.shape[2:]))
    local[:, local_keep] = values
    return gather_columns(local, sp)[:, at], out
