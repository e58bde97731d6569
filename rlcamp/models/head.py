"""Log-probs (and entropy) of chosen tokens straight from hidden states, a chunk of rows at a time.

The plain way projects every position onto the whole vocabulary, keeps the [tokens, vocab] logits
in fp32 for the backward, and runs several full-size passes over them (log-sum-exp, softmax,
gather, and the same again backwards). With SmolLM2's 49k vocabulary and 512 response tokens that
is 100 MB per tensor; on CPU every fresh tensor that size is also page faults. Here the logits of
``chunk`` rows exist at a time: the forward keeps the per-row log-sum-exp (and entropy), plus the
exponentials of its first chunks up to ``SAVED_ELEMENTS``; the backward takes those, recomputes the
other chunks' logits, turns them into d loss / d logits in the compute dtype
(what autocast's backward holds anyway) and multiplies a block of those rows into the gradients
of the hidden states and of the output weight. Same values as ``log_probs_from_logits`` /
``entropy_from_logits`` on the full logits (tested), computed in the same dtypes: the projection
in the compute dtype (autocast's, when on), everything after it in fp32.
"""

from __future__ import annotations

import torch

from rlcamp.models.families import is_plain_decoder

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MB in fp32 (341 rows of a 49k vocabulary)
# the backward's d loss / d logits per block of rows, in the compute dtype (64 MB in bf16): the two
# matmuls that follow are per block, not per chunk (per chunk, adding up the [vocab, hidden] weight
# gradient would cost more than the chunk itself)
BLOCK_ELEMENTS = 1 << 25
# exp(logits - max) of the first chunks kept from the forward for the backward, up to this many
# values (128 MB in fp32): those chunks skip the backward's recomputation, one of the head's four
# vocabulary-sized products; the rest are recomputed, so memory stays bounded for any length
SAVED_ELEMENTS = 1 << 25
EXP_FLOOR = -80.0


def _rows_per_chunk(vocab: int, rows: int) -> int:
    """At most CHUNK_ELEMENTS logits a chunk, in chunks of equal size (a short last chunk multiplies slower)."""
    most = max(1, CHUNK_ELEMENTS // vocab)
    chunks = max(1, -(-rows // most))  # no rows (a context-parallel rank's columns may predict none): one empty chunk
    return max(1, -(-rows // chunks))


def _exp(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """exp of x <= 0, with x floored at -80 first: torch's CPU exp takes a slow path (~20x) for
    inputs below ~-87, whose results are subnormal or zero. exp(-80) = 2e-35 is nothing next to
    the row's largest term, 1."""
    x = x.clamp_(min=EXP_FLOOR) if inplace else x.clamp(min=EXP_FLOOR)
    return x.exp_()


class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, inv_temperature: float, with_entropy: bool, compute_dtype):
        n, vocab = hidden.shape[0], weight.shape[0]
        w = weight.to(compute_dtype)
        log_probs = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(log_probs)
        entropy = torch.empty_like(log_probs) if with_entropy else None
        step = _rows_per_chunk(vocab, n)
        keep = SAVED_ELEMENTS if any(ctx.needs_input_grad[:2]) else 0
        saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # chunk start -> (exp(z), its row sums)
        for s in range(0, n, step):
            e = min(n, s + step)
            z = (hidden[s:e].to(compute_dtype) @ w.T).float()
            if inv_temperature != 1.0:
                z.mul_(inv_temperature)
            top = z.amax(dim=-1, keepdim=True)
            z.sub_(top)
            picked = z.gather(1, labels[s:e, None])[:, 0]
            ez = _exp(z, inplace=not with_entropy)
            total = ez.sum(-1)
            lse[s:e] = top[:, 0] + total.log()
            log_probs[s:e] = picked - total.log()
            if with_entropy:  # H = -sum p log p = log(total) - sum(ez * z) / total, with z = logits - top
                entropy[s:e] = total.log() - (ez * z).sum(-1) / total
            if ez.numel() <= keep:
                saved[s], keep = (ez, total), keep - ez.numel()
        ctx.save_for_backward(hidden, weight, labels, lse, entropy if with_entropy else lse)
        ctx.saved_exp, ctx.step = saved, step
        # an output the loss does not use (the entropy, when only reported) gets None, not zeros to work through
        ctx.set_materialize_grads(False)
        ctx.inv_temperature, ctx.with_entropy, ctx.compute_dtype = inv_temperature, with_entropy, compute_dtype
        if with_entropy:
            return log_probs, entropy
        return log_probs, torch.zeros_like(log_probs)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        hidden, weight, labels, lse, entropy = ctx.saved_tensors
        t, dtype = ctx.inv_temperature, ctx.compute_dtype
        use_entropy = ctx.with_entropy and grad_entropy is not None
        n, vocab = hidden.shape[0], weight.shape[0]
        w = weight.to(dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = None
        g_lp = grad_log_probs.float() if grad_log_probs is not None else torch.zeros_like(lse)
        step = ctx.step  # the forward's chunks, so that its saved ones line up
        block = max(1, BLOCK_ELEMENTS // vocab) // step * step or step
        saved, ctx.saved_exp = ctx.saved_exp or {}, None  # (a second backward, retain_graph, recomputes)
        in_place = dtype == torch.float32  # d loss / d logits computed right in grad_z, no temporaries
        for b in range(0, n, block):  # d loss / d logits of a block of rows, then two matmuls for the block
            b_end = min(n, b + block)
            grad_z = torch.empty((b_end - b, vocab), dtype=dtype, device=hidden.device)
            for s in range(b, b_end, step):
                e = min(b_end, s + step)
                # d lp / dz = onehot - p;  d H / dz = -p (log p + H)
                if s in saved and not use_entropy:  # p = exp(z) / its row sum, kept by the forward
                    ez, total = saved.pop(s)
                    g = torch.mul(ez, (-g_lp[s:e] / total)[:, None], out=grad_z[s - b:e - b] if in_place else None)
                else:
                    if in_place:
                        log_p = torch.mm(hidden[s:e], w.T, out=grad_z[s - b:e - b])
                    else:
                        log_p = (hidden[s:e].to(dtype) @ w.T).float()
                    if t != 1.0:
                        log_p.mul_(t)
                    log_p.sub_(lse[s:e, None])  # log softmax
                    if use_entropy:
                        p = _exp(log_p, inplace=False)
                        g_ent = grad_entropy[s:e, None].float()
                        g = log_p.add_(entropy[s:e, None]).mul_(-g_ent).sub_(g_lp[s:e, None]).mul_(p)
                    else:
                        g = _exp(log_p, inplace=True).mul_(-g_lp[s:e, None])
                g[torch.arange(e - s, device=g.device), labels[s:e]] += g_lp[s:e]
                if t != 1.0:
                    g.mul_(t)
                if not in_place:
                    grad_z[s - b:e - b] = g
            if grad_hidden is not None and grad_hidden.dtype == dtype:
                torch.mm(grad_z, w, out=grad_hidden[b:b_end])
            elif grad_hidden is not None:
                grad_hidden[b:b_end] = grad_z @ w
            if ctx.needs_input_grad[1]:
                h = hidden[b:b_end].to(dtype)
                if grad_weight is None:
                    grad_weight = (grad_z.T @ h).to(weight.dtype)
                elif weight.dtype == dtype:
                    grad_weight.addmm_(grad_z.T, h)
                else:
                    grad_weight.add_(grad_z.T @ h)
        return grad_hidden, grad_weight, None, None, None, None


def chunked_log_probs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                      with_entropy: bool = False, backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(hidden @ weight.T / temperature)[labels] for hidden [n, d], weight [vocab, d],
    labels [n]; plus the entropy of that softmax when asked. fp32 outputs [n]. Under autocast the
    projection runs in autocast's dtype, as ``nn.Linear`` would. ``backend``: "torch" (this
    module's chunks) or "triton" (``rlcamp.models.triton_head``: fused kernels, same values)."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        if backend == "triton":
            from rlcamp.models.triton_head import triton_log_probs

            log_probs, entropy = triton_log_probs(hidden, weight, labels, 1.0 / temperature, with_entropy, dtype)
        else:
            log_probs, entropy = _ChunkedLogProbs.apply(hidden, weight, labels, 1.0 / temperature, with_entropy,
                                                        dtype)
    return log_probs, (entropy if with_entropy else None)


# dense decoder-only families whose causal-LM head is exactly ``lm_head(decoder(...).last_hidden_state)``
# (no logit soft-capping or scaling, no router loss added in the wrapper) and whose attention is
# plain causal attention over position ids


def has_plain_head(model) -> bool:
    """Whether ``model``'s log-probs can be taken from its decoder's hidden states with
    ``chunked_log_probs``: a known plain head, and weights that are not sharded (FSDP's unsharding
    hooks sit on the wrapper's forward, which this path goes around; a model can be sharded after
    its first call, so that part is checked every time)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    plain = (is_plain_decoder(model.config) and isinstance(head, torch.nn.Linear)
             and head.bias is None and hasattr(model, "get_decoder"))
    return plain and not hasattr(head.weight, "full_tensor")
