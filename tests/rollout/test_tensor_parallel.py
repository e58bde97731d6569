"""rlcamp's engine split over 2 tensor-parallel ranks (2 spawned gloo processes) gives the one-process
tokens and sampling log-probs, for dense and MoE families: its own split copy, and decoding directly on
the Megatron engine's tensor-parallel shards of the actor."""

from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp

from rlcamp.models.tiny import build_tiny_model
from tests.conftest import free_port

FAMILIES = ("qwen2", "llama", "qwen3", "gemma2", "qwen2_moe", "deepseek_v3")
MEGATRON_FAMILIES = ("qwen2", "llama", "qwen3", "qwen2_moe", "deepseek_v3")  # engines.tensor_parallel.FAMILIES
CASES = (("greedy", {"max_new_tokens": 6, "do_sample": False}),
         ("sampled", {"max_new_tokens": 6, "temperature": 0.9, "top_p": 0.95, "top_k": 20}))


def _prompts(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (6, 5), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[4, :1] = 0
    return ids, mask


def _run(rank: int, world: int, port: int, models: dict, out: str) -> None:
    from rlcamp.config.schema import OptimConfig
    from rlcamp.engines.megatron import MegatronEngine
    from rlcamp.models.loading import load_causal_lm
    from rlcamp.rollout.hf import HFRollout
    from rlcamp.rollout.tensor_parallel import TensorParallelRollout, TrainerShardsRollout
    from rlcamp.utils.dist import init_distributed

    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    results = {}
    for family, path in models.items():
        source = load_causal_lm(path)
        tp = TensorParallelRollout(source, 2, [], source.config.pad_token_id, torch.float32, torch.device("cpu"))
        tp.load_weights(source.state_dict())
        shard = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                    for n, p in tp.model.named_parameters() if ".layers." in n)
        whole = sum(p.numel() for n, p in source.named_parameters() if ".layers." in n)
        ids, mask = _prompts(source.config.vocab_size)
        mine = slice(3 * rank, 3 * rank + 3)  # this rank's share of the prompts
        reference = HFRollout(source, [], source.config.pad_token_id)
        results[family] = {"shard_fraction": shard / whole, **_compare(tp, reference, ids, mask, mine)}
        if family in MEGATRON_FAMILIES:  # decode on the trainer's own shards: no copy
            actor = load_causal_lm(path)
            MegatronEngine(actor, device=torch.device("cpu"), tp=2, key="tp", optim=OptimConfig(lr=1e-2))  # splits it
            shared = TrainerShardsRollout(actor, 2, [], source.config.pad_token_id, torch.float32, torch.device("cpu"))
            results[f"{family}-shards"] = _compare(shared, reference, ids, mask, mine)
            if family == "qwen2":  # rollout.dtype bf16 over fp32 trained weights: autocast, as one process does it
                shared.dtype = torch.bfloat16
                bf16 = HFRollout(source, [], source.config.pad_token_id, dtype=torch.bfloat16)
                results["qwen2-shards-bf16"] = _compare(shared, bf16, ids, mask, mine)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


def _compare(rollout, reference, ids, mask, mine) -> dict:
    from rlcamp.rollout.hf import SamplingParams

    case = {}
    for name, params in CASES:
        params = SamplingParams(**params)
        got = rollout.generate(ids[mine], mask[mine], params, torch.Generator().manual_seed(7))
        want = reference.generate(ids, mask, params, torch.Generator().manual_seed(7))  # the whole group at once
        case[name] = {"tokens_equal": torch.equal(got["responses"], want["responses"][mine]),
                      "max_log_prob_diff": (got["rollout_log_probs"] - want["rollout_log_probs"][mine]).abs().max().item()}
    return case


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    models = {f: str(build_tiny_model(root / f, f)) for f in FAMILIES}
    out = str(root / "out")
    mp.spawn(_run, args=(2, free_port(), models, out), nprocs=2, join=True)
    return [json.loads(open(f"{out}.{r}").read()) for r in range(2)]


@pytest.mark.parametrize("family", FAMILIES)
def test_two_tensor_parallel_ranks_decode_as_one_process(results, family):
    for rank in range(2):
        case = results[rank][family]
        # each rank holds about half of every decoder layer (latent attention: its low-rank projections whole)
        assert 0.4 < case["shard_fraction"] < (0.7 if family == "deepseek_v3" else 0.6), case
        for name, _ in CASES:
            assert case[name]["tokens_equal"], (rank, name, case)
            assert case[name]["max_log_prob_diff"] < 1e-5, (rank, name, case)


@pytest.mark.parametrize("family", [*MEGATRON_FAMILIES, "qwen2-bf16"])
def test_decoding_on_the_megatron_engines_shards_equals_one_process(results, family):
    """TrainerShardsRollout over MegatronEngine(tp=2)'s split actor gives the one-process tokens and log-probs; in bf16 over fp32 weights (autocast) the one-process autocast rollout's greedy
    tokens (bf16 rounding moves a sampled pick that falls near a bucket's edge)."""
    bf16 = family.endswith("-bf16")
    for rank in range(2):
        case = results[rank][f"{family.removesuffix('-bf16')}-shards{'-bf16' if bf16 else ''}"]
        for name in ("greedy",) if bf16 else ("greedy", "sampled"):
            assert case[name]["tokens_equal"], (rank, name, case)
            assert case[name]["max_log_prob_diff"] < (1e-2 if bf16 else 1e-5), (rank, name, case)


def test_what_cannot_be_split_is_named():
    from transformers import AutoConfig

    from rlcamp.rollout.tensor_parallel import tp_problems

    config = AutoConfig.for_model("qwen2", num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
    assert tp_problems(config, 2) == []
    (problem,) = tp_problems(config, 4)
    assert "does not divide the model's num_key_value_heads=2" in problem
    latent = AutoConfig.for_model("deepseek_v3", num_attention_heads=4, num_key_value_heads=1, intermediate_size=64,
                                  moe_intermediate_size=16)
    assert tp_problems(latent, 2) == []  # no grouped KV heads to divide: every query head gets its own keys
    assert "num_attention_heads=4" in tp_problems(latent, 8)[0]
