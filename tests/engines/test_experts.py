"""strategy=megatron's expert parallelism (``engines.experts``): a Qwen2-MoE and a DeepSeek-V3 tiny model
with their experts split over 2 spawned gloo ranks (each rank its own half of the batch, as data
parallelism hands it out) against one process: log-probs, the loss with the router's load-balancing
loss, every gradient, the norm, the step, and an EP=2 checkpoint that resumes in one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rlcamp.config.schema import OptimConfig
from rlcamp.engines.base import LogProbs, MicroBatching
from tests.conftest import free_port
from tests.engines.test_megatron import _batch

FAMILIES = ("qwen2_moe", "deepseek_v3")


def _loss(outputs, part, norm):
    mask = part["response_mask"].float()
    loss = -(outputs["log_probs"] * part["advantages"] * mask).sum() / norm["global_tokens"]
    if outputs["aux_loss"] is not None:  # weighted by the micro batch's share of tokens, as the actor does
        loss = loss + 0.5 * outputs["aux_loss"] * mask.sum() / norm["global_tokens"]
    return loss, loss


def _steps(path: str, ep: int, folder: Path | None = None, resume: Path | None = None, pp: int = 1,
           packed: bool = False, rows: int = 1, tp: int = 1, etp: int | None = None) -> dict:
    """``rows``: a micro batch's rows (1: the router loss is per row, so data-parallel halves agree with
    one process; pipeline runs take 2, padded or packed, and so does their one-process reference)."""
    from rlcamp.engines.experts import expert_modules
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm

    engine = MegatronEngine(load_causal_lm(path), device=torch.device("cpu"), tp=tp, ep=ep, etp=etp, pp=pp, key="tp",
                            optim=OptimConfig(lr=1e-2), grad_clip=1e9, remove_padding=packed,
                            distributed_optimizer=True)  # as workers build it (verl's default); at DP > 1 it splits
    micro = MicroBatching(size=rows)
    batch = _batch(engine.model.config.vocab_size)
    if engine.mesh.dp_size > 1:
        batch = batch.index(torch.arange(len(batch)).chunk(engine.mesh.dp_size)[engine.mesh.dp_rank])
    out = {}
    if resume is not None:
        engine.load(resume, ["model", "optimizer", "extra"], {}, "actor")
    else:
        out["log_probs"] = engine.forward(batch, LogProbs(0.8), micro)["log_probs"]
        out["loss"] = engine.forward_backward(batch, LogProbs(0.8), _loss, micro, loss_scale_factor=4,
                                              accumulation=1)["loss"]
        experts = {id(p) for m in expert_modules(engine.model) for p in m.parameters()}
        out["grads"] = {engine.param_names[id(p)]: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor")
                                                    else p.grad).clone() for p in engine.params if p.grad is not None}
        out["expert_names"] = {engine.param_names[i] for i in experts if i in engine.param_names}
        out["grad_norm"] = engine.optimizer_step()
        engine.scheduler_step()
        out["after"] = engine.forward(batch, LogProbs(0.8), micro)["log_probs"]
        if folder is not None:
            engine.save(folder, ["model", "optimizer", "extra", "hf_model"], {}, None)
    engine.forward_backward(batch, LogProbs(0.8), _loss, micro, loss_scale_factor=4, accumulation=1)
    out["next_grad_norm"] = engine.optimizer_step()
    out["next"] = engine.forward(batch, LogProbs(0.8), micro)["log_probs"]
    out["returns"] = engine.mesh.returns_outputs
    return out


def _run(rank: int, world: int, port: int, paths: dict, root: str) -> None:
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    for family, path in paths.items():
        torch.save(_steps(path, ep=2, folder=Path(root) / f"ckpt_{family}"), Path(root) / f"{family}_rank{rank}.pt")
    # the router loss across pipeline stages: each stage adds its layers' sums, the last turns them into the loss
    for layout in ("padded", "packed"):
        out = _steps(paths["qwen2_moe_4"], ep=1, pp=2, packed=layout == "packed", rows=2)
        torch.save(out, Path(root) / f"pp2_{layout}_rank{rank}.pt")
        # tensor parallel: the experts split over the group by expert (each rank routing its share of the
        # rows), the shared expert and attention by width; DeepSeek-V3: latent attention by heads, and the
        # experts over an expert group of EP 2 x ETP 1 (Moonlight's layout folded to 2 ranks)
        out = _steps(paths["qwen2_moe_4"], ep=1, tp=2, packed=layout == "packed", rows=2)
        torch.save(out, Path(root) / f"tp2_{layout}_rank{rank}.pt")
        out = _steps(paths["deepseek_v3"], ep=2, etp=1, tp=2, packed=layout == "packed", rows=2)
        torch.save(out, Path(root) / f"deepseek_tp2_{layout}_rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from rlcamp.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("experts")
    paths = {f: str(build_tiny_model(root / f, f)) for f in FAMILIES}
    paths["qwen2_moe_4"] = str(build_tiny_model(root / "qwen2_moe_4", "qwen2_moe", num_hidden_layers=4))
    mp.spawn(_run, args=(2, free_port(), paths, str(root)), nprocs=2, join=True)
    return root, paths


def _merged(root: Path, family: str) -> dict:
    """Outputs of both data-parallel halves in order; gradients before the step's sums: the non-expert ones
    add up over the ranks, the experts' (gathered whole) already hold every rank's tokens."""
    ranks = [torch.load(root / f"{family}_rank{r}.pt", weights_only=False) for r in range(2)]
    out = dict(ranks[0])
    for key in ("log_probs", "after", "next"):
        out[key] = torch.cat([r[key] for r in ranks])
    out["grads"] = {n: g if n in ranks[0]["expert_names"] else g + ranks[1]["grads"][n]
                    for n, g in ranks[0]["grads"].items()}
    return out


def _same_steps(two: dict, one: dict) -> None:
    """A split run's results against one process's: outputs before, after and at the next step, the loss,
    both gradient norms, every gradient."""
    mask = _batch(10)["response_mask"].bool()
    for key in ("log_probs", "after", "next"):
        assert torch.allclose(two[key][mask], one[key][mask], atol=1e-5), key
    assert float(two["loss"]) == pytest.approx(float(one["loss"]), abs=1e-6)
    assert float(two["grad_norm"]) == pytest.approx(float(one["grad_norm"]), rel=1e-5)
    assert float(two["next_grad_norm"]) == pytest.approx(float(one["next_grad_norm"]), rel=1e-5)
    assert two["grads"].keys() == one["grads"].keys()
    for name, g in one["grads"].items():
        assert torch.allclose(two["grads"][name], g, atol=1e-6, rtol=1e-4), name


# qwen2_moe_4 (4 layers): in some layer a rank receives no token for its experts and still takes part
# in the backward exchange (it hung before)
@pytest.mark.parametrize("family", [*FAMILIES, "qwen2_moe_4"])
def test_two_expert_parallel_ranks_train_as_one_process(runs, family):
    root, paths = runs
    two, one = _merged(root, family), _steps(paths[family], ep=1)
    assert two["expert_names"], "the model has split experts"
    _same_steps(two, one)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_ep2_checkpoint_resumes_in_one_process(runs, family):
    root, paths = runs
    two = _merged(root, family)
    with pytest.warns(UserWarning, match="random generators start afresh"):
        resumed = _steps(paths[family], ep=1, resume=root / f"ckpt_{family}")
    mask = _batch(10)["response_mask"].bool()
    assert float(resumed["next_grad_norm"]) == pytest.approx(float(two["next_grad_norm"]), rel=1e-5)
    assert torch.allclose(resumed["next"][mask], two["next"][mask], atol=1e-5)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_two_pipeline_stages_carry_the_router_loss_as_one_process(runs, layout):
    """Qwen2-MoE at PP=2: the first stage's router sums travel with the hidden states; the loss with the
    router loss, every gradient of both stages, the norm and the step equal one process's."""
    root, paths = runs
    ranks = [torch.load(root / f"pp2_{layout}_rank{r}.pt", weights_only=False) for r in range(2)]
    two = dict(next(r for r in ranks if r["returns"]))
    two["grads"] = {}
    for r in ranks:  # the stages' own gradients; a tied weight's two halves add up
        for name, g in r["grads"].items():
            two["grads"][name] = two["grads"][name] + g if name in two["grads"] else g
    one = _steps(paths["qwen2_moe_4"], ep=1, packed=layout == "packed", rows=2)
    _same_steps(two, one)


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("family", ["qwen2_moe_4", "deepseek_v3"])
def test_two_tensor_parallel_ranks_split_the_experts_as_one_process(runs, layout, family):
    """Qwen2-MoE at TP=2 (Qwen1.5-MoE's work order splits it so) and DeepSeek-V3 at TP=2 x EP=2 (Moonlight's):
    each rank routes half the rows to the experts of both ranks; log-probs, the loss (with Qwen2-MoE's router
    loss), every (gathered) gradient, the norm and the step equal one process's, on both ranks."""
    root, paths = runs
    one = _steps(paths[family], ep=1, packed=layout == "packed", rows=2)
    for rank in range(2):
        two = torch.load(root / f"{'tp2' if family == 'qwen2_moe_4' else 'deepseek_tp2'}_{layout}_rank{rank}.pt",
                         weights_only=False)
        _same_steps(two, one)


def _run_ep_pp(rank: int, world: int, port: int, path: str, root: str) -> None:
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    torch.save(_steps(path, ep=2, pp=2), Path(root) / f"ep2pp2_rank{rank}.pt")


@pytest.mark.slow
def test_four_processes_expert_x_pipeline_parallel_train_as_one(runs, tmp_path):
    """EP=2 x PP=2 on 4 processes (each stage's experts split over its 2 data-parallel ranks) against one
    process: outputs of both data-parallel halves, the loss with the router loss, every gradient, the norm."""
    _, paths = runs
    mp.spawn(_run_ep_pp, args=(4, free_port(), paths["qwen2_moe_4"], str(tmp_path)), nprocs=4, join=True)
    ranks = [torch.load(tmp_path / f"ep2pp2_rank{r}.pt", weights_only=False) for r in range(4)]
    returning = [r for r in ranks if r["returns"]]  # the last stage's two data-parallel ranks, in order
    two = dict(returning[0])
    for key in ("log_probs", "after", "next"):
        two[key] = torch.cat([r[key] for r in returning])
    # before the step's sums: dense gradients add up over data-parallel halves and stages (a tied weight's
    # two halves too); experts come gathered whole from each stage's ranks, so once per stage (dp rank 0)
    two["grads"] = {}
    for rank, r in enumerate(ranks):
        for name, g in r["grads"].items():
            if name in r["expert_names"] and rank % 2:
                continue
            two["grads"][name] = two["grads"][name] + g if name in two["grads"] else g
    _same_steps(two, _steps(paths["qwen2_moe_4"], ep=1))


def _run_tp_ep(rank: int, world: int, port: int, path: str, root: str) -> None:
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    torch.save(_steps(path, ep=4, etp=1, tp=2, rows=2), Path(root) / f"tp2ep4_rank{rank}.pt")


@pytest.mark.slow
def test_four_processes_tensor_x_expert_parallel_across_data_parallel_ranks_train_as_one(runs, tmp_path):
    """DeepSeek-V3 at TP=2 x DP=2 with its experts over all 4 ranks (EP=4, ETP=1: the expert group spans both
    data-parallel copies, whose tokens differ) against one process: outputs of both data-parallel halves,
    every gradient, the norm, the step."""
    _, paths = runs
    mp.spawn(_run_tp_ep, args=(4, free_port(), paths["deepseek_v3"], str(tmp_path)), nprocs=4, join=True)
    ranks = [torch.load(tmp_path / f"tp2ep4_rank{r}.pt", weights_only=False) for r in range(4)]
    returning = [ranks[0], ranks[2]]  # tensor-parallel rank 0 of each data-parallel copy
    assert [r["returns"] for r in ranks] == [True, False, True, False]
    two = dict(returning[0])
    for key in ("log_probs", "after", "next"):
        two[key] = torch.cat([r[key] for r in returning])
    # before the step's sums: each data-parallel copy holds its half's gradients (whole after gathering the
    # tensor-parallel slices); the experts come gathered whole from all four ranks already
    two["grads"] = {name: g if name in ranks[0]["expert_names"] else g + ranks[2]["grads"][name]
                    for name, g in ranks[0]["grads"].items()}
    _same_steps(two, _steps(paths["deepseek_v3"], ep=1, rows=2))


def test_the_router_loss_is_the_hf_models_own(tmp_path):
    """The engine's load-balancing loss of a micro batch equals the one transformers' forward returns."""
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.forward import sequence_inputs
    from rlcamp.models.loading import load_causal_lm
    from rlcamp.models.tiny import build_tiny_model

    model = load_causal_lm(str(build_tiny_model(tmp_path / "m", "qwen2_moe")))
    batch = _batch(model.config.vocab_size)
    seen = []
    engine = MegatronEngine(model, device=torch.device("cpu"), tp=1, key="tp", optim=OptimConfig(lr=0.0))
    engine.forward_backward(batch, LogProbs(), lambda o, p, n: (seen.append(o["aux_loss"]) or o["log_probs"].sum(),
                                                                 torch.zeros(())),
                            MicroBatching(size=4), loss_scale_factor=1, accumulation=1)
    inputs = sequence_inputs(batch["input_ids"], batch["attention_mask"], batch["responses"], batch["response_mask"])
    want = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
                 use_cache=False).aux_loss
    assert want is not None and float(seen[0]) == pytest.approx(float(want), rel=1e-6)


def test_what_cannot_be_split_by_experts_is_named():
    from rlcamp.engines.experts import ep_problems
    from rlcamp.models.tiny import _family_config

    config = _family_config("qwen2_moe", 300, 0, 1)
    assert ep_problems(config, 3, 3, "k") == ["k splits the model's 4 experts 3 ways; choose sizes whose product "
                                              "divides the expert count"]
    assert ep_problems(config, 2, 3, "k") == ["k: an expert group of 2 ranks does not divide the 3 ranks (tensor x "
                                              "data parallel) of a pipeline stage the experts are split over"]
    assert "has no experts" in ep_problems(_family_config("qwen2", 300, 0, 1), 2, 2, "k")[0]
