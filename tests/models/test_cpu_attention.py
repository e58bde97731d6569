import copy

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations import sdpa_attention

from rlcamp.models import cpu_attention
from rlcamp.models.forward import actor_forward, sequence_inputs
from rlcamp.models.tiny import build_tiny_model
from tests.models.test_forward import batch


def pair(tmp_path, family):
    sdpa = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family), attn_implementation="sdpa")
    ours = copy.deepcopy(sdpa)
    assert cpu_attention.use_on_cpu(ours, {})
    return sdpa, ours


def outputs_and_grads(model, inputs, remove_padding):
    model.zero_grad()
    lp, ent, _ = actor_forward(model, inputs, 1.0, True, remove_padding)
    m = inputs.attention_mask[:, -inputs.response_len:].bool()
    (lp[:, :m.shape[1]][m].sum() + ent[:, :m.shape[1]][m].sum()).backward()
    return [lp.detach(), ent.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("family", ["qwen2", "llama", "gemma2"])
@pytest.mark.parametrize("remove_padding", [False, True])
@pytest.mark.parametrize("long", [False, True])
def test_same_outputs_and_gradients_as_sdpa(tmp_path, monkeypatch, family, remove_padding, long):
    """Padded (left-padded prompts) and packed batches, grouped KV heads, Gemma 2's sliding window;
    ``long``: past the key-length threshold, where SDPA itself runs."""
    if long:
        monkeypatch.setattr(cpu_attention, "MATH_MAX_KEYS", 4)
    sdpa, ours = pair(tmp_path, family)
    inputs = sequence_inputs(*batch())
    calls = []
    real = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = outputs_and_grads(ours, inputs, remove_padding)
    assert bool(calls) == (long or family == "gemma2")  # Gemma 2's soft-capping goes to SDPA as before
    for a, b in zip(got, outputs_and_grads(sdpa, inputs, remove_padding)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_generation_with_a_kv_cache_is_unchanged(tmp_path):
    sdpa, ours = pair(tmp_path, "qwen2")
    prompts, mask, _, _ = batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompts, **kwargs), sdpa.generate(prompts, **kwargs))


def test_a_chosen_implementation_is_kept(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "qwen2"), attn_implementation="eager")
    assert not cpu_attention.use_on_cpu(model, {})
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="sdpa")
    assert not cpu_attention.use_on_cpu(model, {"attn_implementation": "sdpa"})
    assert model.config._attn_implementation == "sdpa"
