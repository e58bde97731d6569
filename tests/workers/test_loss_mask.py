"""Two masks, two jobs: ``response_mask`` (the token exists: attention, lengths, where the reward goes) and
``loss_mask`` (the token is trained on). A span inside a response with loss_mask 0 (a tool's output in a
multi-turn rollout) is attended to but gives no gradient and does not count in the loss's average."""

import pytest
import torch

from rlcamp.algos import compute_advantages
from rlcamp.config import build_config, resolve
from rlcamp.workers.actor import ActorRolloutRefWorker
from tests.helpers import make_tiny_setup, tiny_run_overrides
from tests.workers.test_actor_update import first_gradient, rollout_batch

SPAN = slice(2, 5)  # response positions 2, 3, 4: "tool output"


@pytest.fixture(scope="module")
def worker_and_batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loss_mask")
    model, data = make_tiny_setup(tmp)
    overrides = tiny_run_overrides(model, data, tmp / "run", **{"actor_rollout_ref.actor.optim.lr": 0.0,
                                                                "actor_rollout_ref.actor.ppo_mini_batch_size": 4})
    resolved = resolve(build_config(overrides), 16)
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
    batch = rollout_batch(worker, worker.tokenizer)
    batch["response_mask"] = torch.ones_like(batch["response_mask"])  # every response token exists ...
    batch["loss_mask"] = torch.ones_like(batch["response_mask"])
    batch["loss_mask"][:, SPAN] = 0  # ... but the span is not trained on
    batch.update(worker.compute_log_prob(batch))
    g = torch.Generator().manual_seed(1)
    batch["advantages"] = torch.randn(batch["responses"].shape, generator=g)
    return worker, batch


def gradient(worker, batch) -> tuple[list[torch.Tensor], dict]:
    worker.model.zero_grad(set_to_none=True)  # first_gradient skips the optimizer step, which would clear them
    return first_gradient(worker, batch)


def reference(worker, batch) -> tuple[list[torch.Tensor], float]:
    """A slow hand-written PPO loss on the plain HF model: the full sequence attended to, token-mean over the
    trained tokens only. With lr 0 the new log-probs equal the old ones (ratio 1, nothing clipped)."""
    model = worker.model
    model.zero_grad(set_to_none=True)
    prompt_len = batch["input_ids"].shape[1]
    ids = torch.cat([batch["input_ids"], batch["responses"]], 1)
    attention = torch.cat([batch["attention_mask"], batch["response_mask"]], 1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits.float()
    logp = torch.log_softmax(logits[:, prompt_len - 1:-1], -1).gather(-1, batch["responses"][..., None])[..., 0]
    trained = batch["loss_mask"].float()
    ratio = torch.exp(logp - batch["old_log_probs"])
    loss = (-batch["advantages"] * ratio * trained).sum() / trained.sum()
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads, loss.item()


def test_an_untrained_span_gives_the_loss_and_gradient_of_the_trained_tokens_alone(worker_and_batch):
    worker, batch = worker_and_batch
    got, metrics = gradient(worker, batch)
    want, loss = reference(worker, batch)
    assert metrics["actor/pg_loss"] == pytest.approx(loss, abs=1e-6)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), (a - b).abs().max()


def test_whatever_the_span_holds_changes_nothing_but_its_tokens_are_attended_to(worker_and_batch):
    worker, batch = worker_and_batch
    base, _ = gradient(worker, batch)
    noisy = batch.index(torch.arange(len(batch)))  # a copy
    g = torch.Generator().manual_seed(2)
    for key in ("advantages", "old_log_probs"):
        noisy[key] = noisy[key].clone()
        noisy[key][:, SPAN] = torch.randn(noisy[key][:, SPAN].shape, generator=g) * 5
    # (the rows come in another shuffled order each update: the same up to the order of the sums)
    assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-5) for a, b in zip(base, gradient(worker, noisy)[0]))
    hidden = batch.index(torch.arange(len(batch)))
    hidden["response_mask"] = hidden["loss_mask"].clone()  # the span no longer exists (not attended to)
    changed = gradient(worker, hidden)[0]
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(base, changed))


@pytest.mark.parametrize("estimator", ["gae", "reinforce_plus_plus"])
def test_returns_flow_through_an_untrained_span_as_if_it_were_not_there(estimator):
    """GAE and REINFORCE++ pass the running value through a position not trained on: on the trained tokens
    they equal the estimate on the response with the span cut out (returns; whitening aside)."""
    g = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    mask = torch.ones(4, 8)
    mask[:, SPAN] = 0
    keep = mask[0].bool()
    kwargs = dict(values=values, uid=list(range(4)), gamma=0.9, lam=0.8)
    _, returns = compute_advantages(estimator, token_level_rewards=rewards * mask, loss_mask=mask, **kwargs)
    cut = dict(kwargs, values=values[:, keep])
    _, returns_cut = compute_advantages(estimator, token_level_rewards=rewards[:, keep], loss_mask=mask[:, keep], **cut)
    assert torch.allclose(returns[:, keep], returns_cut, atol=1e-6)
    assert torch.all(returns[:, ~keep] == 0)
