"""Our rollout engine against transformers' generate, and its sampling contract."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlcamp.models.forward import actor_forward, sequence_inputs
from rlcamp.models.tiny import build_tiny_model
from rlcamp.rollout.hf import HFRollout, SamplingParams, sample_next


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer):
    path = build_tiny_model(tmp_path_factory.mktemp("m"), "qwen2")
    model = AutoModelForCausalLM.from_pretrained(path)
    texts = [tiny_tokenizer.apply_chat_template([{"role": "user", "content": f"What is {i} + {i * 3}?"}],
                                                add_generation_prompt=True, tokenize=False) for i in range(6)]
    tiny_tokenizer.padding_side = "left"
    enc = tiny_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    enc["attention_mask"][0, :3] = 0  # make row 0 shorter than the rest: left padding must be honoured
    enc["input_ids"][0, :3] = tiny_tokenizer.pad_token_id
    return model, tiny_tokenizer, enc


def test_greedy_matches_transformers_generate(tiny):
    model, tok, enc = tiny
    engine = HFRollout(model, [tok.eos_token_id], tok.pad_token_id)
    out = engine.generate(enc["input_ids"], enc["attention_mask"], SamplingParams(12, do_sample=False))
    ref = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=12,
                         do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ref = ref[:, enc["input_ids"].shape[1]:]
    for i in range(len(ref)):
        n = int(out["response_mask"][i].sum())
        assert out["responses"][i, :n].tolist() == ref[i, :n].tolist()


def test_log_probs_match_the_trainer_and_mask_stops_after_eos(tiny):
    model, tok, enc = tiny
    engine = HFRollout(model, [tok.eos_token_id], tok.pad_token_id)
    params = SamplingParams(10, temperature=0.7)
    out = engine.generate(enc["input_ids"], enc["attention_mask"], params, torch.Generator().manual_seed(0))
    mask = out["response_mask"]
    inputs = sequence_inputs(enc["input_ids"], enc["attention_mask"], out["responses"], mask)
    with torch.no_grad():
        trainer_lp, _, _ = actor_forward(model, inputs, temperature=0.7)
    assert torch.allclose(out["rollout_log_probs"], trainer_lp * mask, atol=1e-4)
    for row, m in zip(out["responses"], mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()
        if n < 10:
            assert row[n - 1] == tok.eos_token_id and (row[n:] == tok.pad_token_id).all()
        assert tok.eos_token_id not in row[:n - 1].tolist()


def test_sampling_is_seeded(tiny):
    model, tok, enc = tiny
    engine = HFRollout(model, [tok.eos_token_id], tok.pad_token_id)
    params = SamplingParams(8, temperature=1.0)
    a = engine.generate(enc["input_ids"], enc["attention_mask"], params, torch.Generator().manual_seed(3))
    b = engine.generate(enc["input_ids"], enc["attention_mask"], params, torch.Generator().manual_seed(3))
    c = engine.generate(enc["input_ids"], enc["attention_mask"], params, torch.Generator().manual_seed(4))
    assert torch.equal(a["responses"], b["responses"]) and not torch.equal(a["responses"], c["responses"])


def test_samples_of_a_prompt_share_one_prefill(tiny, monkeypatch):
    """Repeated prompts (rollout.n samples, here mixed with distinct ones) prefill once and give what
    one prefill per row gives: the same tokens and log-probs, greedy and sampled."""
    model, tok, enc = tiny
    pick = torch.tensor([2, 0, 2, 2, 5, 0])
    ids, mask = enc["input_ids"][pick], enc["attention_mask"][pick]
    engine = HFRollout(model, [tok.eos_token_id], tok.pad_token_id)
    prefill_rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefill_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    for params in (SamplingParams(8, do_sample=False), SamplingParams(8, temperature=1.0)):
        monkeypatch.setattr(model, "forward", counting)
        shared = engine.generate(ids, mask, params, torch.Generator().manual_seed(5))
        monkeypatch.setattr(torch, "unique", lambda x, dim, return_inverse: (x, torch.arange(len(x))))
        per_row = engine.generate(ids, mask, params, torch.Generator().manual_seed(5))
        monkeypatch.undo()
        assert prefill_rows[-2:] == [3, 6]  # three distinct prompts, then every row
        assert torch.equal(shared["responses"], per_row["responses"])
        assert torch.allclose(shared["rollout_log_probs"], per_row["rollout_log_probs"], atol=1e-5)


def test_sample_next_distribution_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(40000, 1)
    g = torch.Generator().manual_seed(0)
    tokens, log_probs = sample_next(logits, SamplingParams(1, temperature=1.0), g)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.01)
    assert torch.allclose(log_probs, torch.log_softmax(logits[0], -1)[tokens])
    tokens, _ = sample_next(logits, SamplingParams(1, top_k=2), g)
    assert set(tokens.tolist()) == {0, 1}
    # probs 0.644, 0.237, 0.087, 0.032: top_p=0.7 keeps the first two (0.644 < 0.7 before adding the second)
    tokens, _ = sample_next(logits, SamplingParams(1, top_p=0.7), g)
    assert set(tokens.tolist()) == {0, 1}
    tokens, _ = sample_next(logits[:3], SamplingParams(1, do_sample=False), g)
    assert tokens.tolist() == [0, 0, 0]
