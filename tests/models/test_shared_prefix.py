import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlcamp.models import cpu_attention, shared_prefix
from rlcamp.models.forward import actor_forward, critic_forward, sequence_inputs
from rlcamp.models.loading import load_critic
from rlcamp.models.tiny import build_tiny_model
from tests.models.test_forward import batch


def grouped_batch():
    """Rows 0-1 share prompt A, rows 2-4 prompt B (left-padded), row 5 has prompt C alone;
    responses of different lengths, one of a single token."""
    prompts, prompt_mask, _, _ = batch()
    pick = torch.tensor([0, 0, 1, 1, 1, 2])
    g = torch.Generator().manual_seed(1)
    responses = torch.randint(3, 300, (6, 5), generator=g)
    lengths = torch.tensor([[5], [2], [4], [1], [5], [3]])
    response_mask = (torch.arange(5)[None] < lengths).long()
    return prompts[pick], prompt_mask[pick], responses.masked_fill(response_mask == 0, 0), response_mask


def test_layout_by_hand():
    ids = torch.tensor([[0, 7, 8, 1, 2], [0, 5, 6, 3, 0], [0, 7, 8, 4, 0]])  # rows 0 and 2: prompt [7, 8]
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0]])
    lay = shared_prefix.layout(ids, mask, response_len=2)
    assert lay.input_ids.tolist() == [[7, 8, 1, 2, 4], [5, 6, 3, 0, 0]]
    assert lay.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 0]]
    # row 0's tokens 1, 2 are predicted at the prompt's end (col 1) and at its own token 1 (col 2);
    # row 2's single token at col 1 of the same layout row; padding -> col 0
    assert lay.rows.view(3, 2).tolist() == [[0, 0], [1, 1], [0, 0]]
    assert lay.cols.view(3, 2).tolist() == [[1, 2], [1, 0], [1, 0]]
    m = lay.mask[0, 0].int().tolist()
    assert m[4] == [1, 1, 0, 0, 1]  # row 2's response token sees the prompt and itself, not row 0's response
    assert m[3] == [1, 1, 1, 1, 0]
    assert lay.mask[1, 0, 3].tolist() == [False, False, False, True, False]  # padding sees itself only
    distinct = shared_prefix.layout(ids[:2], mask[:2], response_len=2)
    assert distinct is None


def models(tmp_path, family):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family))
    cpu_attention.use_on_cpu(model, {})
    critic = load_critic(str(tmp_path))
    torch.nn.init.normal_(critic.score.weight)
    cpu_attention.use_on_cpu(critic, {})
    return model, critic


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("attention", ["rlcamp_cpu", "sdpa"])
def test_same_log_probs_values_and_gradients(tmp_path, family, attention):
    model, critic = models(tmp_path, family)
    if attention == "sdpa":
        model.config._attn_implementation = critic.config._attn_implementation = "sdpa"
    assert shared_prefix.supported(model) and shared_prefix.supported(critic)
    inputs = sequence_inputs(*grouped_batch())
    m = inputs.attention_mask[:, -inputs.response_len:].bool()

    def actor(share):
        model.zero_grad()
        lp, ent, _ = actor_forward(model, inputs, 0.9, True, share_prefix=share)
        (lp[:, :m.shape[1]][m].sum() + 0.5 * ent[:, :m.shape[1]][m].sum()).backward()
        return [lp[:, :m.shape[1]][m].detach(), ent[:, :m.shape[1]][m].detach()] + [p.grad.clone() for p in model.parameters()]

    def values(share):
        critic.zero_grad()
        v = critic_forward(critic, inputs, share_prefix=share)
        (v[:, :m.shape[1]][m] ** 2).sum().backward()
        return [v[:, :m.shape[1]][m].detach()] + [p.grad.clone() for p in critic.parameters()]

    shared, plain = actor(True), actor(False)
    for i, (a, b) in enumerate(zip(shared, plain)):  # the prompt's gradient is summed in another order
        torch.testing.assert_close(a, b, atol=1e-5 if i < 2 else 1e-4, rtol=1e-4 if i < 2 else 1e-3)
    shared, plain = values(True), values(False)
    for i, (a, b) in enumerate(zip(shared, plain)):
        torch.testing.assert_close(a, b, atol=1e-5 if i < 1 else 1e-4, rtol=1e-4 if i < 1 else 1e-3)


def test_models_whose_attention_would_ignore_the_mask_keep_their_layout(tmp_path):
    gemma2 = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "g", "gemma2"))
    assert not shared_prefix.supported(gemma2)  # sliding-window layers
    eager = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "q", "qwen2"), attn_implementation="eager")
    assert not shared_prefix.supported(eager)  # eager adds the mask as a float bias
    inputs = sequence_inputs(*grouped_batch())
    with torch.no_grad():
        a = actor_forward(eager, inputs, share_prefix=True)[0]
        b = actor_forward(copy.deepcopy(eager), inputs, share_prefix=False)[0]
    torch.testing.assert_close(a, b)
