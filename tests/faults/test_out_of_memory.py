"""An out-of-memory in a stage, for real: a process whose address space is capped (RLIMIT_AS) right
before the actor's update, so that the update's next allocation fails in the real allocator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rlcamp.workers.memory import describe, is_out_of_memory

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import resource, sys
import psutil
sys.path.insert(0, {root!r})
from rlcamp.config import build_config, resolve
from rlcamp.trainer.profiling import call_stage
from rlcamp.workers.actor import ActorRolloutRefWorker
from rlcamp.models.tiny import build_tiny_model
from rlcamp.workers.memory import OutOfMemory
from tests.helpers import make_tiny_setup, tiny_run_overrides
from tests.workers.test_actor_update import rollout_batch
from pathlib import Path

tmp = Path({tmp!r})
_, data = make_tiny_setup(tmp)
model = build_tiny_model(tmp / "wide", "qwen2", hidden_size=512, intermediate_size=1024)  # activations of MBs
resolved = resolve(build_config(tiny_run_overrides(model, data, tmp / "run", **{{
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 8, "data.max_response_length": 256}})), 16)
one = resolve(build_config(tiny_run_overrides(model, data, tmp / "run", **{{
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 1, "data.max_response_length": 256}})), 16)
worker = ActorRolloutRefWorker(resolved.config, one.derived)
batch = rollout_batch(worker, worker.tokenizer, n_prompts=8)
call_stage(worker, "update_actor", batch)  # with micro batches of 1, and room: every pool and thread exists now
worker.derived = resolved.derived  # micro batches of 8: activations 8x what the process has held so far
resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms, resource.RLIM_INFINITY))
try:
    call_stage(worker, "update_actor", batch)
except OutOfMemory as exc:
    print("OOM:", exc)
    sys.exit(0)
print("no OOM")
sys.exit(1)
'''


def test_an_oom_in_the_update_names_the_role_the_micro_batch_and_the_change(tmp_path):
    run = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), tmp=str(tmp_path))], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "OOM: out of memory in the actor's update (stage 'update_actor') on cpu (" in out
    assert "with a micro batch of 8 responses per device (actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8)" in out
    assert "Smallest change: actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4" in out


def test_the_messages_of_each_stage():
    from rlcamp.config import build_config, resolve

    resolved = resolve(build_config(["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.rollout.n=4",
                                     "actor_rollout_ref.actor.ppo_mini_batch_size=4", "critic.use_dynamic_bsz=True",
                                     "critic.ppo_max_token_len_per_gpu=8192",
                                     "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]))
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_out_of_memory(oom) and is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape"))
    text = describe(resolved.config, resolved.derived, "cpu", "update_critic", oom)
    assert "micro batch of 8192 tokens per device (critic.ppo_max_token_len_per_gpu=8192)" in text
    assert "Smallest change: critic.ppo_max_token_len_per_gpu=4096" in text
    assert "(CUDA out of memory. Tried to allocate 2.00 GiB)" in text
    assert "lower data.max_response_length" in describe(resolved.config, resolved.derived, "cpu", "generate", oom)


def test_the_smallest_change_comes_from_the_plan_when_it_can_size_the_model(tmp_path, monkeypatch):
    """A 7B actor on an 80 GiB device with 64 responses per micro batch: halving is not enough; the
    plan's estimate picks the largest micro batch that fits, and the message says its estimate."""
    import shutil

    from rlcamp.config import build_config, resolve
    from rlcamp.workers import memory
    from rlcamp.workorders.plan import Hardware, _with, estimate

    model = tmp_path / "Qwen2-7B-Instruct"
    model.mkdir()
    shutil.copy(ROOT / "tests/fixtures/model_configs/Qwen2-7B-Instruct.json", model / "config.json")
    resolved = resolve(build_config([
        f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}", "trainer.n_gpus_per_node=8",
        "data.train_batch_size=256", "data.max_prompt_length=1024", "data.max_response_length=4096",
        "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64",
        "actor_rollout_ref.model.use_fused_kernels=False", "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=8", "critic.ppo_micro_batch_size_per_gpu=8"]))
    monkeypatch.setattr(memory, "_memory_figures", lambda device: (10 * 2**30, 80 * 2**30, None))
    key = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"
    hardware = Hardware(1, 8, 80.0, "cuda")
    peaks = {n: estimate(_with(resolved.config, {key: n}), hardware).peak() for n in (64, 32, 16, 8, 4, 2, 1)}
    fits = max(n for n, peak in peaks.items() if peak <= 80.0)
    assert peaks[32] > 80.0 and fits < 32, peaks  # the case this test is about: halving would not do
    text = memory.describe(resolved.config, resolved.derived, "cuda:0", "update_actor", RuntimeError("CUDA out of memory"))
    assert f"Smallest change: {key}={fits} " in text, text
    assert f"`rlcamp plan` estimates the peak at {peaks[fits]:.1f} GiB of 80.0 with it" in text
