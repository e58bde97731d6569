"""Pieces shared by the external rollout engines (vLLM, SGLang): what goes in and what comes out.

Both take prompts as token-id lists (left padding stripped) and return, per prompt, the generated
ids and their log-probs; ``to_batch`` turns that into the rollout interface's tensors."""

from __future__ import annotations

import torch

from rlcamp.rollout.base import named_items
from rlcamp.rollout.hf import SamplingParams

TP_ONE = ("rlcamp runs one rollout engine per device (tensor parallel 1): set "
          "actor_rollout_ref.rollout.tensor_model_parallel_size=1")


def require(module: str, hint: str):
    """Import an optional engine, or fail with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"{hint} (import failed: {exc})") from None


def prompt_lists(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [row[mask.bool()].tolist() for row, mask in zip(input_ids.cpu(), attention_mask.cpu())]


def request_seeds(batch: int, generator: torch.Generator | None) -> list[int]:
    """One seed per request, drawn from the worker's generator: runs and resumes are reproducible."""
    return torch.randint(0, 2**31 - 1, (batch,), generator=generator).tolist()


def is_greedy(params: SamplingParams) -> bool:
    return not params.do_sample or params.temperature == 0


def to_batch(token_ids: list[list[int]], log_probs: list[list[float]], steps: int, pad_token_id: int,
             device: torch.device) -> dict[str, torch.Tensor]:
    """``responses`` [batch, steps] (pad after the end), ``response_mask`` and ``rollout_log_probs``."""
    batch = len(token_ids)
    responses = torch.full((batch, steps), pad_token_id, dtype=torch.long)
    lps = torch.zeros((batch, steps), dtype=torch.float32)
    lengths = torch.zeros(batch, dtype=torch.long)
    for i, (tokens, token_lps) in enumerate(zip(token_ids, log_probs)):
        tokens, token_lps = list(tokens)[:steps], list(token_lps)[:steps]
        responses[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lps[i, :len(token_lps)] = torch.tensor(token_lps, dtype=torch.float32)
        lengths[i] = len(tokens)
    response_mask = (torch.arange(steps)[None, :] < lengths[:, None]).long()
    return {"responses": responses.to(device), "response_mask": response_mask.to(device),
            "rollout_log_probs": (lps * response_mask).to(device)}


def mask_through_first_eos(responses: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """[batch, steps] mask: 1 up to and including each row's first EOS, 0 after it (all 1 without one).

    What a response is, whatever the engine did after its end: with ``rollout.ignore_eos`` the engines
    keep generating past EOS (a fixed amount of work), and, as in verl, the tokens after the first EOS
    are neither trained on nor scored."""
    is_eos = torch.isin(responses, torch.tensor(eos_token_ids, dtype=responses.dtype, device=responses.device))
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS tokens strictly before each position
    return (eos_before == 0).long()


def weight_buckets(state: dict[str, torch.Tensor], dtype: torch.dtype, device: str, bucket_bytes: int):
    """The full weights in buckets of about ``bucket_bytes``, floating tensors cast to ``dtype``.

    Sharded (DTensor) weights are gathered one at a time. A tied weight (lm_head = embeddings) is
    sent as its own copy: vLLM's CPU backend keeps a separately packed output layer, which a reload
    without it would leave stale."""
    bucket, size, seen = [], 0, set()
    for name, tensor in named_items(state):
        tensor = tensor.detach()
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        shared = tensor.data_ptr() in seen
        seen.add(tensor.data_ptr())
        tensor = tensor.to(device, dtype if tensor.is_floating_point() else tensor.dtype)
        tensor = tensor.clone() if shared else tensor.contiguous()
        if bucket and size + tensor.nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += tensor.nbytes
    if bucket:
        yield bucket
