"""The actor update: micro batching is exact, and the KL / entropy / MoE terms enter the loss."""

import torch

from rlcamp.batch import Batch
from rlcamp.config import build_config, resolve
from rlcamp.workers.actor import ActorRolloutRefWorker
from tests.helpers import make_tiny_setup, tiny_run_overrides


def rollout_batch(worker, tokenizer, n_prompts=4):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"What is {i} + 2?"}],
                                           add_generation_prompt=True, tokenize=False) for i in range(n_prompts)]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = Batch({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    batch = worker.generate(batch)
    batch.update(worker.compute_log_prob(batch))
    g = torch.Generator().manual_seed(0)
    batch["advantages"] = torch.randn(batch["responses"].shape, generator=g) * batch["response_mask"]
    if worker.ref is not None:
        batch.update(worker.compute_ref_log_prob(batch))
    return batch


def grads_after_update(tmp_path, micro, extra=()):
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": micro, "actor_rollout_ref.actor.optim.lr": 0.0})
    resolved = resolve(build_config(overrides + list(extra)), 16)
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
    return first_gradient(worker, rollout_batch(worker, worker.tokenizer))


def first_gradient(worker, batch) -> tuple[list[torch.Tensor], dict]:
    """update_actor with the optimizer step skipped: the first mini batch's accumulated gradient (full
    tensors, on the CPU) and the update's metrics."""
    captured = {}

    def capture():
        grads = [p.grad for p in worker.model.parameters() if p.grad is not None]
        captured.setdefault("g", [(g.full_tensor() if hasattr(g, "full_tensor") else g).detach().cpu().clone()
                                  for g in grads])
        return torch.tensor(0.0)

    worker.engine.optimizer_step = capture
    metrics = worker.update_actor(batch)
    return captured["g"], metrics


def test_micro_batching_gives_the_same_gradient(tmp_path):
    for mode in ("token-mean", "seq-mean-token-mean"):
        extra = [f"actor_rollout_ref.actor.loss_agg_mode={mode}"]
        g4, m4 = grads_after_update(tmp_path / f"a{mode}", 4, extra)
        g1, m1 = grads_after_update(tmp_path / f"b{mode}", 1, extra)
        assert len(g4) == len(g1) > 0
        for a, b in zip(g4, g1):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        assert abs(m4["actor/pg_loss"] - m1["actor/pg_loss"]) < 1e-6


def test_kl_loss_and_entropy_terms_are_reported(tmp_path):
    _, metrics = grads_after_update(tmp_path, 4, ["actor_rollout_ref.actor.use_kl_loss=True",
                                                 "actor_rollout_ref.actor.entropy_coeff=0.01"])
    assert "actor/kl_loss" in metrics and "actor/entropy" in metrics
    assert abs(metrics["actor/kl_loss"]) < 1e-5  # lr 0: the actor still equals its reference


def test_dynamic_batch_size_gives_the_same_gradient_and_log_probs(tmp_path):
    fixed, m_fixed = grads_after_update(tmp_path / "fixed", 2)
    dynamic, m_dynamic = grads_after_update(tmp_path / "dynamic", 2, [
        "actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1"])  # one row each
    assert m_dynamic["actor/micro_batches"] != m_fixed["actor/micro_batches"]  # cut differently ...
    for a, b in zip(fixed, dynamic):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)  # ... same gradient
    assert abs(m_fixed["actor/pg_loss"] - m_dynamic["actor/pg_loss"]) < 1e-6


def test_single_device_offload_gives_the_same_update(tmp_path):
    """One in-process device with param/optimizer offload: FSDP2 over a one-rank group, same update."""
    plain, m_plain = grads_after_update(tmp_path / "plain", 2)
    offloaded, m_off = grads_after_update(tmp_path / "offload", 2, [
        "actor_rollout_ref.actor.fsdp_config.param_offload=True",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True"])
    for a, b in zip(plain, offloaded):
        b = b.full_tensor() if hasattr(b, "full_tensor") else b
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert abs(m_plain["actor/pg_loss"] - m_off["actor/pg_loss"]) < 1e-6


def test_checkpoint_contents_are_honoured(tmp_path):
    """save_contents without 'optimizer': weights and schedule come back, asking for the optimizer fails clearly."""
    import pytest

    model, data = make_tiny_setup(tmp_path)
    base = tiny_run_overrides(model, data, tmp_path / "run")
    contents = ["actor_rollout_ref.actor.checkpoint.save_contents=[hf_model,extra]",
                "actor_rollout_ref.actor.checkpoint.load_contents=[model,extra]"]
    resolved = resolve(build_config(base + contents), 16)
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
    batch = rollout_batch(worker, worker.tokenizer)
    worker.update_actor(batch)
    worker.save_checkpoint(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["huggingface", "rng_rank0.pt", "state.pt"]
    trained = worker.compute_log_prob(batch)["old_log_probs"]
    fresh = ActorRolloutRefWorker(resolved.config, resolved.derived)
    fresh.load_checkpoint(tmp_path / "ckpt")
    assert torch.allclose(fresh.compute_log_prob(batch)["old_log_probs"], trained, atol=1e-6)
    assert fresh.engine.scheduler.last_epoch == worker.engine.scheduler.last_epoch == 1
    defaults = resolve(build_config(base), 16)  # a run whose load_contents include the optimizer
    with pytest.raises(RuntimeError, match=r"holds no 'optimizer' .* drop 'optimizer' from actor_rollout_ref.actor.checkpoint"):
        ActorRolloutRefWorker(defaults.config, defaults.derived).load_checkpoint(tmp_path / "ckpt")


def test_ignore_eos_generates_full_length_but_a_response_ends_at_its_first_eos(tmp_path):
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{"actor_rollout_ref.rollout.ignore_eos": True})
    resolved = resolve(build_config(overrides), 16)
    worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
    assert worker.rollout.eos.numel() == 0  # nothing stops the engine early ...
    eos, engine_generate = worker.eos_token_ids[0], worker.rollout.generate

    def says_eos_early(*args, **kwargs):
        out = engine_generate(*args, **kwargs)
        out["responses"][0, 3] = eos  # row 0 ends at its 4th token, and the engine went on
        return out

    worker.rollout.generate = says_eos_early
    batch = rollout_batch(worker, worker.tokenizer)
    responses = batch["responses"]
    assert (responses != worker.tokenizer.pad_token_id).all()  # ... every row ran data.max_response_length=8
    # as verl: trained and scored up to and including the first EOS (a slow loop as the reference)
    expected = [next((t + 1 for t, token in enumerate(row.tolist()) if token in worker.eos_token_ids), 8)
                for row in responses]
    assert expected[0] == 4 and batch["response_mask"].sum(-1).tolist() == expected
    after_end = batch["response_mask"] == 0
    assert (batch["rollout_log_probs"][after_end] == 0).all() and (batch["old_log_probs"][after_end] == 0).all()



def test_use_fused_kernels_turns_the_chunked_head_on_and_off_with_the_same_gradient(tmp_path, monkeypatch):
    import rlcamp.models.forward as forward

    calls = []
    chunked = forward._actor_forward_chunked
    monkeypatch.setattr(forward, "_actor_forward_chunked", lambda *a, **k: calls.append(1) or chunked(*a, **k))
    fused, m_fused = grads_after_update(tmp_path / "fused", 2, ["actor_rollout_ref.model.use_fused_kernels=True"])
    assert calls  # rlcamp's default: the chunked head
    calls.clear()
    plain, m_plain = grads_after_update(tmp_path / "plain", 2, ["actor_rollout_ref.model.use_fused_kernels=False"])
    assert not calls  # the full logits, verl's default
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert abs(m_fused["actor/pg_loss"] - m_plain["actor/pg_loss"]) < 1e-6


def test_seq_mean_token_sum_norm_scales_as_verl_by_the_configured_micro_batches_and_factor(tmp_path):
    """verl's scale: sum / (loss_scale_factor x micro batches per mini batch). A mini batch of 8
    responses in micro batches of 4 (2 accumulated) has half the gradient of one in micro batches of
    8, and a factor twice as large halves it again; the cut itself does not matter (token budgets)."""
    mode = ["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm", "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    whole, _ = grads_after_update(tmp_path / "m8", 8, mode)
    halves, _ = grads_after_update(tmp_path / "m4", 4, mode)
    factor, _ = grads_after_update(tmp_path / "f", 8, mode + ["actor_rollout_ref.actor.loss_scale_factor=16"])
    budget, _ = grads_after_update(tmp_path / "d", 8, mode + [
        "actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1"])
    for w, h, f, d in zip(whole, halves, factor, budget):  # response_length 8: the default factor
        assert torch.allclose(h, w / 2, atol=1e-7, rtol=1e-4)
        assert torch.allclose(f, w / 2, atol=1e-7, rtol=1e-4)
        assert torch.allclose(d, w, atol=1e-7, rtol=1e-4)  # one row per micro batch, counted as one micro batch


def test_which_layouts_decode_on_the_trainers_tensor_parallel_shards():
    """rollout.name=hf decodes on the Megatron actor's own shards only where a TP group holds whole layers and
    whole sequences at the rollout's TP size; everywhere else the rollout keeps a copy."""
    from rlcamp.config.schema import RLConfig
    from rlcamp.workers.actor import decodes_on_trainer_shards

    def case(moe=False, **changes):
        from dataclasses import replace

        arr = RLConfig().actor_rollout_ref
        rollout = {"name": "hf", "tensor_model_parallel_size": 2}
        megatron = {"tensor_model_parallel_size": 2, "sequence_parallel": False}
        for key, value in changes.items():
            (rollout if key.startswith("rollout_") else megatron)[key.removeprefix("rollout_")] = value
        actor = replace(arr.actor, strategy="megatron", megatron=replace(arr.actor.megatron, **megatron))
        return decodes_on_trainer_shards(replace(arr.rollout, **rollout), actor, moe)

    assert case()
    assert case(moe=True, sequence_parallel=True)  # sequence parallelism is off for MoE models anyway
    for changes in ({"sequence_parallel": True}, {"pipeline_model_parallel_size": 2}, {"context_parallel_size": 2},
                    {"expert_model_parallel_size": 2}, {"tensor_model_parallel_size": 4},
                    {"rollout_tensor_model_parallel_size": 1}, {"rollout_name": "vllm"}):
        assert not case(**changes), changes


def test_one_mini_batch_and_one_epoch_anchor_the_ratio_on_the_updates_own_log_probs(tmp_path):
    """verl's dp_actor ``on_policy``: with one mini batch and one epoch the ratio is exp(log_probs -
    log_probs.detach()) = 1, whatever old_log_probs hold; with two mini batches old_log_probs anchor it."""
    model, data = make_tiny_setup(tmp_path)
    for minis in (1, 2):
        overrides = tiny_run_overrides(model, data, tmp_path / f"run{minis}", **{
            "actor_rollout_ref.actor.ppo_mini_batch_size": 8 // minis, "actor_rollout_ref.actor.optim.lr": 0.0,
            "actor_rollout_ref.actor.clip_ratio": 0.05})
        resolved = resolve(build_config(overrides), 16)
        worker = ActorRolloutRefWorker(resolved.config, resolved.derived)
        batch = rollout_batch(worker, worker.tokenizer, n_prompts=8)
        honest, m_honest = first_gradient(worker, batch)
        worker.model.zero_grad(set_to_none=True)  # first_gradient skipped the step that zeroes them
        shifted = batch.index(torch.arange(len(batch)))
        shifted["old_log_probs"] = batch["old_log_probs"] + 0.5 * batch["response_mask"]
        moved, m_moved = first_gradient(worker, shifted)
        assert len(honest) == len(moved) > 0
        same = all(torch.equal(a, b) for a, b in zip(honest, moved))
        if minis == 1:
            assert same and m_moved["actor/pg_clipfrac"] == m_honest["actor/pg_clipfrac"] == 0.0
            assert m_moved["actor/ppo_kl"] == 0.0
        else:
            assert not same and m_moved["actor/pg_clipfrac"] > 0.2  # a ratio of e^-0.5 is outside 1 +- 0.05
