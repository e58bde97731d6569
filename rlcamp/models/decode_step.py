"""Decode steps of a Llama-family model without transformers' per-step machinery (rlcamp's own engine).

A decode step feeds one token per row. Through the model's forward every layer of every step grows
the KV cache by a ``torch.cat``, builds the mask and the rotary table again, and pays the module and
keyword bookkeeping around its small operations; rlcamp's CPU attention also copies the transposed
keys of every layer at every step, and oneDNN reorders every bf16 weight at every product. Here the
same operations run in the same order on the model's own weights, through the model's own attention
function, so the tokens and log-probs are the forward's to the bit (``tests/models/test_decode_step.py``);
the rotary table is computed once a step, the KV cache is allocated once and written in place (keys
transposed for rlcamp's CPU attention), and bf16 weights are packed once. About 1.1x on 2 CPU cores
(``benchmarks/RESULTS.md``, "Decode steps").

The prefill stays the model's forward: its cache is copied in once. It applies to the families
whose blocks are Llama's (``FAMILIES``) with the default RoPE, a SiLU MLP without biases and no
sliding window; ``unsupported`` says why another model decodes through its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAMILIES = ("llama", "qwen2")
ATTENTION = ("sdpa", "rlcamp_cpu")  # attention functions that take transformers' boolean SDPA mask


def unsupported(model) -> str | None:
    """Why ``model`` cannot use ``DecodeState`` (None: it can)."""
    config = model.config
    if config.model_type not in FAMILIES:
        return f"model_type {config.model_type!r} is not one of {FAMILIES}"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"RoPE type {rope.get('rope_type')!r}"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "mlp_bias", False):
        return "an MLP other than SiLU without biases"
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention"
    if getattr(config, "_attn_implementation", None) not in ATTENTION:
        return f"attention {getattr(config, '_attn_implementation', None)!r} (its masks differ: {ATTENTION} take a boolean one)"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "not a causal LM with model.layers and lm_head"
    if any(hasattr(p, "full_tensor") for p in model.parameters()):
        return "sharded (DTensor) weights"
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return "forward hooks on its modules"
    return None


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm, operation for operation: in fp32, back to the input dtype, then the weight."""
    dtype = hidden.dtype
    x = hidden.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as transformers applies it: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, pack: bool):
    """``x -> F.linear(x, weight, bias)``; with ``pack``, a bf16 weight on the CPU is reordered once into
    oneDNN's blocked layout, so the product no longer reorders it at every call: 22% less time in a
    decode step's products at 32 rows of SmolLM2-135M (``benchmarks/RESULTS.md``, "Decode steps").
    Packed only under rlcamp's CPU attention, where the tokens and log-probs are tested to stay the
    forward's to the bit (under SDPA a Qwen2 with biases moved a log-prob by 4e-3, not understood yet)."""
    if pack and weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return lambda x: F.linear(x, weight, bias)


class DecodeState:
    """The KV cache of the rows being decoded, and the decode step over it.

    ``cache``: the prefill's transformers cache (one entry per layer, [rows, kv_heads, length, head_dim]);
    ``max_len``: the longest the sequences get (prompt + new tokens). With rlcamp's CPU attention the
    keys are kept transposed ([rows, kv_heads, head_dim, max_len]): the scores' product reads them as
    they lie, where that attention copies the transposed cache of every layer at every step. Other
    attention functions get the keys as the model's cache holds them (SDPA's numbers depend on it)."""

    def __init__(self, model, cache, max_len: int):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.model, self.inner, config = model, model.model, model.config
        self.layers = list(self.inner.layers)
        self.attention = ALL_ATTENTION_FUNCTIONS[config._attn_implementation]
        self.own_attention = config._attn_implementation == "rlcamp_cpu"
        self.inv_freq = self.inner.rotary_emb.inv_freq
        self.rope_scale = self.inner.rotary_emb.attention_scaling
        rows = cache.layers[0].keys.shape[0]
        self.linears = []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.linears.append({name: packed_linear(module.weight, module.bias, rows, self.own_attention) for name, module in (
                ("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj), ("o", attn.o_proj),
                ("gate", mlp.gate_proj), ("up", mlp.up_proj), ("down", mlp.down_proj))})
        self.head = packed_linear(model.lm_head.weight, model.lm_head.bias, rows, self.own_attention)
        self.keys_t, self.values = [], []
        for i in range(len(self.layers)):
            k, v = cache.layers[i].keys, cache.layers[i].values
            rows, kv_heads, length, head_dim = k.shape
            kt = k.new_empty(rows, kv_heads, head_dim, max_len) if self.own_attention else \
                k.new_empty(rows, kv_heads, max_len, head_dim).transpose(-1, -2)
            vb = v.new_empty(rows, kv_heads, max_len, head_dim)
            kt[..., :length], vb[:, :, :length] = k.transpose(-1, -2), v
            self.keys_t.append(kt)
            self.values.append(vb)
        self.filled = length

    def keep(self, rows: torch.Tensor) -> None:
        """Go on with these rows only (the others finished)."""
        self.keys_t = [k[rows] for k in self.keys_t]
        self.values = [v[rows] for v in self.values]

    def _attend(self, attn, q, keys_t, values, mask):
        """One query position against the filled cache, through the model's attention function. rlcamp's
        CPU attention transposes the keys it is given, so the transposed buffer's view is read as it lies;
        past MATH_MAX_KEYS it hands them to SDPA, whose numbers follow the layout: the cache's own then."""
        from rlcamp.models.cpu_attention import MATH_MAX_KEYS

        keys = keys_t.transpose(-1, -2)
        if self.own_attention and keys.shape[-2] > MATH_MAX_KEYS:
            keys = keys.contiguous()
        out, _ = self.attention(attn, q, keys, values, mask, dropout=0.0, scaling=attn.scaling)
        return out

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """tokens, positions [rows]; key_mask [rows, filled + 1] (False on the prompts' padding) ->
        next-token logits [rows, vocab], the model's last-position logits for these inputs."""
        hidden = self.inner.embed_tokens(tokens[:, None])  # [rows, 1, hidden]
        # the rotary table of this step, as the model's rotary embedding computes it
        freqs = positions[:, None, None].float() * self.inv_freq.to(hidden.device, torch.float32)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(hidden.dtype)[:, None]  # [rows, 1, 1, head_dim]
        sin = (emb.sin() * self.rope_scale).to(hidden.dtype)[:, None]
        # padding in the prompts masks keys; without any, the attention runs unmasked, as the model's does
        mask = None if bool(key_mask.all()) else key_mask[:, None, None, :].bool()
        rows, at = tokens.shape[0], self.filled
        for layer, linear, keys_t, values in zip(self.layers, self.linears, self.keys_t, self.values):
            attn = layer.self_attn
            x = rms_norm(hidden, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
            q = linear["q"](x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            k = linear["k"](x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            v = linear["v"](x).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            keys_t[..., at:at + 1] = rotate(k, cos, sin).transpose(-1, -2)
            values[:, :, at:at + 1] = v
            out = self._attend(attn, rotate(q, cos, sin), keys_t[..., :at + 1], values[:, :, :at + 1], mask)
            hidden = hidden + linear["o"](out.reshape(rows, 1, -1).contiguous())
            norm = layer.post_attention_layernorm
            x = rms_norm(hidden, norm.weight, norm.variance_epsilon)
            hidden = hidden + linear["down"](F.silu(linear["gate"](x)) * linear["up"](x))
        self.filled = at + 1
        hidden = rms_norm(hidden, self.inner.norm.weight, self.inner.norm.variance_epsilon)
        return self.head(hidden[:, -1])
