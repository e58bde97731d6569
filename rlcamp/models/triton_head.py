"""The log-prob head as Triton kernels (``fused_kernel_options.impl_backend=triton``).

Same result as ``rlcamp.models.head.chunked_log_probs``: log softmax(hidden @ weight.T / T)[labels]
and the entropy of that softmax, never holding the [tokens, vocabulary] logits.

- Forward: one kernel; each program takes ``BLOCK_M`` rows and walks the vocabulary ``BLOCK_N``
  columns at a time, computing that tile of logits with ``tl.dot`` over the hidden size and folding
  it into a running max, sum of exponentials and (for the entropy) sum of exp(z) * z: an online
  log-sum-exp. Only per-row numbers reach memory.
- Backward: per chunk of rows, a kernel recomputes each logits tile and writes d loss / d logits
  (in the compute dtype, as autocast's backward would hold it) into a [chunk, vocabulary] buffer;
  two matmuls of that buffer give the gradients of the hidden states and of the weight (cuBLAS is
  better at those than a hand-written kernel).

It runs where Triton runs: a CUDA device, or Triton's CPU interpreter (``TRITON_INTERPRET=1``,
slow, which is how the tests check it here against the PyTorch head).
The tile sizes are conventional defaults for H100-class GPUs, not tuned here (no GPU was lent).
"""

from __future__ import annotations

import os

import torch

from rlcamp.utils.imports import has_module

BLOCK_M, BLOCK_N, BLOCK_K = 64, 128, 64
GRAD_CHUNK_ELEMENTS = 1 << 25  # d loss / d logits held per backward chunk (64 MB in bf16)


def interpreted() -> bool:
    """Whether Triton runs its CPU interpreter instead of compiling (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_problem(device: str) -> str | None:
    """Why the Triton head cannot run on ``device`` ('cuda', 'cpu', ...) here, or None."""
    if not has_module("triton"):
        return "it needs the triton package (pip install triton; CUDA builds of torch bring it)"
    if device == "cuda" or interpreted():
        return None
    return (f"Triton compiles for CUDA devices, and this run's device is {device} (TRITON_INTERPRET=1 runs Triton's "
            "CPU interpreter instead: exact but very slow, for tests)")


def _kernels():
    """Imported on first use, so that importing rlcamp never needs triton."""
    from rlcamp.models._triton_kernels import forward_kernel, grad_logits_kernel

    return forward_kernel, grad_logits_kernel


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _TritonLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, inv_temperature: float, with_entropy: bool, compute_dtype):
        forward_kernel, _ = _kernels()
        h = hidden.to(compute_dtype).contiguous()
        w = weight.to(compute_dtype).contiguous()
        labels = labels.contiguous()
        n, dim = h.shape
        vocab = w.shape[0]
        log_probs = torch.empty(n, dtype=torch.float32, device=h.device)
        lse = torch.empty_like(log_probs)
        entropy = torch.empty_like(log_probs) if with_entropy else lse  # (not written without entropy)
        if n:
            forward_kernel[(_cdiv(n, BLOCK_M),)](h, w, labels, log_probs, lse, entropy, n, vocab, dim, h.stride(0),
                                                 w.stride(0), inv_temperature, WITH_ENTROPY=with_entropy, UPCAST=interpreted(),
                                                 BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
        ctx.save_for_backward(hidden, weight, labels, lse, entropy)
        ctx.set_materialize_grads(False)
        ctx.inv_temperature, ctx.with_entropy, ctx.compute_dtype = inv_temperature, with_entropy, compute_dtype
        return log_probs, (entropy if with_entropy else torch.zeros_like(log_probs))

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        _, grad_logits_kernel = _kernels()
        hidden, weight, labels, lse, entropy = ctx.saved_tensors
        dtype = ctx.compute_dtype
        use_entropy = ctx.with_entropy and grad_entropy is not None
        h = hidden.to(dtype).contiguous()
        w = weight.to(dtype).contiguous()
        n, dim = h.shape
        vocab = w.shape[0]
        g_lp = (grad_log_probs.float() if grad_log_probs is not None else torch.zeros_like(lse)).contiguous()
        g_ent = grad_entropy.float().contiguous() if use_entropy else g_lp
        grad_hidden = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_weight = None
        step = max(BLOCK_M, GRAD_CHUNK_ELEMENTS // vocab // BLOCK_M * BLOCK_M)
        grad_z = torch.empty((min(step, n), vocab), dtype=dtype, device=h.device)
        for s in range(0, n, step):
            e = min(n, s + step)
            rows = e - s
            out = grad_z[:rows]
            grad_logits_kernel[(_cdiv(rows, BLOCK_M), _cdiv(vocab, BLOCK_N))](
                h[s:e], w, labels[s:e], lse[s:e], entropy[s:e], g_lp[s:e], g_ent[s:e], out, rows, vocab, dim,
                h.stride(0), w.stride(0), out.stride(0), ctx.inv_temperature, USE_ENTROPY=use_entropy, UPCAST=interpreted(),
                BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
            if grad_hidden is not None:
                torch.mm(out, w, out=grad_hidden[s:e])
            if ctx.needs_input_grad[1]:  # summed in the weight's dtype, as the PyTorch head does
                part = out.T @ h[s:e]
                grad_weight = part.to(weight.dtype) if grad_weight is None else grad_weight.add_(part)
        return (grad_hidden.to(hidden.dtype) if grad_hidden is not None else None, grad_weight,
                None, None, None, None)


def triton_log_probs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, inv_temperature: float,
                     with_entropy: bool, compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton head; arguments as ``rlcamp.models.head._ChunkedLogProbs``."""
    problem = triton_problem(hidden.device.type)
    if problem is not None:
        raise RuntimeError(f"actor_rollout_ref.model.fused_kernel_options.impl_backend=triton: {problem}; "
                           "impl_backend=torch runs the same head on any device")
    return _TritonLogProbs.apply(hidden, weight, labels, inv_temperature, with_entropy, compute_dtype)
