"""strategy=megatron's pipeline parallelism (``engines.pipeline``) on 2 spawned gloo processes against one
process: log-probs, entropy, values, the loss, every gradient and the norm, the step, for each schedule
(1F1B, GPipe, interleaved 1F1B with virtual stages), padded and packed sequences, uneven micro batches,
fewer micro batches than stages, tied and untied output layers; a checkpoint written at PP=2 resumes
in one process and takes the same next step. TP x PP and PP x DP on 4 processes are in the slow tier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, MicroBatching, Values
from tests.conftest import free_port
from tests.engines.test_megatron import _batch, _loss, _value_loss

# name: (family, tied output layer, layout, micro batching, padded/packed)
CASES = {
    "1f1b": ("qwen2", True, dict(pp=2), MicroBatching(size=3), False),
    "gpipe_packed": ("llama", False, dict(pp=2, schedule="gpipe"), MicroBatching(size=2), True),
    "interleaved": ("qwen2", True, dict(pp=2, vpp=2), MicroBatching(size=2), False),
    "one_micro_batch": ("llama", True, dict(pp=2, layers_first=3), MicroBatching(size=4), True),
}
SLOW_CASES = {  # 4 processes
    "tp2_pp2": ("qwen2", True, dict(tp=2, pp=2), MicroBatching(size=2), False),
    "pp2_dp2": ("llama", False, dict(pp=2), MicroBatching(size=1), True),
    # FSDP2 over the data-parallel dimension of a TP mesh (torchtitan's 2D): layers split 2 x 2, tied head whole
    "tp2_dp2_fsdp": ("qwen2", True, dict(tp=2, fsdp=True), MicroBatching(size=2), True),
}


def _grads(engine) -> dict[str, torch.Tensor]:
    """This rank's gradients by HF name, whole (tensor-parallel slices gathered)."""
    return {engine.param_names[id(p)]: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
            for p in engine.params if p.grad is not None}


def _steps(paths: dict, case: tuple, layout: dict, folder: Path | None = None, resume: Path | None = None) -> dict:
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm, load_critic

    family, tied, _, micro, packed = case
    path = paths[(family, tied)]
    layout = {"tp": 1, **layout}
    out = {}
    actor = MegatronEngine(load_causal_lm(path), device=torch.device("cpu"), key="tp", optim=OptimConfig(lr=1e-2),
                           grad_clip=1e9, remove_padding=packed, distributed_optimizer=True, **layout)
    batch = _batch(actor.model.config.vocab_size)
    if actor.mesh.dp_size > 1:  # this rank's data-parallel part, as dispatch hands it out
        batch = batch.index(torch.arange(len(batch)).chunk(actor.mesh.dp_size)[actor.mesh.dp_rank])
    if resume is not None:
        actor.load(resume, ["model", "optimizer", "extra"], {}, "actor")
    else:
        first = actor.forward(batch, LogProbs(0.8, entropy=True), micro)
        out["log_probs"], out["entropy"] = first.tensors.get("log_probs"), first.tensors.get("entropy")
        step = actor.forward_backward(batch, LogProbs(0.8, entropy=True), _loss, micro, loss_scale_factor=4,
                                      accumulation=2)
        out["loss"], out["grads"] = step["loss"], _grads(actor)
        out["grad_norm"] = actor.optimizer_step()
        actor.scheduler_step()
        out["after"] = actor.forward(batch, LogProbs(0.8), micro).tensors.get("log_probs")
        if folder is not None:
            actor.save(folder, ["model", "optimizer", "extra", "hf_model"], {}, None)
    actor.forward_backward(batch, LogProbs(0.8), _loss, micro, loss_scale_factor=4, accumulation=2)
    out["next_grad_norm"] = actor.optimizer_step()
    out["next"] = actor.forward(batch, LogProbs(0.8), micro).tensors.get("log_probs")
    if resume is None:
        critic = MegatronEngine(load_critic(path), device=torch.device("cpu"), key="tp", optim=OptimConfig(lr=1e-2),
                                remove_padding=packed, **layout)
        out["values"] = critic.forward(batch, Values(), micro).tensors.get("values")
        critic.forward_backward(batch, Values(), _value_loss, micro, loss_scale_factor=4, accumulation=1)
        out["critic_grads"] = _grads(critic)
    out["returns"] = actor.mesh.returns_outputs
    return out


def _run(rank: int, world: int, port: int, paths: dict, cases: dict, root: str) -> None:
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    for name, case in cases.items():
        out = _steps(paths, case, case[2], folder=Path(root) / f"ckpt_{name}")
        torch.save(out, Path(root) / f"{name}_rank{rank}.pt")
    if "1f1b" in cases:  # use_dist_checkpointing: the first start writes the HF weights as a PP=2 checkpoint
        from rlcamp.engines.megatron import MegatronEngine
        from rlcamp.models.loading import load_causal_lm

        MegatronEngine(load_causal_lm(paths[("qwen2", True)]), device=torch.device("cpu"), tp=1, pp=2, key="tp",
                       dist_checkpoint=str(Path(root) / "dist"))


def _paths(root: Path, cases: dict) -> dict:
    from rlcamp.models.tiny import build_tiny_model

    return {(f, tied): str(build_tiny_model(root / f"{f}_{tied}", f, num_hidden_layers=4, tie_word_embeddings=tied))
            for f, tied, *_ in cases.values()}


def _spawn(root: Path, cases: dict, world: int) -> dict:
    paths = _paths(root, cases)
    mp.spawn(_run, args=(world, free_port(), paths, cases, str(root)), nprocs=world, join=True)
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return root, _spawn(root, CASES, 2)


def _coords(rank: int, name: str, world: int) -> tuple[int, int]:
    """(tp rank, dp rank) of ``rank`` in case ``name``'s layout (tensor parallel inner, then data)."""
    layout = {**CASES, **SLOW_CASES}[name][2]
    tp = layout.get("tp", 1)
    dp = world // (tp * layout.get("pp", 1))
    return rank % tp, (rank // tp) % dp


def _merged(root: Path, name: str, world: int) -> dict:
    """One result from every rank's: outputs from the returning ranks (one per data-parallel part, in
    order), gradients (before the step's data-parallel sum) summed over the stages and data-parallel parts
    (a tied weight's two halves add up to the one-process gradient), from tensor-parallel rank 0 (the
    group's ranks hold the same, gathered)."""
    ranks = [torch.load(root / f"{name}_rank{r}.pt", weights_only=False) for r in range(world)]
    returning = [r for r in ranks if r["returns"]]
    out = dict(returning[0])
    for key in ("log_probs", "entropy", "after", "next", "values"):
        out[key] = torch.cat([r[key] for r in returning])
    for key in ("grads", "critic_grads"):
        merged: dict[str, torch.Tensor] = {}
        for i, r in enumerate(ranks):
            if _coords(i, name, world)[0] == 0:
                for n, g in r[key].items():
                    merged[n] = merged[n] + g if n in merged else g
        out[key] = merged
    return out


def _compare(two: dict, one: dict) -> None:
    mask = _batch(10)["response_mask"].bool()
    for key in ("log_probs", "entropy", "after", "next", "values"):
        assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
    assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
    assert float(two["grad_norm"]) == pytest.approx(float(one["grad_norm"]), rel=1e-5)
    assert float(two["next_grad_norm"]) == pytest.approx(float(one["next_grad_norm"]), rel=1e-5)
    for grads in ("grads", "critic_grads"):
        assert two[grads].keys() == one[grads].keys(), grads
        for name, g in one[grads].items():
            assert torch.allclose(two[grads][name], g, atol=1e-6, rtol=1e-4), (grads, name)


@pytest.mark.parametrize("name", CASES)
def test_two_pipeline_stages_train_as_one_process(runs, name):
    root, paths = runs
    one = _steps(paths, CASES[name], {})
    _compare(_merged(root, name, 2), one)


@pytest.mark.parametrize("name", ["1f1b", "gpipe_packed"])
def test_a_pp2_checkpoint_resumes_in_one_process_with_the_same_next_step(runs, name):
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm

    root, paths = runs
    two = _merged(root, name, 2)
    with pytest.warns(UserWarning, match="random generators start afresh"):
        resumed = _steps(paths, CASES[name], {}, resume=root / f"ckpt_{name}")
    mask = _batch(10)["response_mask"].bool()
    assert float(resumed["next_grad_norm"]) == pytest.approx(float(two["next_grad_norm"]), rel=1e-5)
    assert torch.allclose(resumed["next"][mask], two["next"][mask], atol=1e-5)
    # the transformers folder holds every stage's weights, tied or not
    hf = load_causal_lm(str(root / f"ckpt_{name}" / "huggingface"))
    assert hf.config.tie_word_embeddings == CASES[name][1]
    after = MegatronEngine(hf, device=torch.device("cpu"), tp=1, key="tp").forward(
        _batch(hf.config.vocab_size), LogProbs(0.8), MicroBatching(size=2))["log_probs"]
    assert torch.allclose(after[mask], two["after"][mask], atol=1e-5)


def test_dist_checkpointing_writes_the_hf_weights_once_and_later_starts_read_them_at_any_layout(runs, tmp_path):
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm
    from rlcamp.models.tiny import build_tiny_model

    root, paths = runs
    folder = root / "dist" / "rlcamp-Qwen2ForCausalLM"
    assert (folder / "rlcamp.json").exists() and (folder / "sharded" / ".metadata").exists()
    batch, micro = _batch(10), MicroBatching(size=2)
    want = MegatronEngine(load_causal_lm(paths[("qwen2", True)]), device=torch.device("cpu"), tp=1,
                          key="tp").forward(batch, LogProbs(0.8), micro)["log_probs"]
    # another model of the same shape (other random weights, in bf16 like a reference) starts from it
    other = build_tiny_model(tmp_path / "other", "qwen2", seed=1, num_hidden_layers=4)
    model = load_causal_lm(str(other))
    before = MegatronEngine(model, device=torch.device("cpu"), tp=1, key="tp").forward(batch, LogProbs(0.8), micro)
    assert not torch.allclose(before["log_probs"], want, atol=1e-3)
    got = MegatronEngine(load_causal_lm(str(other)), device=torch.device("cpu"), tp=1, key="tp",
                         dist_checkpoint=str(root / "dist")).forward(batch, LogProbs(0.8), micro)["log_probs"]
    mask = batch["response_mask"].bool()
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    ref = MegatronEngine(load_causal_lm(str(other), dtype=torch.bfloat16), device=torch.device("cpu"), tp=1,
                         key="tp", dist_checkpoint=str(root / "dist"))
    assert torch.allclose(ref.forward(batch, LogProbs(0.8), micro)["log_probs"][mask], want[mask], atol=0.1)
    # a megatron-core checkpoint (verl's converter writes one) is not read as rlcamp's
    mcore = tmp_path / "mcore"
    mcore.mkdir()
    (mcore / "latest_checkpointed_iteration.txt").write_text("0")
    with pytest.raises(RuntimeError, match="holds a megatron-core checkpoint"):
        MegatronEngine(load_causal_lm(str(other)), device=torch.device("cpu"), tp=1,
                       key="actor_rollout_ref.actor.megatron.tensor_model_parallel_size", dist_checkpoint=str(mcore))


def test_layers_are_cut_as_megatron_cuts_them():
    from rlcamp.engines.pipeline import layer_bounds

    assert layer_bounds(27, 2, last=13) == [(0, 14), (14, 27)]  # Moonlight's num_layers_in_last_pipeline_stage
    assert layer_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert layer_bounds(8, 4, first=1, last=1) == [(0, 1), (1, 4), (4, 7), (7, 8)]
    with pytest.raises(ValueError, match="pipeline_model_parallel_size: 2 decoder layers cannot be cut into 4"):
        layer_bounds(2, 4, key="pipeline_model_parallel_size")


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_CASES)
def test_four_processes_tp_x_pp_and_pp_x_dp_train_as_one(tmp_path, name):
    paths = _spawn(tmp_path, {name: SLOW_CASES[name]}, 4)
    one = _steps(paths, SLOW_CASES[name], {})
    _compare(_merged(tmp_path, name, 4), one)
