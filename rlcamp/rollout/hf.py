"""rlcamp's own rollout engine (``rollout.name=hf``): batched sampling with a KV cache.

It runs on the actor's own module (``shares_weights``: nothing to sync after an update) or on a copy
that ``load_weights`` refreshes in place. Prompts come
left-padded; the prefill runs each distinct prompt once (the n samples of a prompt share it) and
computes logits for the last position only, each decode step feeds one
token per active row, and rows that finished are dropped from the cache so the remaining work
shrinks with them. Output buffers are allocated once; nothing is re-padded or re-tokenised.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rlcamp.models.decode_step import DecodeState, unsupported
from rlcamp.rollout.base import NamedTensors, RolloutEngine, named_items


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    do_sample: bool = True


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None):
    """Pick next tokens from [rows, vocab] logits; returns (tokens, log-probs under softmax(logits / T)).

    The log-prob is that of the tempered distribution before top-k/top-p truncation, which is what
    the trainer recomputes as ``old_log_probs``, so the two can be compared token by token.
    Sampling inverts the CDF with one uniform number per row: exact, and ~15x cheaper here than
    ``torch.multinomial`` or Gumbel noise, which draw a random number per vocabulary entry.
    """
    logits = logits.float()
    if not params.do_sample or params.temperature == 0:
        tokens = logits.argmax(-1)
    else:
        if params.temperature != 1.0:
            logits = logits / params.temperature
        filtered = logits
        if 0 < params.top_k < logits.shape[-1]:
            kth = torch.topk(filtered, params.top_k, dim=-1).values[:, -1:]
            filtered = filtered.masked_fill(filtered < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(filtered, descending=True, dim=-1)
            sorted_probs = torch.softmax(sorted_logits, -1)
            # drop a token when the mass before it already reaches top_p (the first token always stays)
            drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            filtered = filtered.masked_fill(drop, float("-inf"))
        cdf = torch.softmax(filtered, -1).cumsum(-1)
        u = torch.rand((logits.shape[0], 1), generator=generator).to(logits.device) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u, right=True)[:, 0].clamp(max=logits.shape[-1] - 1)
    log_probs = logits.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(logits, -1)
    return tokens, log_probs


def last_logits(model, **inputs) -> torch.Tensor:
    """[rows, vocab] logits at each row's last position, from the model's own output layer."""
    return model(**inputs, logits_to_keep=1).logits[:, -1]


class HFRollout(RolloutEngine):
    """Generate responses with a transformers causal LM and a KV cache. ``shares_weights``: ``model`` is the
    trained module itself (no ``load_weights`` after an update)."""

    def __init__(self, model, eos_token_ids: list[int], pad_token_id: int, dtype: torch.dtype | None = None,
                 agree=None, logits=last_logits, shares_weights: bool = False, lean_decode: bool = True):
        self.model, self.shares_weights = model, shares_weights
        # agree(tokens, log_probs) -> the same on every rank of a tensor-parallel group (which would
        # otherwise part ways on a near-tie between logits that differ in the last bit)
        self.agree = agree
        # logits(model, **inputs) -> [rows, vocab] at the last position (a vocabulary-parallel head gathers them)
        self.logits = logits
        self.eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long)
        self.pad_token_id = pad_token_id
        self.dtype = dtype  # autocast dtype for generation (None = the model's own)
        self.lean_decode = lean_decode  # decode steps without the model's forward, where they are the same

    @torch.no_grad()
    def load_weights(self, weights: NamedTensors) -> None:
        """Copy the actor's weights into this engine's module, in place (names it lacks are skipped)."""
        targets = self.model.state_dict()
        for name, value in named_items(weights):
            if name in targets:
                targets[name].copy_(value)

    def _autocasts(self) -> bool:
        return self.dtype is not None and self.dtype != next(self.model.parameters()).dtype

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype) if self._autocasts() else nullcontext()

    def _decode_state(self, cache, max_len: int):
        """The lean decode step (rlcamp.models.decode_step) where it computes what the model's forward
        would: the model's own logits (not a tensor-parallel head's), no autocast, a Llama-family model."""
        if not self.lean_decode or self.logits is not last_logits or self._autocasts() \
                or unsupported(self.model) is not None:
            return None
        return DecodeState(self.model, cache, max_len)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask [batch, prompt_len], left-padded.

        Returns ``responses`` [batch, max_new_tokens] (pad after EOS), ``response_mask`` (1 up to
        and including EOS) and ``rollout_log_probs`` (0 on padding).
        """
        device = input_ids.device
        batch, prompt_len = input_ids.shape
        steps = params.max_new_tokens
        responses = torch.full((batch, steps), self.pad_token_id, dtype=torch.long, device=device)
        log_probs = torch.zeros((batch, steps), dtype=torch.float32, device=device)
        lengths = torch.full((batch,), steps, dtype=torch.long, device=device)
        full_mask = torch.cat([attention_mask, torch.ones((batch, steps), dtype=attention_mask.dtype, device=device)], 1)
        positions = (attention_mask.sum(-1) - 1).clamp(min=0)  # position of each row's last prompt token
        eos = self.eos.to(device)

        was_training = self.model.training
        self.model.eval()
        # router logits are for the training loss; in transformers' MoE models their aux loss also
        # breaks on cached decoding (router logits cover the new token, the mask the whole sequence)
        extra = {"output_router_logits": False} if hasattr(self.model.config, "output_router_logits") else {}
        cache = DynamicCache(config=self.model.config)
        active = torch.arange(batch, device=device)  # rows still generating, in cache order
        # the n samples of a prompt share one prefill: distinct prompts run, then their cache rows
        # (and last logits) are repeated for every sample
        distinct, copy_of = torch.unique(torch.cat([input_ids, attention_mask.to(input_ids.dtype)], 1), dim=0,
                                         return_inverse=True)
        shared = len(distinct) < batch
        ids, mask = (distinct[:, :prompt_len], distinct[:, prompt_len:].to(attention_mask.dtype)) if shared \
            else (input_ids, attention_mask)
        with self._autocast(device):
            logits = self.logits(self.model, input_ids=ids, attention_mask=mask,
                                 position_ids=(mask.cumsum(-1) - 1).clamp(min=0), past_key_values=cache,
                                 use_cache=True, **extra)
            if shared:  # distinct prompts come sorted: copy_of puts every sample back in its row
                cache.batch_select_indices(copy_of)
                logits = logits[copy_of]
            lean = self._decode_state(cache, prompt_len + steps)
            for t in range(steps):
                tokens, token_log_probs = sample_next(logits, params, generator)
                if self.agree is not None:
                    tokens, token_log_probs = self.agree(tokens, token_log_probs)
                responses[active, t] = tokens
                log_probs[active, t] = token_log_probs
                finished = torch.isin(tokens, eos)
                if finished.any():
                    lengths[active[finished]] = t + 1
                    keep = (~finished).nonzero()[:, 0]
                    if keep.numel() == 0 or t == steps - 1:
                        break
                    if lean is not None:
                        lean.keep(keep)
                    else:
                        cache.batch_select_indices(keep)
                    active, tokens = active[keep], tokens[keep]
                if t == steps - 1:
                    break
                positions_active = positions[active] + t + 1
                if lean is not None:
                    logits = lean.step(tokens, positions_active, full_mask[active, :prompt_len + t + 1])
                    continue
                logits = self.logits(self.model, input_ids=tokens[:, None],
                                     attention_mask=full_mask[active, :prompt_len + t + 1],
                                     position_ids=positions_active[:, None], past_key_values=cache, use_cache=True,
                                     **extra)
        self.model.train(was_training)
        response_mask = (torch.arange(steps, device=device)[None, :] < lengths[:, None]).to(torch.long)
        responses = responses.masked_fill(response_mask == 0, self.pad_token_id)
        return {"responses": responses, "response_mask": response_mask,
                "rollout_log_probs": log_probs * response_mask}
