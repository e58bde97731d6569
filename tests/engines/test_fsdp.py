"""The FSDP engine behind the training-engine protocol, on one process: its passes are the model's own
forward passes, its micro batching is exact, and its exports are the full HF-named weights."""

import torch

from rlcamp.batch import Batch
from rlcamp.config.schema import FSDPConfig, OptimConfig
from rlcamp.engines.base import LogProbs, MicroBatching, Values
from rlcamp.engines.fsdp import FSDPEngine
from rlcamp.models.forward import actor_forward, critic_forward, sequence_inputs
from rlcamp.models.loading import load_causal_lm, load_critic
from tests.helpers import make_tiny_setup


def _batch(vocab: int, rows: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompt_mask = torch.ones(rows, 5, dtype=torch.long)
    prompt_mask[::2, :2] = 0  # left padding on every other row
    response_mask = torch.ones(rows, 4, dtype=torch.long)
    response_mask[1::3, 2:] = 0  # short responses
    return Batch({"input_ids": torch.randint(0, vocab, (rows, 5), generator=g), "attention_mask": prompt_mask,
                  "responses": torch.randint(0, vocab, (rows, 4), generator=g), "response_mask": response_mask, "loss_mask": response_mask,
                  "advantages": torch.randn(rows, 4, generator=g) * response_mask})


def _engine(model, trained: bool = True) -> FSDPEngine:
    extra = dict(optim=OptimConfig(lr=0.0), fsdp_config=FSDPConfig(), grad_clip=1e9) if trained else {}
    return FSDPEngine(model, device=torch.device("cpu"), compute_dtype=None, remove_padding=False, **extra)


def test_forward_is_the_models_forward_in_batch_order(tmp_path):
    path, _ = make_tiny_setup(tmp_path)
    model = load_causal_lm(path, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    engine = _engine(model, trained=False)
    out = engine.forward(batch, LogProbs(temperature=0.7, entropy=True), MicroBatching(size=4))
    inputs = sequence_inputs(batch["input_ids"], batch["attention_mask"], batch["responses"], batch["response_mask"])
    with torch.no_grad():
        log_probs, entropy, _ = actor_forward(model, inputs, 0.7, True)
    mask = batch["response_mask"].bool()
    assert torch.allclose(out["log_probs"][mask], log_probs[mask], atol=1e-5)
    assert torch.allclose(out["entropy"][mask], entropy[mask], atol=1e-5)
    # token budgets cut differently, put the rows back in order all the same
    budget = engine.forward(batch, LogProbs(temperature=0.7), MicroBatching(dynamic=True, max_tokens=12))
    assert torch.allclose(budget["log_probs"][mask], log_probs[mask], atol=1e-5) and "entropy" not in budget

    critic = load_critic(path, dtype=torch.float32)
    values = _engine(critic, trained=False).forward(batch, Values(), MicroBatching(size=2))["values"]
    with torch.no_grad():
        expected = critic_forward(critic, inputs)
    assert torch.allclose(values[mask], expected[mask], atol=1e-5)


def test_forward_backward_accumulates_the_mini_batch_gradient(tmp_path):
    """The engine owns micro batching: 1, 2 or 6 rows a pass give one gradient and one reported loss,
    the loss function sees the mini batch's token count."""
    path, _ = make_tiny_setup(tmp_path)
    results = []
    for size in (1, 2, 6):
        model = load_causal_lm(path, dtype=torch.float32)
        batch = _batch(model.config.vocab_size)
        engine, seen = _engine(model), []

        def loss_fn(outputs, part, norm):
            seen.append(float(norm["global_tokens"]))
            loss = -(outputs["log_probs"] * part["advantages"]).sum() / norm["global_tokens"]
            return loss, loss

        out = engine.forward_backward(batch, LogProbs(), loss_fn, MicroBatching(size=size), loss_scale_factor=4,
                                      accumulation=1)
        assert out["micro_batches"] == 6 // size and set(seen) == {float(batch["response_mask"].sum())}
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((float(out["loss"]), grads))
    for loss, grads in results[1:]:
        assert abs(loss - results[0][0]) < 1e-6
        for a, b in zip(grads, results[0][1]):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_export_weights_are_the_full_precision_state(tmp_path):
    """With master weights (bf16 compute on one CPU process) the export is the fp32 masters, every
    HF name of the state dict, and the model computes in bf16 again afterwards."""
    path, _ = make_tiny_setup(tmp_path)
    model = load_causal_lm(path, dtype=torch.float32)
    names = set(model.state_dict())
    engine = FSDPEngine(model, device=torch.device("cpu"), compute_dtype=torch.bfloat16, remove_padding=False,
                        optim=OptimConfig(lr=1e-3), fsdp_config=FSDPConfig())
    assert engine.master is not None and next(model.parameters()).dtype == torch.bfloat16
    exported = dict(engine.export_weights())
    assert set(exported) == names
    assert all(t.dtype == torch.float32 for t in exported.values() if t.is_floating_point())
    assert next(model.parameters()).dtype == torch.bfloat16
