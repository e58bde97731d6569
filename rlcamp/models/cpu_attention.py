"""Attention for CPU training: plain matmul-softmax-matmul for short sequences, SDPA for long ones.

torch's CPU SDPA kernel (flash-style, blocked) pays a fixed cost per (row, head) block; on
short sequences with many rows that dominates, most of all backwards and in bf16. Measured on
this project's 2-core CPU, forward + backward, 9 heads of 64 (``benchmarks/RESULTS.md``):

    bf16  16 x 77 keys:   SDPA 21 ms   matmul-softmax 5 ms
    bf16   4 x 173:             17 ms                  5 ms  (boolean mask)
    bf16   4 x 256:             10 ms                 13 ms
    bf16   2 x 512:             13 ms                 23 ms

so up to ``MATH_MAX_KEYS`` keys the explicit form runs, above it SDPA (its memory stays linear in
the length; the explicit form's is quadratic). With grouped-query attention the query heads of a
group are stacked as rows against their one KV head, so keys and values (when decoding, the
whole cache) are not copied per query head. The masks are the ones transformers builds for
SDPA (boolean, or None for plain causal), so padding, packed sequences and sliding windows behave
exactly as with ``attn_implementation="sdpa"``.

Chosen for a trained model on CPU whose attention is transformers' default SDPA, unless the
user set ``override_config.attn_implementation`` (see ``use_on_cpu``).
"""

from __future__ import annotations

import torch

NAME = "rlcamp_cpu"
MATH_MAX_KEYS = 192  # the measured crossover is between 173 and 256 keys (bf16; fp32 is even up to 256)


def cpu_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention-function signature: q [B, H, Lq, d], k/v [B, Hkv, Lk, d] ->
    ([B, Lq, H, d], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    if (kv_len > MATH_MAX_KEYS or query.device.type != "cpu" or kwargs.get("softcap") is not None
            or (attention_mask is not None and attention_mask.dtype != torch.bool)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, heads, _, d = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    # the query heads that share a KV head become extra query rows of it: keys and values (the whole
    # cache, when decoding) are never repeated into copies
    q = query.reshape(b, kv_heads, groups * q_len, d)
    scale = scaling if scaling is not None else d ** -0.5
    scores = (q @ key.transpose(-1, -2)) * scale  # [b, kv_heads, groups * q_len, kv_len]
    if attention_mask is None and q_len > 1 and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        # bottom-right aligned causal mask (queries are the last q_len positions of the keys)
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)[None, None]
    if attention_mask is not None:
        # a large negative rather than -inf: a fully masked (padding) row gets finite, unused weights
        scores = scores.view(b, kv_heads, groups, q_len, kv_len).masked_fill(
            ~attention_mask[:, :, None], torch.finfo(scores.dtype).min).view(b, kv_heads, groups * q_len, kv_len)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0.0:
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return (weights @ value).view(b, heads, q_len, d).transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, cpu_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_on_cpu(model, override_config: dict) -> bool:
    """Route ``model``'s attention through ``cpu_attention`` when it sits on the CPU with transformers'
    default SDPA and the user did not choose an implementation. Returns whether it did."""
    config = model.config
    if ("attn_implementation" in override_config or getattr(config, "_attn_implementation", None) != "sdpa"
            or next(model.parameters()).device.type != "cpu"):
        return False
    register()
    config._attn_implementation = NAME
    return True
