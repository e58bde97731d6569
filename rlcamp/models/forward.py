"""Forward passes over prompt + response: per-token log-probs / entropy (actor, ref) and values (critic).

Sequences are [left-padded prompt | right-padded response]. A micro batch is first trimmed to its
own real extent (leading columns that are padding in every row, trailing response columns that
are padding in every row), so short micro batches do not pay for the longest sequence of the step.
Outputs are [batch, response_len], aligned with ``responses``: position t is the prediction of
response token t, made from the token before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from rlcamp.algos.losses import entropy_from_logits, log_probs_from_logits
from rlcamp.models import shared_prefix
from rlcamp.models.head import chunked_log_probs, has_plain_head
from rlcamp.models.shared_prefix import SharedLayout


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


@dataclass(frozen=True)
class Packed:
    """Real tokens of a micro batch in one row (``use_remove_padding``): no padding is computed.

    Position ids restart at 0 for every sequence, from which transformers builds a block-diagonal
    causal mask. ``predict_at`` are the packed positions whose outputs predict response tokens."""

    input_ids: torch.Tensor  # [1, real tokens]
    position_ids: torch.Tensor
    predict_at: torch.Tensor  # [n response tokens] packed position of the token before each
    response_slots: tuple[torch.Tensor, torch.Tensor]  # (row, column) of each in [batch, response_len]


def pack(inputs: SequenceInputs) -> Packed:
    real = inputs.attention_mask.bool()
    flat_index = torch.cumsum(real.flatten().long(), 0).view(real.shape) - 1  # packed position of each real token
    r = inputs.response_len
    response_real = real[:, -r:]
    rows, cols = response_real.nonzero(as_tuple=True)
    token_at = flat_index[:, -r:][rows, cols]
    return Packed(inputs.input_ids[real][None], inputs.position_ids[real][None], token_at - 1, (rows, cols))


def _unpack(values: torch.Tensor, packed: Packed, inputs: SequenceInputs) -> torch.Tensor:
    out = values.new_zeros((inputs.input_ids.shape[0], inputs.full_response_len))
    out[packed.response_slots] = values
    return out


def to_multiple(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                multiple: int, packed: bool):
    """The columns padded to a multiple of ``multiple`` without changing any real token's output: packed rows
    get a dummy sequence at the end (its own positions from 0), padded rows more left padding."""
    extra = (-input_ids.shape[1]) % multiple
    if not extra:
        return input_ids, attention_mask, position_ids
    if packed:
        positions = torch.arange(extra, device=position_ids.device).expand(position_ids.shape[0], -1)
        return (torch.cat([input_ids, input_ids.new_zeros((input_ids.shape[0], extra))], 1), attention_mask,
                torch.cat([position_ids, positions], 1))
    pad = lambda x: torch.cat([x.new_zeros((x.shape[0], extra)), x], 1)  # noqa: E731
    return pad(input_ids), pad(attention_mask), pad(position_ids)


def sp_layout(inputs: SequenceInputs, remove_padding: bool):
    """What a Ulysses forward needs: ids, position ids, segments (sequence of each column, -1 for
    padding), the columns whose outputs predict response tokens, and how values at those columns
    go back to [batch, response_len]."""
    if remove_padding:
        packed = pack(inputs)
        segments = torch.cumsum((packed.position_ids == 0).long(), dim=1) - 1  # a sequence starts at position 0
        return (packed.input_ids, packed.position_ids, segments, packed.predict_at,
                lambda x: _unpack(x[0], packed, inputs))
    length, r = inputs.input_ids.shape[1], inputs.response_len
    segments = torch.where(inputs.attention_mask.bool(), 0, -1)
    keep = torch.arange(length - r - 1, length - 1, device=inputs.input_ids.device)
    return inputs.input_ids, inputs.position_ids, segments, keep, lambda x: _pad_back(x, inputs)


@functools.cache
def _compiled_helpers():
    return (torch.compile(log_probs_from_logits, dynamic=True), torch.compile(entropy_from_logits, dynamic=True))


def logit_helpers(compiled: bool):
    """(log_probs_from_logits, entropy_from_logits), torch.compiled when asked (``use_torch_compile``,
    as verl compiles them): over full [tokens, vocab] logits the fused kernels ran 2-4x faster on
    this CPU, fwd+bwd at 512 rows of a 49k vocabulary 0.21 -> 0.07 s, after ~8 s of compiling
    once per process (benchmarks/RESULTS.md). The chunked head does not use them."""
    return _compiled_helpers() if compiled else (log_probs_from_logits, entropy_from_logits)


def _actor_forward_sp(model, inputs: SequenceInputs, temperature: float, with_entropy: bool, remove_padding: bool, sp,
                      compiled: bool = False):
    from rlcamp.models.ulysses import sharded_forward

    log_probs_of, entropy_of = logit_helpers(compiled)

    input_ids, position_ids, segments, keep, finish = sp_layout(inputs, remove_padding)

    def head(out, local_keep, global_keep):
        logits = out.logits.float()
        if temperature != 1.0:
            logits = logits / temperature
        log_probs = log_probs_of(logits, input_ids[:, global_keep + 1])
        return torch.stack([log_probs, entropy_of(logits)], -1) if with_entropy else log_probs[..., None]

    values, out = sharded_forward(model, sp, input_ids, position_ids, segments, keep, head, keep_in_model=True)
    entropy = finish(values[..., 1]) if with_entropy else None
    return finish(values[..., 0]), entropy, getattr(out, "aux_loss", None)


def decoder_hidden(model, inputs: SequenceInputs, remove_padding: bool, shared: SharedLayout | None = None,
                   record: dict | None = None, multiple_of: int = 1):
    """The decoder's last hidden states at the positions that predict response tokens [n, hidden], their
    labels [n], and how values at those positions go back to [batch, response_len]. ``record``: a dict
    that receives the MoE router logits of every layer (``router_logits``). ``multiple_of``: the decoder
    sees a length that is a multiple of it (``to_multiple``; sequence parallelism splits it evenly)."""
    decoder = model.get_decoder()
    if record is not None:
        inner = decoder

        def decoder(**kwargs):  # noqa: F811  the same call, keeping the router logits
            out = inner(**kwargs, output_router_logits=True)
            record["router_logits"] = out.router_logits
            return out
    r = inputs.response_len
    labels = inputs.input_ids[:, -r:]
    finish = lambda x: _pad_back(x.view(labels.shape), inputs)  # noqa: E731
    if shared is not None:
        hidden = decoder(input_ids=shared.input_ids, attention_mask=shared.mask, position_ids=shared.position_ids,
                         use_cache=False).last_hidden_state[shared.rows, shared.cols]
        real = inputs.attention_mask[:, -r:].bool()
        finish = lambda x: _pad_back(x.view(labels.shape) * real, inputs)  # noqa: E731  (0 at padding, as packed)
    elif remove_padding:
        packed = pack(inputs)
        ids, _, positions = to_multiple(packed.input_ids, None, packed.position_ids, multiple_of, packed=True)
        hidden = decoder(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0, packed.predict_at]
        labels = packed.input_ids[0, packed.predict_at + 1]
        finish = lambda x: _unpack(x, packed, inputs)  # noqa: E731
    else:
        ids, mask, positions = to_multiple(inputs.input_ids, inputs.attention_mask, inputs.position_ids, multiple_of,
                                           packed=False)
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=False).last_hidden_state[:, -r - 1:-1]
    return hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1), finish


def _actor_forward_chunked(model, inputs: SequenceInputs, temperature: float, with_entropy: bool,
                           remove_padding: bool, shared: SharedLayout | None, backend: str):
    """The decoder, then the vocabulary projection and log-softmax a chunk of rows at a time
    (``rlcamp.models.head``): the [tokens, vocab] logits never exist in full."""
    hidden, labels, finish = decoder_hidden(model, inputs, remove_padding, shared)
    log_probs, entropy = chunked_log_probs(hidden, model.get_output_embeddings().weight, labels, temperature,
                                           with_entropy, backend)
    return finish(log_probs), (finish(entropy) if with_entropy else None), None


def _shared_layout(model, inputs: SequenceInputs, share_prefix: bool) -> SharedLayout | None:
    if not share_prefix or not shared_prefix.supported(model):
        return None
    return shared_prefix.layout(inputs.input_ids, inputs.attention_mask, inputs.response_len)


def actor_forward(model, inputs: SequenceInputs, temperature: float = 1.0, with_entropy: bool = False,
                  remove_padding: bool = False, sp=None, chunked_head: bool = True, share_prefix: bool = False,
                  compiled: bool = False, head_backend: str = "torch"):
    """Log-probs [batch, response_len] of the response tokens under softmax(logits / T), entropy
    optional, and the model's MoE aux loss (or None). ``sp``: this rank's Ulysses group, if any
    (the MoE aux loss is then that of this rank's columns). ``chunked_head``: take the log-probs
    from the decoder's hidden states without full logits, where the model's head allows it
    (``rlcamp.models.head.has_plain_head``); False forces the plain path. ``share_prefix``: run
    each distinct prompt once (``rlcamp.models.shared_prefix``) where the model allows it; this
    goes through the chunked head, and takes precedence over ``remove_padding``. ``compiled``: the
    full-logits paths use the torch.compiled helpers (``logit_helpers``). ``head_backend``: the chunked
    head's implementation, "torch" or "triton" (``fused_kernel_options.impl_backend``)."""
    if sp is not None:
        return _actor_forward_sp(model, inputs, temperature, with_entropy, remove_padding, sp, compiled)
    if chunked_head and has_plain_head(model):
        shared = _shared_layout(model, inputs, share_prefix)
        return _actor_forward_chunked(model, inputs, temperature, with_entropy, remove_padding, shared, head_backend)
    r = inputs.response_len
    if remove_padding:
        packed = pack(inputs)
        out = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False,
                    logits_to_keep=packed.predict_at)
        logits = out.logits[0].float()
        labels = packed.input_ids[0, packed.predict_at + 1]
        finish = lambda x: _unpack(x, packed, inputs)  # noqa: E731
    else:
        out = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                    position_ids=inputs.position_ids, use_cache=False, logits_to_keep=r + 1)
        logits = out.logits[:, :-1].float()  # predictions of the r response tokens
        labels = inputs.input_ids[:, -r:]
        finish = lambda x: _pad_back(x, inputs)  # noqa: E731
    if temperature != 1.0:
        logits = logits / temperature
    log_probs_of, entropy_of = logit_helpers(compiled)
    log_probs = finish(log_probs_of(logits, labels))
    entropy = finish(entropy_of(logits)) if with_entropy else None
    return log_probs, entropy, getattr(out, "aux_loss", None)


def critic_forward(model, inputs: SequenceInputs, remove_padding: bool = False, sp=None,
                   share_prefix: bool = False, multiple_of: int = 1) -> torch.Tensor:
    """Values [batch, response_len]: V of the state before each response token. ``share_prefix``:
    as in ``actor_forward``; ``multiple_of``: as in ``decoder_hidden``."""
    r = inputs.response_len
    shared = _shared_layout(model, inputs, share_prefix) if sp is None else None
    if shared is not None:
        out = model(input_ids=shared.input_ids, attention_mask=shared.mask, position_ids=shared.position_ids,
                    use_cache=False)
        real = inputs.attention_mask[:, -r:].bool()
        return _pad_back(out.logits[shared.rows, shared.cols, 0].float().view(-1, r) * real, inputs)
    if sp is not None:
        from rlcamp.models.ulysses import sharded_forward

        input_ids, position_ids, segments, keep, finish = sp_layout(inputs, remove_padding)
        values, _ = sharded_forward(model, sp, input_ids, position_ids, segments, keep,
                                    lambda out, local_keep, _: out.logits[:, local_keep, 0].float())
        return finish(values)
    if remove_padding:
        packed = pack(inputs)
        ids, _, positions = to_multiple(packed.input_ids, None, packed.position_ids, multiple_of, packed=True)
        out = model(input_ids=ids, position_ids=positions, use_cache=False)
        return _unpack(out.logits[0, packed.predict_at, 0].float(), packed, inputs)
    ids, mask, positions = to_multiple(inputs.input_ids, inputs.attention_mask, inputs.position_ids, multiple_of,
                                       packed=False)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    values = out.logits[:, -r - 1:-1, 0].float()
    return _pad_back(values, inputs)


def check_packing(model, forward, vocab_size: int, key: str) -> None:
    """Refuse ``use_remove_padding`` for a model whose packed outputs differ from padded ones
    (a model that ignores position-id packing would silently attend across sequences)."""
    g = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    prompts = torch.randint(1, vocab_size, (2, 5), generator=g).to(device)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], device=device)
    responses = torch.randint(1, vocab_size, (2, 3), generator=g).to(device)
    response_mask = torch.tensor([[1, 1, 1], [1, 1, 0]], device=device)
    inputs = sequence_inputs(prompts, prompt_mask, responses, response_mask, trim=False)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        padded = forward(model, inputs, remove_padding=False)
        packed = forward(model, inputs, remove_padding=True)
    model.train(was_training)
    padded, packed = (x[0] if isinstance(x, tuple) else x for x in (padded, packed))
    if not torch.allclose(padded * response_mask, packed * response_mask, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"{key}=True: {type(model).__name__} does not honour packed sequences (its outputs "
                           "differ from the padded ones); set it to False")
