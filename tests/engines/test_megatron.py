"""strategy=megatron's engine split over 2 tensor-parallel ranks (2 spawned gloo processes) against one
process: log-probs, entropy and values, the loss, the full gradient and its norm, the step, and a
checkpoint written at TP=2 that resumes at TP=1 and takes the same next step."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from rlcamp.batch import Batch
from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, MicroBatching, Values
from tests.conftest import free_port

FAMILIES = ("qwen2", "llama")
MICRO = MicroBatching(size=2)


def _batch(vocab: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompt_mask = torch.ones(4, 5, dtype=torch.long)
    prompt_mask[::2, :2] = 0
    response_mask = torch.ones(4, 4, dtype=torch.long)
    response_mask[1, 2:] = 0
    return Batch({"input_ids": torch.randint(3, vocab, (4, 5), generator=g), "attention_mask": prompt_mask,
                  "responses": torch.randint(3, vocab, (4, 4), generator=g), "response_mask": response_mask, "loss_mask": response_mask,
                  "advantages": torch.randn(4, 4, generator=g) * response_mask})


def _loss(outputs, part, norm):
    mask = part["response_mask"].float()
    loss = -(outputs["log_probs"] * part["advantages"] * mask).sum() / norm["global_tokens"]
    if outputs.get("entropy") is not None:
        loss = loss - 0.01 * (outputs["entropy"] * mask).sum() / norm["global_tokens"]
    return loss, loss


def _value_loss(outputs, part, norm):
    loss = ((outputs["values"] - part["advantages"]) ** 2 * part["response_mask"]).sum() / norm["global_tokens"]
    return loss, loss


def _full_grads(model) -> dict[str, torch.Tensor]:
    return {n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
            for n, p in model.named_parameters() if p.grad is not None}


def _steps(model, critic, tp: int, folder=None, resume=None, sp: bool = False, cp: int = 1,
           packed: bool = False, offload: bool = False, zero: bool = False, fsdp: bool = False) -> dict:
    """What both layouts must agree on: outputs, loss, gradients and norm of one step, outputs after it,
    and (saving or resuming at ``folder`` / ``resume``) the next step. ``offload``: the weights and optimizer
    state go to host memory after every call (on the CPU too, here: their device storage really is freed)."""
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.engines.offload import local_tensors

    out = {"held_after_offload": []}
    actor = MegatronEngine(model, device=torch.device("cpu"), tp=tp, key="tp", optim=OptimConfig(lr=1e-2),
                           grad_clip=1e9, sequence_parallel=sp, cp=cp, remove_padding=packed, param_offload=offload,
                           optimizer_offload=offload, distributed_optimizer=zero, fsdp=fsdp)

    def used(result):
        if offload:  # between uses no parameter holds memory
            actor.offload()
            out["held_after_offload"].append(sum(t.untyped_storage().nbytes() for t in local_tensors(model)))
        return result

    batch = _batch(model.config.vocab_size)
    # with sequence parallelism the norms are DTensors over the group (they see 1/TP of the sequence)
    out["norm_split"] = hasattr(model.get_decoder().layers[0].input_layernorm.weight, "placements")
    if resume is not None:
        actor.load(resume, ["model", "optimizer", "extra"], {}, "actor")
    else:
        first = used(actor.forward(batch, LogProbs(0.8, entropy=True), MICRO))
        out["log_probs"], out["entropy"] = first["log_probs"], first["entropy"]
        step = actor.forward_backward(batch, LogProbs(0.8, entropy=True), _loss, MICRO, loss_scale_factor=4,
                                      accumulation=2)
        out["loss"] = step["loss"]
        out["grads"] = _full_grads(model)
        out["grad_norm"] = used(actor.optimizer_step())
        actor.scheduler_step()
        out["after"] = used(actor.forward(batch, LogProbs(0.8), MICRO)["log_probs"])
        if folder is not None:
            used(actor.save(folder, ["model", "optimizer", "extra", "hf_model"], {}, None))
    actor.forward_backward(batch, LogProbs(0.8), _loss, MICRO, loss_scale_factor=4, accumulation=2)
    out["next_grad_norm"] = used(actor.optimizer_step())
    out["state_numel"] = sum(v.numel() for st in actor.optimizer.state.values() for k, v in st.items() if k == "exp_avg")
    out["next"] = used(actor.forward(batch, LogProbs(0.8), MICRO)["log_probs"])
    if critic is not None:
        engine = MegatronEngine(critic, device=torch.device("cpu"), tp=tp, key="tp", optim=OptimConfig(lr=1e-2),
                                sequence_parallel=sp, cp=cp, remove_padding=packed, fsdp=fsdp)
        out["values"] = engine.forward(batch, Values(), MICRO)["values"]
        engine.forward_backward(batch, Values(), _value_loss, MICRO, loss_scale_factor=4, accumulation=1)
        out["critic_grads"] = _full_grads(critic)
    if fsdp:  # this rank's share of the decoder layers' weights
        out["layer_numel"] = sum((p.to_local() if hasattr(p, "to_local") else p).numel()
                                 for n, p in model.named_parameters() if ".layers." in n)
    return out


def _run(rank: int, world: int, port: int, paths: dict, root: str) -> None:
    from rlcamp.models.loading import load_causal_lm, load_critic
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    from pathlib import Path

    for family, path in paths.items():
        out = _steps(load_causal_lm(path), load_critic(path), tp=2, folder=Path(root) / f"ckpt_{family}")
        if rank == 0:
            torch.save(out, Path(root) / f"tp2_{family}.pt")
        # sequence parallel: the residual stream split over the ranks between TP regions (9 tokens: uneven parts)
        out = _steps(load_causal_lm(path), load_critic(path), tp=2, sp=True)
        if rank == 0:
            torch.save(out, Path(root) / f"tp2sp_{family}.pt")
        # param_offload + optimizer_offload between every use (a second checkpoint: saved with the weights away)
        out = _steps(load_causal_lm(path), load_critic(path), tp=2, offload=True,
                     folder=Path(root) / f"ckpt_offload_{family}")
        if rank == 0:
            torch.save(out, Path(root) / f"tp2offload_{family}.pt")
        # data parallel 2 (both ranks see the same batch) with the distributed optimizer: each steps half
        out = _steps(load_causal_lm(path), load_critic(path), tp=1, zero=True, folder=Path(root) / f"ckpt_zero_{family}")
        torch.save(out, Path(root) / f"dp2zero_{family}_rank{rank}.pt")
        out = _steps(load_causal_lm(path), None, tp=1, zero=True, resume=Path(root) / f"ckpt_zero_{family}")
        torch.save(out, Path(root) / f"dp2zero_resumed_{family}_rank{rank}.pt")
        # ... and the decoder layers split over the two data-parallel ranks (FSDP2), as workers build it by default
        out = _steps(load_causal_lm(path), load_critic(path), tp=1, zero=True, fsdp=True,
                     folder=Path(root) / f"ckpt_fsdp_{family}")
        torch.save(out, Path(root) / f"dp2fsdp_{family}_rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from rlcamp.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("megatron")
    paths = {f: str(build_tiny_model(root / f, f)) for f in FAMILIES}
    mp.spawn(_run, args=(2, free_port(), paths, str(root)), nprocs=2, join=True)
    return root, paths


@pytest.mark.parametrize("layout", ["tp2", "tp2sp", "tp2offload"])
@pytest.mark.parametrize("family", FAMILIES)
def test_two_tensor_parallel_ranks_train_as_one_process(runs, family, layout):
    from rlcamp.models.loading import load_causal_lm, load_critic

    root, paths = runs
    two = torch.load(root / f"{layout}_{family}.pt", weights_only=False)
    assert two["norm_split"] == (layout == "tp2sp")
    assert two["held_after_offload"] == ([0] * 6 if layout == "tp2offload" else [])
    one = _steps(load_causal_lm(paths[family]), load_critic(paths[family]), tp=1)
    mask = _batch(10)["response_mask"].bool()
    for key in ("log_probs", "entropy", "after", "next", "values"):
        assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
    assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
    assert float(two["grad_norm"]) == pytest.approx(float(one["grad_norm"]), rel=1e-5)
    for grads in ("grads", "critic_grads"):
        assert two[grads].keys() == one[grads].keys()
        for name, g in one[grads].items():
            assert torch.allclose(two[grads][name], g, atol=1e-6, rtol=1e-4), (grads, name)


def _run_cp(rank: int, world: int, port: int, paths: dict, root: str) -> None:
    from pathlib import Path

    from rlcamp.models.loading import load_causal_lm, load_critic
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    for family, path in paths.items():
        for packed in (False, True):
            out = _steps(load_causal_lm(path), load_critic(path), tp=1, cp=2, packed=packed)
            torch.save(out, Path(root) / f"cp2_{family}_{'packed' if packed else 'padded'}_rank{rank}.pt")


@pytest.fixture(scope="module")
def cp_runs(tmp_path_factory):
    from rlcamp.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("context_parallel")
    # a window shorter than the sequences (9 tokens), so that it masks keys gathered from the other rank
    paths = {f: str(build_tiny_model(root / f, f, **({"sliding_window": 3} if f == "gemma2" else {})))
             for f in CP_FAMILIES}
    mp.spawn(_run_cp, args=(2, free_port(), paths, str(root)), nprocs=2, join=True)
    return root, paths


# Gemma 2: soft-capped logits and sliding-window layers under the gathered K/V
CP_FAMILIES = ("qwen2", "gemma2")


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("family", CP_FAMILIES)
def test_two_context_parallel_ranks_train_as_one_process(cp_runs, family, layout):
    """CP=2: each rank runs half of every sequence's columns and attends to K and V gathered whole; log-probs,
    entropy and values, the loss, the gradients (each rank holds its columns' share: they add up), the norm
    and the step equal one process's, actor and critic."""
    from rlcamp.models.loading import load_causal_lm, load_critic

    root, paths = cp_runs
    ranks = [torch.load(root / f"cp2_{family}_{layout}_rank{r}.pt", weights_only=False) for r in range(2)]
    one = _steps(load_causal_lm(paths[family]), load_critic(paths[family]), tp=1, packed=layout == "packed")
    mask = _batch(10)["response_mask"].bool()
    for two in ranks:  # every rank of the group holds the whole outputs and the same loss
        for key in ("log_probs", "entropy", "after", "next", "values"):
            assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
        assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
        assert float(two["grad_norm"]) == pytest.approx(float(one["grad_norm"]), rel=1e-5)
    for grads in ("grads", "critic_grads"):
        assert ranks[0][grads].keys() == one[grads].keys()
        for name, g in one[grads].items():
            assert torch.allclose(ranks[0][grads][name] + ranks[1][grads][name], g, atol=1e-6, rtol=1e-4), \
                (grads, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tp2_checkpoint_resumes_at_tp1_with_the_same_next_step(runs, family):
    from rlcamp.models.loading import load_causal_lm

    root, paths = runs
    two = torch.load(root / f"tp2_{family}.pt", weights_only=False)
    with pytest.warns(UserWarning, match="random generators start afresh"):
        resumed = _steps(load_causal_lm(paths[family]), None, tp=1, resume=root / f"ckpt_{family}")
    mask = _batch(10)["response_mask"].bool()
    assert float(resumed["next_grad_norm"]) == pytest.approx(float(two["next_grad_norm"]), rel=1e-5)
    assert torch.allclose(resumed["next"][mask], two["next"][mask], atol=1e-5)
    # the transformers folder holds the full weights: it loads as the model the TP=2 run had after its step
    hf = load_causal_lm(str(root / f"ckpt_{family}" / "huggingface"))
    from rlcamp.engines.megatron import MegatronEngine

    after = MegatronEngine(hf, device=torch.device("cpu"), tp=1, key="tp").forward(_batch(hf.config.vocab_size),
                                                                                  LogProbs(0.8), MICRO)["log_probs"]
    assert torch.allclose(after[mask], two["after"][mask], atol=1e-5)


def test_what_cannot_be_split_is_named():
    from rlcamp.engines.tensor_parallel import tp_problems
    from rlcamp.models.tiny import _family_config

    config = _family_config("qwen2", 301, 0, 1)
    problems = tp_problems(config, 2, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size")
    assert problems == ["actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2 does not divide the "
                        "model's vocab_size=301; choose a divisor of it"]
    assert "not model_type 'gemma2'" in tp_problems(_family_config("gemma2", 300, 0, 1), 2, "k")[0]


def test_override_transformer_config_recompute_and_dropout_reach_the_hf_layers(tmp_path):
    """recompute_method=block checkpoints the first recompute_num_layers of each pipeline stage, uniform (and
    selective) every layer; attention_dropout sets every attention's probability; bad values are named."""
    from dataclasses import replace

    from rlcamp.config.blockers import _transformer_override_problems
    from rlcamp.config.schema import MegatronConfig
    from rlcamp.engines.megatron import apply_transformer_overrides
    from rlcamp.models.loading import load_causal_lm
    from rlcamp.models.tiny import build_tiny_model

    path = build_tiny_model(tmp_path / "m", "llama", num_hidden_layers=5)

    def checkpointed(pp=1, **o):
        model = load_causal_lm(path)
        cfg = replace(MegatronConfig(), pipeline_model_parallel_size=pp,
                      override_transformer_config={**MegatronConfig().override_transformer_config, **o})
        kept = apply_transformer_overrides(model, cfg)
        flags = [i for i, layer in enumerate(model.model.layers) if layer.gradient_checkpointing]
        assert flags == kept
        return kept, model

    assert checkpointed()[0] == []
    assert checkpointed(recompute_granularity="selective")[0] == [0, 1, 2, 3, 4]
    assert checkpointed(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=2)[0] == \
        [0, 1, 2, 3, 4]
    # stages of 3 and 2 layers: the first of each
    assert checkpointed(2, recompute_granularity="full", recompute_method="block", recompute_num_layers=1)[0] == [0, 3]
    assert checkpointed(2, recompute_granularity="full", recompute_method="block", recompute_num_layers=0)[0] == []
    _, model = checkpointed(attention_dropout=0.25)
    assert {layer.self_attn.attention_dropout for layer in model.model.layers} == {0.25}
    text = "\n".join(_transformer_override_problems("k", {"recompute_granularity": "full", "recompute_method": "block",
                                                          "attention_dropout": 1.5, "hidden_dropout": 0.1}))
    assert "k.recompute_method=block needs recompute_num_layers" in text
    assert "k.attention_dropout=1.5: a probability in [0, 1)" in text and "k.hidden_dropout=0.1" in text
    assert "read with recompute_granularity=full only" in "\n".join(
        _transformer_override_problems("k", {"recompute_method": "uniform"}))
    assert _transformer_override_problems("k", {"recompute_granularity": "full", "recompute_method": "block",
                                                "recompute_num_layers": 2, "hidden_dropout": 0.0}) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_two_data_parallel_ranks_with_the_distributed_optimizer_train_as_one_process(runs, family):
    """use_distributed_optimizer at DP=2: each rank keeps the optimizer state of half of every tensor, steps it,
    and the halves are gathered: outputs, loss, norm, the step and the next step equal one process (the two
    ranks' gradients, each over half the tokens' weight, add up to its); the checkpoint holds whole state and
    resumes in one process, and at DP=2 with the distributed optimizer (each rank takes its half back), with the
    same next step."""
    from rlcamp.models.loading import load_causal_lm, load_critic

    root, paths = runs
    ranks = [torch.load(root / f"dp2zero_{family}_rank{r}.pt", weights_only=False) for r in range(2)]
    one = _steps(load_causal_lm(paths[family]), load_critic(paths[family]), tp=1)
    mask = _batch(10)["response_mask"].bool()
    for two in ranks:
        for key in ("log_probs", "entropy", "after", "next", "values"):
            assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
        assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
        for key in ("grad_norm", "next_grad_norm"):
            assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-5), key
        assert one["state_numel"] / 2 <= two["state_numel"] <= one["state_numel"] / 2 + 64  # half (+ rounding)
    for name, g in one["grads"].items():
        assert torch.allclose(ranks[0]["grads"][name] + ranks[1]["grads"][name], g, atol=1e-6, rtol=1e-4), name
    with pytest.warns(UserWarning, match="random generators start afresh"):
        resumed = _steps(load_causal_lm(paths[family]), None, tp=1, resume=root / f"ckpt_zero_{family}")
    again = [torch.load(root / f"dp2zero_resumed_{family}_rank{r}.pt", weights_only=False) for r in range(2)]
    for resumed in [resumed, *again]:
        assert float(resumed["next_grad_norm"]) == pytest.approx(float(ranks[0]["next_grad_norm"]), rel=1e-5)
        assert torch.allclose(resumed["next"][mask], ranks[0]["next"][mask], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_layers_split_over_data_parallel_ranks_train_as_one_process(runs, family):
    """FSDP2 over the data-parallel dimension (with the distributed optimizer for the rest): each rank holds half
    of every decoder layer; outputs, loss, norms, the step, the next step and the critic's values equal one
    process, and the checkpoint resumes in one process with the same next step."""
    from rlcamp.models.loading import load_causal_lm, load_critic

    root, paths = runs
    ranks = [torch.load(root / f"dp2fsdp_{family}_rank{r}.pt", weights_only=False) for r in range(2)]
    one = _steps(load_causal_lm(paths[family]), load_critic(paths[family]), tp=1)
    whole = sum(p.numel() for n, p in load_causal_lm(paths[family]).named_parameters() if ".layers." in n)
    mask = _batch(10)["response_mask"].bool()
    for two in ranks:
        assert whole / 2 <= two["layer_numel"] <= whole / 2 + 64
        for key in ("log_probs", "entropy", "after", "next", "values"):
            assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
        assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
        for key in ("grad_norm", "next_grad_norm"):
            assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-5), key
    with pytest.warns(UserWarning, match="random generators start afresh"):
        resumed = _steps(load_causal_lm(paths[family]), None, tp=1, resume=root / f"ckpt_fsdp_{family}")
    assert float(resumed["next_grad_norm"]) == pytest.approx(float(ranks[0]["next_grad_norm"]), rel=1e-5)
    assert torch.allclose(resumed["next"][mask], ranks[0]["next"][mask], atol=1e-5)
