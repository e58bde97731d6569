"""rlcamp plan: model sizes from config.json against the published counts, the memory arithmetic
by hand, and the command on a work order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlcamp.config import build_config
from rlcamp.workorders.plan import GIB, Hardware, estimate, plan_command, read_shape

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures/model_configs"


@pytest.mark.parametrize("name, billions, kv", [
    ("Qwen2-7B-Instruct", 7.6, 28 * 2 * 4 * 128),  # 7.6B (Qwen2 report); GQA: 4 KV heads of 128
    ("qwen1.5-moe-a2.7b", 14.3, 24 * 2 * 16 * 128),  # 14.3B in all (2.7B active)
    ("deepseek-v3", 671.0, 61 * (512 + 64)),  # 671B; MLA caches a 512 latent + 64 rope dims per layer
])
def test_sizes_from_config_json_match_the_published_counts(name, billions, kv):
    shape = read_shape(CONFIGS / f"{name}.json")
    assert shape.params / 1e9 == pytest.approx(billions, rel=0.005)
    assert shape.kv_per_token == kv


def _model(tmp_path: Path, name: str = "Qwen2-7B-Instruct") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    shutil.copy(CONFIGS / f"{name}.json", folder / "config.json")
    return folder


def _cfg(model: Path, *extra: str):
    return build_config([f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}",
                         "data.train_batch_size=64", "data.max_prompt_length=512", "data.max_response_length=512",
                         "actor_rollout_ref.actor.ppo_mini_batch_size=16",
                         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                         "critic.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.rollout.name=vllm",
                         *extra]).config


def _part(est, role: str, start: str) -> float:
    return next(p.gib for p in est.parts if p.role == role and p.what.startswith(start))


def test_the_memory_arithmetic_by_hand(tmp_path):
    model = _model(tmp_path)
    n = read_shape(model).params
    est = estimate(_cfg(model), Hardware(1, 8, 80.0))
    # fp32 master weights, gradients and Adam's two moments, each sharded 8 ways
    assert _part(est, "actor", "weights") == pytest.approx(n * 4 / 8 / GIB)
    assert _part(est, "actor", "optimizer") == pytest.approx(n * 8 / 8 / GIB)
    # twice the devices: half the states; offload: none on the device
    est16 = estimate(_cfg(model), Hardware(2, 8, 80.0))
    assert _part(est16, "actor", "weights") == pytest.approx(_part(est, "actor", "weights") / 2)
    off = estimate(_cfg(model, "actor_rollout_ref.actor.fsdp_config.optimizer_offload=True"), Hardware(1, 8, 80.0))
    assert _part(off, "actor", "optimizer") == 0.0
    # the full head: 2 x 1024 tokens x 152064 x 12 bytes (fp32 logits, log-softmax, gradient); chunked: bounded
    full = estimate(_cfg(model, "actor_rollout_ref.model.use_fused_kernels=False"), Hardware(1, 8, 80.0))
    assert _part(full, "actor", "logits") == pytest.approx(2 * 1024 * 152064 * 12 / GIB)
    assert _part(est, "actor", "logits") < _part(full, "actor", "logits") / 10
    # vLLM takes its share of the device while it generates (free_cache_engine: asleep otherwise)
    assert est.stages()["generate"] == pytest.approx(0.5 * 80.0)
    # gradient checkpointing keeps each layer's input (hidden 3584 in bf16) plus one layer
    shape = read_shape(model)
    act = _part(est, "actor", "activations")
    assert act == pytest.approx(2 * 1024 * shape.activation_per_token(True) * 2 / GIB)
    assert shape.activation_per_token(True) < shape.activation_per_token(False) / 10


def test_plan_on_a_work_order_says_what_fits_and_what_to_change(tmp_path, capsys):
    model = _model(tmp_path)
    script = Path(__file__).resolve().parents[2] / "examples/ppo_trainer/run_qwen2-7b_seq_balance.sh"
    import os

    os.environ["MODEL_PATH"] = str(model)
    try:
        fits = plan_command([str(script)], None, None, 80.0, None)
        tight = plan_command([str(script)], 2, 1, 40.0, None)
    finally:
        del os.environ["MODEL_PATH"]
    assert "7.62B parameters" in fits and ": FITS" in fits
    assert "DOES NOT FIT" in tight and "changes that lower the peak" in tight and "fits" in tight.split("changes that lower the peak")[1]
    assert "token budgets halved" in tight


def test_a_missing_config_json_says_how_to_get_just_that_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="reads the model's config.json .* Download just that file"):
        read_shape(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_the_estimate_is_within_a_quarter_of_the_measured_peak_on_smollm2():
    """The main job's model (SmolLM2-135M) for 2 steps, the process's peak resident memory (1.13x
    here). The tiny cases of benchmarks/plan_accuracy.py measure mostly the process runtime, which
    varied from 0.49 to 0.63 GiB between two checkouts on this machine: too noisy to hold to 25%."""
    case = "smollm2"
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import plan_accuracy

    for _, worker, est, got in plan_accuracy.run_case(case):
        assert 0.75 <= est / got <= 1.25, f"{worker}: estimate {est:.2f} GiB, measured {got:.2f} GiB"
