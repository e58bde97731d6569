"""Ulysses sequence parallelism: 2 ranks sharing each sequence give the one-process outputs and gradients.

Each case runs in two spawned processes (gloo). Every rank also computes the plain forward, so the
comparison needs no file exchange: sharded log-probs/entropy/values must equal the plain ones, and
the parameter gradients summed over the group must equal the plain gradient of the same loss.
"""

import json

import pytest
import torch
import torch.multiprocessing as mp

from rlcamp.models.tiny import build_tiny_model
from rlcamp.utils.dist import free_port

CASES = [  # (model, remove_padding)
    ("qwen2", False),
    ("qwen2", True),
    ("qwen2_kv1", False),  # fewer KV heads than ranks: repeated before the all-to-all
    ("llama", True),
    ("gemma2", False),  # logit soft-capping and a sliding window shorter than the sequence (4 of 13 tokens)
    ("gemma2", True),
    ("deepseek_v3", True),  # multi-head latent attention: q and v head sizes differ
]


def _inputs(vocab: int):
    from rlcamp.models.forward import sequence_inputs

    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (3, 7), generator=g)
    prompt_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7, [0, 1, 1, 1, 1, 1, 1]])
    responses = torch.randint(3, vocab, (3, 6), generator=g)
    response_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    return sequence_inputs(prompts, prompt_mask, responses, response_mask), response_mask.float()


def _run(rank: int, world: int, port: int, models: dict, out: str) -> None:
    import copy

    from rlcamp.models import ulysses
    from rlcamp.models.forward import actor_forward, critic_forward
    from rlcamp.models.loading import load_causal_lm, load_critic
    from rlcamp.utils.dist import init_distributed

    torch.manual_seed(0)
    init_distributed(rank, world, "127.0.0.1", port, "gloo", 120)
    sp = ulysses.setup(world)
    results = []
    for i, (name, remove_padding) in enumerate(CASES):
        plain = load_causal_lm(models[name])
        plain.train()  # dropout is 0 in these configs; train mode exercises the training path
        sharded = copy.deepcopy(plain)
        ulysses.install(sharded, sp, "actor_rollout_ref.actor.ulysses_sequence_parallel_size")
        inputs, mask = _inputs(plain.config.vocab_size)
        lp, ent, _ = actor_forward(plain, inputs, 0.7, True, remove_padding)
        lp_sp, ent_sp, _ = actor_forward(sharded, inputs, 0.7, True, remove_padding, sp=sp)
        weights = torch.arange(1, 7).float()  # a loss that weighs positions differently
        ((lp * weights * mask).sum() + (ent * mask).mean()).backward()
        ((lp_sp * weights * mask).sum() + (ent_sp * mask).mean()).backward()
        grad_diff = 0.0
        for p, q in zip(plain.parameters(), sharded.parameters()):
            if p.grad is None:
                continue
            summed = q.grad.clone() if q.grad is not None else torch.zeros_like(p.grad)
            torch.distributed.all_reduce(summed, group=sp.group)
            grad_diff = max(grad_diff, (summed - p.grad).abs().max().item() / (p.grad.abs().max().item() + 1e-6))
        results.append({"case": i, "lp": ((lp - lp_sp) * mask).abs().max().item(),
                        "ent": ((ent - ent_sp) * mask).abs().max().item(), "grad": grad_diff})
    critic = load_critic(models["qwen2"])
    torch.nn.init.normal_(critic.score.weight, std=0.5)  # the fresh head is zero: give the values something to say
    sharded = copy.deepcopy(critic)
    ulysses.install(sharded, sp, "critic.ulysses_sequence_parallel_size")
    inputs, mask = _inputs(critic.config.vocab_size)
    for remove_padding in (False, True):
        v, v_sp = critic_forward(critic, inputs, remove_padding), critic_forward(sharded, inputs, remove_padding, sp=sp)
        results.append({"case": f"critic packed={remove_padding}", "values": ((v - v_sp) * mask).abs().max().item()})
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def sp_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("ulysses")
    # gemma2's window of 4 masks inside the 13-token sequences (the tiny default, 64, would never mask)
    models = {family: str(build_tiny_model(root / family, family, **({"sliding_window": 4} if family == "gemma2" else {})))
              for family in ("qwen2", "llama", "gemma2", "deepseek_v3")}
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(models["qwen2"])
    config.num_key_value_heads = 1
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "qwen2_kv1")
    models["qwen2_kv1"] = str(root / "qwen2_kv1")
    mp.start_processes(_run, args=(2, free_port(), models, str(root)), nprocs=2, join=True, start_method="spawn")
    return [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{m}-packed={p}" for m, p in CASES])
def test_two_ranks_give_the_one_process_log_probs_and_gradients(sp_results, index):
    for rank in range(2):
        row = sp_results[rank][index]
        assert row["lp"] < 1e-5 and row["ent"] < 1e-5, (rank, row)
        assert row["grad"] < 1e-4, (rank, row)


def test_two_ranks_give_the_one_process_values(sp_results):
    for rank in range(2):
        for row in sp_results[rank][len(CASES):]:
            assert row["values"] < 1e-5, (rank, row)


def test_heads_that_do_not_split_are_refused(tmp_path):
    from rlcamp.models import ulysses
    from rlcamp.models.loading import load_causal_lm

    model = load_causal_lm(str(build_tiny_model(tmp_path / "m", "qwen2")))
    sp = ulysses.SequenceParallel(group=None, size=3, rank=0, dp_rank=0, dp_size=1)
    with pytest.raises(ValueError, match=r"critic.ulysses_sequence_parallel_size=3: .* 4 attention heads"):
        ulysses.install(model, sp, "critic.ulysses_sequence_parallel_size")
