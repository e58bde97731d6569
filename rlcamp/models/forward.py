"""Forward passes over prompt + response: per-token log-probs / entropy (actor, ref) and values (critic).

Sequences are [left-padded prompt | right-padded response]. A micro batch is first trimmed to its
own real extent (leading columns that are padding in every row, trailing response columns that
are padding in every row), so short micro batches do not pay for the longest sequence of the step.
Outputs are [batch, response_len], aligned with ``responses``: position t is the prediction of
response token t, made from the token before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcamp.algos.losses import entropy_from_logits, log_probs_from_logits


@dataclass(frozen=True)
class SequenceInputs:
    input_ids: torch.Tensor  # [batch, prompt' + response']
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_len: int  # response' (trimmed)
    full_response_len: int  # before trimming, to pad outputs back


def sequence_inputs(prompts: torch.Tensor, prompt_mask: torch.Tensor, responses: torch.Tensor,
                    response_mask: torch.Tensor, trim: bool = True) -> SequenceInputs:
    full_response_len = responses.shape[1]
    if trim:
        keep_prompt = int(prompt_mask.sum(-1).max())
        keep_response = max(int(response_mask.sum(-1).max()), 1)
        prompts, prompt_mask = prompts[:, -keep_prompt:], prompt_mask[:, -keep_prompt:]
        responses, response_mask = responses[:, :keep_response], response_mask[:, :keep_response]
    input_ids = torch.cat([prompts, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return SequenceInputs(input_ids, attention_mask, position_ids, responses.shape[1], full_response_len)


def _pad_back(x: torch.Tensor, inputs: SequenceInputs) -> torch.Tensor:
    missing = inputs.full_response_len - x.shape[1]
    return x if missing == 0 else torch.nn.functional.pad(x, (0, missing))


def actor_forward(model, inputs: SequenceInputs, temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs [batch, response_len] of the response tokens under softmax(logits / T), entropy
    optional, and the model's MoE aux loss (or None)."""
    r = inputs.response_len
    out = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
                use_cache=False, logits_to_keep=r + 1)
    logits = out.logits[:, :-1].float()  # predictions of the r response tokens
    if temperature != 1.0:
        logits = logits / temperature
    labels = inputs.input_ids[:, -r:]
    log_probs = _pad_back(log_probs_from_logits(logits, labels), inputs)
    entropy = _pad_back(entropy_from_logits(logits), inputs) if with_entropy else None
    return log_probs, entropy, getattr(out, "aux_loss", None)


def critic_forward(model, inputs: SequenceInputs) -> torch.Tensor:
    """Values [batch, response_len]: V of the state before each response token."""
    r = inputs.response_len
    out = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
                use_cache=False)
    values = out.logits[:, -r - 1:-1, 0].float()
    return _pad_back(values, inputs)
