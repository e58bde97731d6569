"""Every model-family quirk rlcamp acts on, in one place, read from a model (or its ``config``).

    plain decoder      the output layer is a bias-free Linear over the decoder's hidden states, attention is
                       plain causal attention over position ids (the chunked head, prompt sharing)
    sliding window     attention sees only the last W tokens (Mistral, Gemma 2 / 3, Qwen2 with it on)
    logit soft-capping tanh caps on attention scores / final logits (Gemma 2): not a plain decoder; the
                       Ulysses attention applies the cap transformers passes it
    MoE router loss    the load-balancing loss's weight (``router_aux_loss_coef``; Qwen MoE, Mixtral, DeepSeek)
    tied embeddings    the output layer is the input embedding (saved once, as the embedding)
    value head         a critic's / reward model's scalar head: ``score`` or ``classifier``
    FSDP units         the repeated decoder blocks (HF's ``_no_split_modules``)

A new family that needs special handling adds its case here; the engines and workers ask these functions.
"""

from __future__ import annotations

import torch

# decoders whose output layer is a plain Linear over the decoder's hidden states (no logit soft-capping
# or scaling, no router loss added in the wrapper) and whose attention is plain causal attention
PLAIN_DECODERS = frozenset({"llama", "qwen2", "qwen3", "mistral", "gemma", "olmo2", "smollm3"})
VALUE_HEADS = ("score", "classifier")
OUTPUT_LAYERS = ("lm_head",) + VALUE_HEADS


def is_plain_decoder(config) -> bool:
    return getattr(config, "model_type", None) in PLAIN_DECODERS


def has_sliding_window(config) -> bool:
    """Whether any layer attends through a sliding window (a global ``sliding_window`` in use, or per-layer types)."""
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return sliding or any("sliding" in t for t in getattr(config, "layer_types", None) or ())


def router_aux_loss_coef(config) -> float:
    """The weight of the MoE router's load-balancing loss in the actor's loss (0 for dense models)."""
    return float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0)


def ties_output_to_embeddings(model) -> bool:
    """The output layer is the input embedding: saved once (as the embedding), restored from it."""
    return bool(getattr(model.config, "tie_word_embeddings", False)) and hasattr(model, "lm_head")


def value_head(model) -> torch.nn.Linear:
    """A critic's or reward model's scalar head (transformers names it ``score`` or ``classifier``)."""
    from rlcamp.models.loading import ModelError

    for name in VALUE_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise ModelError(f"{type(model).__name__} has no {' or '.join(repr(n) for n in VALUE_HEADS)} head")


def decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated blocks FSDP wraps one by one and pipeline / tensor parallelism split (HF's ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise RuntimeError(f"{type(model).__name__} declares no _no_split_modules; cannot choose FSDP units")
    return layers
