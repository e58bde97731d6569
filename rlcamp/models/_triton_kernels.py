"""Triton kernels of the log-prob head (``rlcamp.models.triton_head`` explains them); this module
imports triton, so rlcamp imports it only when impl_backend=triton is used."""

import triton
import triton.language as tl


@triton.jit
def _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, dim, stride_h, stride_w, inv_t, UPCAST: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # fp32 accumulation; fp32 inputs multiply in full precision ("ieee", as torch's matmul without TF32).
    # UPCAST: bf16/fp16 tiles go through the dot as fp32 (the same products, exactly), for Triton's CPU
    # interpreter, whose dot of 16-bit tiles returns garbage (Triton 3.9); compiled, they stay 16-bit
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, dim, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < dim
        h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            h, w = h.to(tl.float32), w.to(tl.float32)
        if h.dtype == tl.float32:
            acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(h, tl.trans(w), acc)
    return acc * inv_t


@triton.jit
def forward_kernel(h_ptr, w_ptr, labels_ptr, lp_ptr, lse_ptr, ent_ptr, n, vocab, dim, stride_h, stride_w, inv_t,
                   WITH_ENTROPY: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    labels = tl.load(labels_ptr + rows, mask=row_ok, other=0)
    top = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum of exp(z - top)
    weighted = tl.zeros((BLOCK_M,), dtype=tl.float32)  # sum of exp(z - top) * z
    picked = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for v0 in range(0, vocab, BLOCK_N):
        cols = v0 + tl.arange(0, BLOCK_N)
        col_ok = cols < vocab
        z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, dim, stride_h, stride_w, inv_t,
                         UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        z = tl.where(col_ok[None, :], z, float("-inf"))
        new_top = tl.maximum(top, tl.max(z, axis=1))
        rescale = tl.exp(top - new_top)
        ez = tl.exp(z - new_top[:, None])
        total = total * rescale + tl.sum(ez, axis=1)
        if WITH_ENTROPY:
            weighted = weighted * rescale + tl.sum(ez * tl.where(col_ok[None, :], z, 0.0), axis=1)
        picked += tl.sum(tl.where(cols[None, :] == labels[:, None], z, 0.0), axis=1)
        top = new_top
    lse = top + tl.log(total)
    tl.store(lp_ptr + rows, picked - lse, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    if WITH_ENTROPY:  # H = -sum p log p = lse - sum p z
        tl.store(ent_ptr + rows, lse - weighted / total, mask=row_ok)


@triton.jit
def grad_logits_kernel(h_ptr, w_ptr, labels_ptr, lse_ptr, ent_ptr, g_lp_ptr, g_ent_ptr, out_ptr, n, vocab, dim,
                       stride_h, stride_w, stride_out, inv_t, USE_ENTROPY: tl.constexpr, UPCAST: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < n, cols < vocab
    z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, dim, stride_h, stride_w, inv_t,
                     UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
    log_p = z - tl.load(lse_ptr + rows, mask=row_ok, other=0.0)[:, None]
    p = tl.exp(log_p)
    g_lp = tl.load(g_lp_ptr + rows, mask=row_ok, other=0.0)[:, None]
    labels = tl.load(labels_ptr + rows, mask=row_ok, other=0)
    # d lp / dz = onehot - p;  d H / dz = -p (log p + H);  z = logits / T
    g = tl.where(cols[None, :] == labels[:, None], g_lp, 0.0) - g_lp * p
    if USE_ENTROPY:
        ent = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)[:, None]
        g -= tl.load(g_ent_ptr + rows, mask=row_ok, other=0.0)[:, None] * p * (log_p + ent)
    g = g * inv_t
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], g.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])
