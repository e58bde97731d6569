"""The CUDA paths, where torch sees a GPU (skipped with a reason elsewhere, never faked).

- one actor step on CUDA gives the log-probs and gradient of the same step on the CPU;
- FSDP2 offload over a one-rank NCCL group keeps the weights and optimizer state in host memory
  and gives the gradient of the plain CUDA step;
- the trainer end to end on CUDA (PPO with a critic, GRPO, a reward model, bf16 mixed precision),
  its checkpoints loadable, and a resume that carries on from them.

`scripts/gpu_check.sh` runs these on a GPU machine; `pytest -m gpu` anywhere else skips them.
"""

import json
import math

import pytest
import torch

from rlcamp.batch import Batch
from rlcamp.config import build_config, resolve
from rlcamp.models.tiny import build_tiny_model
from rlcamp.trainer.main_ppo import main
from rlcamp.workers.actor import ActorRolloutRefWorker
from tests.helpers import make_tiny_setup, tiny_run_overrides
from tests.workers.test_actor_update import first_gradient, rollout_batch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: torch sees none")]


def _worker(tmp_path, device: str, extra: dict | None = None) -> ActorRolloutRefWorker:
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{"trainer.device": device, **(extra or {})})
    resolved = resolve(build_config(overrides), 16)
    return ActorRolloutRefWorker(resolved.config, resolved.derived, device)


def test_actor_step_on_cuda_equals_the_cpu_step(tmp_path):
    cpu = _worker(tmp_path / "cpu", "cpu")
    batch = rollout_batch(cpu, cpu.tokenizer)  # one batch, generated on the CPU, fed to both
    gpu = _worker(tmp_path / "gpu", "cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    gpu_log_probs = gpu.compute_log_prob(batch)["old_log_probs"]
    mask = batch["response_mask"].bool()
    assert torch.allclose(gpu_log_probs[mask], batch["old_log_probs"][mask], atol=1e-4, rtol=1e-4)
    g_cpu, m_cpu = first_gradient(cpu, batch)
    g_gpu, m_gpu = first_gradient(gpu, batch)
    assert len(g_cpu) == len(g_gpu) > 0
    for a, b in zip(g_cpu, g_gpu):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3), (a - b).abs().max()
    assert abs(m_cpu["actor/pg_loss"] - m_gpu["actor/pg_loss"]) < 1e-5
    assert m_gpu["perf/actor_peak_memory_gb"] > 0  # torch.cuda.max_memory_allocated, not host RSS


def test_generation_on_cuda_matches_greedy_cpu(tmp_path):
    cpu = _worker(tmp_path / "cpu", "cpu")
    gpu = _worker(tmp_path / "gpu", "cuda")
    texts = [cpu.tokenizer.apply_chat_template([{"role": "user", "content": f"What is {i} + 3?"}],
                                               add_generation_prompt=True, tokenize=False) for i in range(4)]
    cpu.tokenizer.padding_side = "left"
    enc = cpu.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompts = Batch({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    out_cpu, out_gpu = cpu.generate(prompts, validate=True), gpu.generate(prompts, validate=True)
    assert out_gpu["responses"].device.type == "cpu"  # handed back to the driver on the host
    assert torch.equal(out_cpu["responses"], out_gpu["responses"])
    assert torch.allclose(out_cpu["rollout_log_probs"], out_gpu["rollout_log_probs"], atol=1e-4)


def test_offload_on_cuda_keeps_state_on_the_host_with_the_same_gradient(tmp_path):
    cpu = _worker(tmp_path / "cpu", "cpu")
    batch = rollout_batch(cpu, cpu.tokenizer)
    plain = _worker(tmp_path / "plain", "cuda")
    offload = _worker(tmp_path / "offload", "cuda", {"actor_rollout_ref.actor.fsdp_config.param_offload": True,
                                                       "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True})
    assert torch.distributed.get_backend() == "nccl"
    local = [p.to_local() for p in offload.model.parameters()]
    assert all(t.device.type == "cpu" for t in local), "offloaded shards must live in host memory"
    g_plain, _ = first_gradient(plain, batch)
    g_off, _ = first_gradient(offload, batch)
    for a, b in zip(g_plain, g_off):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3), (a - b).abs().max()
    # a real step: the optimizer state waits on the host between steps
    stepping = _worker(tmp_path / "stepping", "cuda", {"actor_rollout_ref.actor.fsdp_config.param_offload": True,
                                                         "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True})
    before = [p.to_local().clone() for p in stepping.model.parameters()]
    for _ in range(2):  # the second step finds the state the first one left on the host
        metrics = stepping.update_actor(batch)
        assert math.isfinite(metrics["actor/grad_norm"])
    after = [p.to_local() for p in stepping.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    states = [v for s in stepping.engine.optimizer.state.values() for k, v in s.items()
              if isinstance(v, torch.Tensor) and k != "step"]
    assert states and all(v.device.type == "cpu" for v in states)


def _read_metrics(run_dir) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


RUNS = {
    "ppo-gae-critic-fp32": {},
    "ppo-bf16-mixed-precision": {"actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "bf16",
                                 "critic.model.fsdp_config.mixed_precision.param_dtype": "bf16",
                                 "actor_rollout_ref.rollout.dtype": "bf16", "actor_rollout_ref.actor.use_kl_loss": True},
    "grpo-remove-padding": {"algorithm.adv_estimator": "grpo", "actor_rollout_ref.model.use_remove_padding": True,
                            "actor_rollout_ref.actor.use_dynamic_bsz": True,
                            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 256},
    "ppo-reward-model": {"reward_model.enable": True},
    # FSDP2 over a one-rank NCCL group: CPU offload, autocast, sharded (DCP) checkpoints and their resume
    "ppo-offload-bf16": {"actor_rollout_ref.actor.fsdp_config.param_offload": True,
                         "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
                         "critic.model.fsdp_config.param_offload": True,
                         "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "bf16",
                         "critic.model.fsdp_config.mixed_precision.param_dtype": "bf16"},
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_runs_end_to_end_on_cuda_and_resumes(tmp_path, name):
    model, data = make_tiny_setup(tmp_path, "llama")
    extra = dict(RUNS[name])
    if extra.get("reward_model.enable"):
        extra["reward_model.model.path"] = build_tiny_model(tmp_path / "rm", "qwen2", seed=1, reward_model=True)
    run = tmp_path / "run"
    settings = {"trainer.device": "cuda", "trainer.save_freq": 2, "trainer.total_training_steps": 3, **extra}
    assert main(tiny_run_overrides(model, data, run, **settings)) == 0
    rows = _read_metrics(run)
    assert set(rows) == {1, 2, 3}
    for key in ("actor/pg_loss", "actor/grad_norm", "response_length/mean", "val/acc"):
        assert all(math.isfinite(r[key]) for r in rows.values() if key in r), key
    assert rows[3]["perf/actor_peak_memory_gb"] > 0
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "global_step_3" / "actor" / "huggingface")
    # resume: the run picks up at step 3 and trains one more
    settings["trainer.total_training_steps"] = 4
    assert main(tiny_run_overrides(model, data, run, **settings)) == 0
    rows = _read_metrics(run)
    assert set(rows) == {1, 2, 3, 4} and math.isfinite(rows[4]["actor/pg_loss"])
