"""The reward loop (reward_model.use_reward_loop=True): a served reward model scored by concurrent
workers, the same scores as the in-process path; a generative judge behind a chat endpoint."""

from __future__ import annotations

import pytest
import torch

from rlcamp.batch import Batch
from rlcamp.config import build_config
from rlcamp.models.tiny import build_tiny_model
from rlcamp.rewards.loop import RewardLoop, is_generative
from rlcamp.rewards.registry import get_reward_function
from rlcamp.workers.reward_model import RewardModelWorker


def _batch(tokenizer, n: int) -> Batch:
    responses = [tokenizer(f"#### {i + 1}", add_special_tokens=False)["input_ids"] for i in range(n)]
    width = max(map(len, responses)) + 2
    ids = torch.full((n, width), tokenizer.pad_token_id)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(responses):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    prompts = [[{"role": "user", "content": "What is " + "1 + " * i + f"{i}?"}] for i in range(n)]
    return Batch({"responses": ids, "response_mask": mask}, {"raw_prompt": prompts})


def test_the_loop_scores_as_the_in_process_reward_model(tmp_path):
    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    actor = build_tiny_model(tmp_path / "actor", "qwen2")
    line = [f"reward_model.model.path={rm}", "reward_model.enable=True", f"actor_rollout_ref.model.path={actor}",
            "reward_model.num_workers=3", "reward_model.rollout.max_num_seqs=4"]
    legacy = RewardModelWorker(build_config(line + ["reward_model.use_reward_loop=False"]).config, micro_batch=2)
    loop = RewardLoop(build_config(line).config, micro_batch=2)
    try:
        batch = _batch(legacy.input_tokenizer, 11)
        assert not loop.generative and not is_generative(rm)
        assert torch.allclose(loop(batch), legacy(batch), atol=1e-5)
    finally:
        loop.close()


JUDGE = r'''
import json

import aiohttp


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
                        reward_model_tokenizer=None):
    request = {"messages": [{"role": "user", "content": f"Grade this answer: {solution_str}"}],
               "temperature": 0.0, "max_tokens": 6}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{reward_router_address}/v1/chat/completions", json=request) as reply:
            body = await reply.json()
    text = body["choices"][0]["message"]["content"]
    with open(__file__ + ".log", "a") as log:
        log.write(json.dumps({"address": reward_router_address, "vocab": len(reward_model_tokenizer),
                              "reply": text}) + "\n")
    return float(len(text))  # a real judge parses its verdict; the tiny model's text is random
'''


def test_a_generative_judge_is_served_to_the_users_function(tmp_path):
    judge = build_tiny_model(tmp_path / "judge", "qwen2")  # a causal LM: generative with a function
    fn_file = tmp_path / "judge_fn.py"
    fn_file.write_text(JUDGE)
    config = build_config([f"reward_model.model.path={judge}", "reward_model.enable=True",
                           f"actor_rollout_ref.model.path={judge}", f"custom_reward_function.path={fn_file}",
                           "reward_model.rollout.dtype=fp32"]).config
    loop = RewardLoop(config)
    try:
        assert loop.generative and loop(_batch(loop.input_tokenizer, 2)) is None  # the function scores
        fn = get_reward_function(str(fn_file), "compute_score", None, loop.function_kwargs)
        scores = [fn("any", f"#### {i}", str(i), {}) for i in range(3)]
        import json

        seen = [json.loads(line) for line in (tmp_path / "judge_fn.py.log").read_text().splitlines()]
        assert {s["address"] for s in seen} == {loop.server.address}
        assert {s["vocab"] for s in seen} == {len(loop.engine.tokenizer)}
        assert scores == [float(len(s["reply"])) for s in seen]
        # greedy (temperature 0): the same prompt gets the same verdict
        assert fn("any", "#### 1", "1", {}) == scores[1]
    finally:
        loop.close()


def test_a_pool_of_its_own_scores_as_the_in_process_reward_model(tmp_path):
    """enable_resource_pool: two replicas in processes of their own (on a CPU a device is a process)."""
    import os

    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    actor = build_tiny_model(tmp_path / "actor", "qwen2")
    line = [f"reward_model.model.path={rm}", "reward_model.enable=True", f"actor_rollout_ref.model.path={actor}",
            "reward_model.num_workers=3", "reward_model.rollout.max_num_seqs=4"]
    legacy = RewardModelWorker(build_config(line + ["reward_model.use_reward_loop=False"]).config, micro_batch=2)
    loop = RewardLoop(build_config(line + ["reward_model.enable_resource_pool=True", "reward_model.nnodes=1",
                                           "reward_model.n_gpus_per_node=2"]).config, micro_batch=2)
    try:
        pids = loop.engine.pids
        assert len(set(pids)) == 2 and os.getpid() not in pids and loop.engine.worker is None
        batch = _batch(legacy.input_tokenizer, 11)
        assert torch.allclose(loop(batch), legacy(batch), atol=1e-5)
        # a replica that dies fails its requests with its exit code instead of leaving them waiting
        os.kill(pids[0], 9)
        loop.engine.procs[0].join(timeout=30)
        with pytest.raises(RuntimeError, match=r"reward model pool member 0 \(pid \d+\) exited with code -9"):
            loop(_batch(legacy.input_tokenizer, 4))
    finally:
        loop.close()


def test_a_pool_that_cannot_start_says_why(tmp_path):
    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True)
    for weights in rm.glob("*.safetensors"):  # the tokenizer loads here; the replica fails on the weights
        weights.unlink()
    config = build_config([f"reward_model.model.path={rm}", "reward_model.enable=True",
                           f"actor_rollout_ref.model.path={rm}", "reward_model.enable_resource_pool=True",
                           "reward_model.nnodes=1", "reward_model.n_gpus_per_node=1"]).config
    from rlcamp.rewards.pool import PooledRewardEngine

    with pytest.raises(RuntimeError, match=r"(?s)the reward model's pool did not start:\nmember 0:.*Traceback"):
        PooledRewardEngine(config, "cpu", 2)


@pytest.mark.parametrize("settings, fragment", [
    (["reward_model.enable_resource_pool=True"], "the pool has no devices (verl's default nnodes=0)"),
    (["reward_model.enable_resource_pool=True", "reward_model.nnodes=1", "reward_model.use_reward_loop=False"],
     "set use_reward_loop=True, or enable_resource_pool=False"),
    (["reward_model.enable_resource_pool=True", "reward_model.nnodes=1", "reward_model.n_gpus_per_node=3",
      "reward_model.rollout.name=vllm", "reward_model.rollout.tensor_model_parallel_size=2"],
     "tensor_model_parallel_size=2 does not divide the reward model's 3 pool devices"),
    (["reward_model.rollout.name=vllm", "reward_model.rollout.data_parallel_size=2"], "data_parallel_size=2"),
    (["reward_model.rollout.name=vllm", "reward_model.rollout.tensor_model_parallel_size=4",
      "reward_model.rollout.expert_parallel_size=2"], "expert_parallel_size=2"),
    (["reward_model.rollout.name=vllm", "reward_model.rollout.tensor_model_parallel_size=4",
      "trainer.n_gpus_per_node=2"], "tensor_model_parallel_size=4 is more than the 2 device(s)"),
])
def test_reward_engine_sizes_that_cannot_work_are_config_errors(tmp_path, settings, fragment):
    from rlcamp.config import resolve
    from rlcamp.config.loader import ConfigError

    actor = build_tiny_model(tmp_path / "actor", "qwen2")
    cfg = build_config([f"reward_model.model.path={actor}", "reward_model.enable=True",
                        f"actor_rollout_ref.model.path={actor}"] + settings).config
    with pytest.raises(ConfigError) as raised:
        resolve(cfg)
    assert any(fragment in p for p in raised.value.problems), raised.value.problems
