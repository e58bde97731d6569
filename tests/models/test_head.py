import pytest
import torch
from transformers import AutoModelForCausalLM

from rlcamp.algos.losses import entropy_from_logits, log_probs_from_logits
from rlcamp.models import head
from rlcamp.models.forward import actor_forward, sequence_inputs
from rlcamp.models.head import chunked_log_probs, has_plain_head
from rlcamp.models.tiny import build_tiny_model
from tests.models.test_forward import batch


def reference(hidden, weight, labels, temperature, with_entropy):
    logits = (hidden @ weight.T).float() / temperature
    lp = log_probs_from_logits(logits, labels)
    return lp, (entropy_from_logits(logits) if with_entropy else None)


def leaves(n=37, d=16, vocab=101, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, d, generator=g) * 0.5).to(dtype).requires_grad_()
    return hidden, weight, torch.randint(0, vocab, (n,), generator=g)


def grads(fn, hidden, weight, labels, temperature, with_entropy):
    """Values and gradients of a loss that weights log-probs and entropy unevenly per row."""
    hidden.grad = weight.grad = None
    lp, ent = fn(hidden, weight, labels, temperature, with_entropy)
    w = torch.linspace(-1, 2, len(lp))
    loss = (lp * w).sum() + ((ent * w.flip(0)).sum() if with_entropy else 0)
    loss.backward()
    return lp.detach(), (ent.detach() if with_entropy else None), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("with_entropy", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("saved_chunks", [0, 2, 5])  # recomputed in the backward, partly, not at all
def test_chunked_equals_full_logits_values_and_gradients(monkeypatch, with_entropy, temperature, saved_chunks):
    monkeypatch.setattr(head, "CHUNK_ELEMENTS", 101 * 8)  # 37 rows: 5 chunks of 8 rows, the last one short
    monkeypatch.setattr(head, "BLOCK_ELEMENTS", 101 * 20)  # backward blocks of 16 rows (2 chunks): 3 blocks
    monkeypatch.setattr(head, "SAVED_ELEMENTS", 101 * 8 * saved_chunks)
    hidden, weight, labels = leaves()
    got = grads(chunked_log_probs, hidden, weight, labels, temperature, with_entropy)
    want = grads(reference, hidden, weight, labels, temperature, with_entropy)
    for a, b in zip(got, want):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_no_rows_give_empty_outputs_and_zero_gradients():
    """A context-parallel rank whose columns predict no response token still runs the head (and its backward)."""
    hidden, weight, labels = leaves(n=0)
    lp, ent = chunked_log_probs(hidden, weight, labels, with_entropy=True)
    assert lp.shape == ent.shape == (0,)
    (lp.sum() + ent.sum() + (weight * 0).sum()).backward()
    assert hidden.grad.shape == (0, 16) and not weight.grad.any()


def test_reported_but_unused_entropy_leaves_the_gradients_alone():
    hidden, weight, labels = leaves()
    lp, ent = chunked_log_probs(hidden, weight, labels, with_entropy=True)
    (lp * torch.linspace(-1, 2, len(lp))).sum().backward()  # the entropy is only looked at
    with_unused = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    lp, _ = chunked_log_probs(hidden, weight, labels)
    (lp * torch.linspace(-1, 2, len(lp))).sum().backward()
    assert torch.equal(with_unused[0], hidden.grad) and torch.equal(with_unused[1], weight.grad)
    assert torch.isfinite(ent).all()


def test_chunked_under_autocast_projects_in_bf16_like_linear():
    hidden, weight, labels = leaves(n=20, d=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads(chunked_log_probs, hidden, weight, labels, 1.0, True)
        want = grads(reference, hidden, weight, labels, 1.0, True)
    assert got[2].dtype == hidden.dtype and got[3].dtype == weight.dtype
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("remove_padding", [False, True])
def test_actor_forward_chunked_equals_the_plain_head(tmp_path, family, remove_padding):
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path, family))
    assert has_plain_head(model)
    inputs = sequence_inputs(*batch())

    def run(chunked):
        model.zero_grad()
        lp, ent, aux = actor_forward(model, inputs, 0.8, True, remove_padding, chunked_head=chunked)
        m = inputs.attention_mask[:, -inputs.response_len:].bool()
        (lp[:, :m.shape[1]][m].sum() - 0.3 * ent[:, :m.shape[1]][m].sum()).backward()
        return lp.detach(), ent.detach(), aux, [p.grad.clone() for p in model.parameters()]

    lp, ent, aux, g = run(True)
    lp0, ent0, aux0, g0 = run(False)
    assert aux is None and aux0 is None
    torch.testing.assert_close(lp, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, ent0, atol=1e-5, rtol=1e-5)
    for a, b in zip(g, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_heads_with_extra_steps_or_sharded_weights_keep_the_plain_path(tmp_path):
    gemma2 = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "g", "gemma2"))
    assert not has_plain_head(gemma2)  # final logit soft-capping lives in the wrapper's forward
    qwen2 = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "q", "qwen2"))
    assert has_plain_head(qwen2)
    qwen2.lm_head.weight.full_tensor = lambda: None  # what FSDP2's DTensor parameters have, after a first call
    assert not has_plain_head(qwen2)


def test_a_second_backward_recomputes_what_the_first_used_up():
    hidden, weight, labels = leaves()
    lp, _ = chunked_log_probs(hidden, weight, labels)
    loss = (lp * torch.linspace(-1, 2, len(lp))).sum()
    loss.backward(retain_graph=True)  # uses the forward's saved exponentials
    once = weight.grad.clone()
    loss.backward()  # they are gone: recomputed
    torch.testing.assert_close(weight.grad, 2 * once, atol=1e-6, rtol=1e-5)
