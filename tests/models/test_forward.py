import torch
from transformers import AutoModelForCausalLM

from rlcamp.models.forward import actor_forward, critic_forward, sequence_inputs
from rlcamp.models.loading import load_critic
from rlcamp.models.tiny import build_tiny_model


def batch(tok_id_pad=0):
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 300, (4, 9), generator=g)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[0, :5] = 0
    prompt_mask[1, :2] = 0
    prompt_mask[:, :1] = 0  # a column that is padding in every row: trimmed away
    prompts = prompts.masked_fill(prompt_mask == 0, tok_id_pad)
    responses = torch.randint(3, 300, (4, 7), generator=g)
    response_mask = (torch.arange(7)[None] < torch.tensor([[3], [5], [1], [4]])).long()
    return prompts, prompt_mask, responses.masked_fill(response_mask == 0, tok_id_pad), response_mask


def test_trimming_changes_nothing(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "llama"))
    critic = load_critic(str(tmp_path))
    torch.nn.init.normal_(critic.score.weight)  # a non-zero head so values differ per token
    p, pm, r, rm = batch()
    full, trimmed = sequence_inputs(p, pm, r, rm, trim=False), sequence_inputs(p, pm, r, rm)
    assert trimmed.input_ids.shape[1] == 8 + 5 and full.input_ids.shape[1] == 16
    with torch.no_grad():
        lp_full, ent_full, _ = actor_forward(model, full, 0.9, with_entropy=True)
        lp_trim, ent_trim, _ = actor_forward(model, trimmed, 0.9, with_entropy=True)
        v_full, v_trim = critic_forward(critic, full), critic_forward(critic, trimmed)
    m = rm.bool()
    assert lp_trim.shape == (4, 7)
    assert torch.allclose(lp_full[m], lp_trim[m], atol=1e-5) and torch.allclose(ent_full[m], ent_trim[m], atol=1e-5)
    assert torch.allclose(v_full[m], v_trim[m], atol=1e-5)


def test_log_probs_against_a_slow_per_token_loop(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "qwen2"))
    p, pm, r, rm = batch()
    with torch.no_grad():
        lp, _, _ = actor_forward(model, sequence_inputs(p, pm, r, rm), temperature=1.0)
        for b in range(4):
            prompt = p[b][pm[b].bool()]
            for t in range(int(rm[b].sum())):
                ids = torch.cat([prompt, r[b, :t]])[None]
                logits = model(input_ids=ids).logits[0, -1]
                expected = torch.log_softmax(logits, -1)[r[b, t]]
                assert torch.isclose(lp[b, t], expected, atol=1e-5), (b, t)


def test_critic_head_starts_at_zero_and_reloads(tmp_path):
    path = build_tiny_model(tmp_path / "m", "gemma2")
    critic = load_critic(str(path))
    assert critic.score.weight.abs().sum() == 0
    p, pm, r, rm = batch()
    with torch.no_grad():
        assert critic_forward(critic, sequence_inputs(p, pm, r, rm)).abs().sum() == 0
    torch.nn.init.normal_(critic.score.weight)
    critic.save_pretrained(tmp_path / "critic")
    again = load_critic(str(tmp_path / "critic"))
    assert torch.equal(again.score.weight, critic.score.weight)  # a saved critic keeps its head


import pytest  # noqa: E402

from rlcamp.models.forward import check_packing  # noqa: E402
from rlcamp.models.tiny import TINY_FAMILIES  # noqa: E402


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_packed_sequences_match_padded(tmp_path, family):
    """use_remove_padding: the same log-probs, entropies and values without computing padding."""
    path = build_tiny_model(tmp_path, family)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    critic = load_critic(str(path)).eval()
    torch.nn.init.normal_(critic.score.weight)
    p, pm, r, rm = batch()
    inputs = sequence_inputs(p, pm, r, rm)
    with torch.no_grad():
        lp, ent, _ = actor_forward(model, inputs, 0.8, with_entropy=True)
        lp_packed, ent_packed, _ = actor_forward(model, inputs, 0.8, with_entropy=True, remove_padding=True)
        values, values_packed = critic_forward(critic, inputs), critic_forward(critic, inputs, remove_padding=True)
    m = rm.bool()
    assert torch.allclose(lp[m], lp_packed[m], atol=1e-4) and torch.allclose(ent[m], ent_packed[m], atol=1e-4)
    assert torch.allclose(values[m], values_packed[m], atol=1e-4)
    assert (lp_packed[~m] == 0).all()
    check_packing(model, actor_forward, model.config.vocab_size, "k")


def test_a_model_that_ignores_packing_is_refused(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "qwen2")).eval()

    def leaky(model, inputs, remove_padding=False):  # as if the model attended across packed sequences
        out = actor_forward(model, inputs, remove_padding=remove_padding)[0]
        return out + (0.5 if remove_padding else 0.0)

    with pytest.raises(RuntimeError, match="k=True: Qwen2ForCausalLM does not honour packed sequences"):
        check_packing(model, leaky, model.config.vocab_size, "k")


def test_compiled_logit_helpers_equal_eager(tmp_path):
    """use_torch_compile: the full-logits path (gemma2's soft-capped head has no chunked path) with
    the torch.compiled helpers gives the eager log-probs, entropies and gradients."""
    from rlcamp.utils.device import torch_compile_problem

    if torch_compile_problem("cpu"):
        import pytest

        pytest.skip(torch_compile_problem("cpu"))
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, "gemma2"))
    inputs = sequence_inputs(*batch())
    out = {}
    for compiled in (False, True):
        model.zero_grad()
        lp, ent, _ = actor_forward(model, inputs, 0.7, with_entropy=True, compiled=compiled)
        (lp.sum() + 0.1 * ent.sum()).backward()
        out[compiled] = (lp.detach(), ent.detach(), model.model.embed_tokens.weight.grad.clone())
    m = batch()[3].bool()
    (lp_e, ent_e, grad_e), (lp_c, ent_c, grad_c) = out[False], out[True]
    assert torch.allclose(lp_e[m], lp_c[m], atol=1e-5) and torch.allclose(ent_e[m], ent_c[m], atol=1e-5)
    assert torch.allclose(grad_e, grad_c, atol=1e-5)
