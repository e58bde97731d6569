"""The lean decode step computes what the model's forward computes, token for token."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlcamp.models import cpu_attention
from rlcamp.models.decode_step import unsupported
from rlcamp.models.tiny import build_tiny_model
from rlcamp.rollout import hf
from rlcamp.rollout.hf import HFRollout, SamplingParams


def prompts(vocab: int, pad: int):
    """Six left-padded prompts of three lengths; the first two share one prompt (a shared prefill)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (6, 9), generator=g)
    ids[1] = ids[0]
    mask = torch.ones_like(ids)
    mask[2, :4] = 0
    mask[3, :2] = 0
    return ids.masked_fill(mask == 0, pad), mask


def both(model, eos: list[int], params: SamplingParams, ids, mask, seed: int = 0):
    """The same generation with the lean decode step and through the model's forward."""
    built = []
    original = hf.DecodeState
    hf.DecodeState = lambda *args: built.append(1) or original(*args)
    try:
        out = [HFRollout(model, eos, model.config.pad_token_id, lean_decode=lean).generate(
            ids, mask, params, torch.Generator().manual_seed(seed)) for lean in (True, False)]
    finally:
        hf.DecodeState = original
    assert built == [1], "the lean decode step did not run"
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("attention", ["sdpa", "rlcamp_cpu"])
def test_lean_decoding_gives_the_forwards_tokens_and_log_probs(tmp_path, family, dtype, attention):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family), dtype=dtype)
    if attention == "rlcamp_cpu":
        assert cpu_attention.use_on_cpu(model, {})
    assert unsupported(model) is None
    ids, mask = prompts(model.config.vocab_size, model.config.pad_token_id)
    # a tenth of the vocabulary ends a row, so rows drop out of the cache at different steps
    eos = list(range(3, 3 + model.config.vocab_size // 10))
    for params in (SamplingParams(16, temperature=1.0), SamplingParams(16, do_sample=False)):
        lean, plain = both(model, eos, params, ids, mask)
        assert torch.equal(lean["responses"], plain["responses"])
        assert torch.equal(lean["response_mask"], plain["response_mask"])
        assert torch.equal(lean["rollout_log_probs"], plain["rollout_log_probs"])
        if params.do_sample:
            lengths = lean["response_mask"].sum(-1)
            assert lengths.min() < lengths.max(), lengths  # the case is exercised: rows finished at different steps


@pytest.mark.parametrize("family, why", [("gemma2", "model_type 'gemma2'"), ("qwen3", "model_type 'qwen3'")])
def test_other_families_decode_through_their_forward(tmp_path, family, why):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family))
    assert why in unsupported(model)
    engine = HFRollout(model, [], model.config.pad_token_id)
    ids, mask = prompts(model.config.vocab_size, model.config.pad_token_id)
    assert engine.generate(ids, mask, SamplingParams(4, do_sample=False))["responses"].shape == (6, 4)


def test_eager_attention_and_sliding_windows_are_not_lean(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "qwen2"), attn_implementation="eager")
    assert "attention 'eager'" in unsupported(model)
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "w", "qwen2", use_sliding_window=True,
                                                                  sliding_window=4, max_window_layers=0))
    assert unsupported(model) is not None


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_past_the_explicit_attentions_length_the_keys_reach_sdpa_as_the_cache_holds_them(tmp_path, monkeypatch, dtype,
                                                                                         family):
    """rlcamp's CPU attention hands sequences past MATH_MAX_KEYS to SDPA: the lean step's transposed keys
    go there in the cache's own layout, so the tokens and log-probs still equal the forward's."""
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family), dtype=dtype)
    assert cpu_attention.use_on_cpu(model, {})
    monkeypatch.setattr(cpu_attention, "MATH_MAX_KEYS", 14)  # prompts of 9: SDPA from the 6th new token on
    ids, mask = prompts(model.config.vocab_size, model.config.pad_token_id)
    lean, plain = both(model, [], SamplingParams(16, temperature=1.0), ids, mask)
    assert torch.equal(lean["responses"], plain["responses"])
    assert torch.equal(lean["rollout_log_probs"], plain["rollout_log_probs"])
