"""The identical work both sides of a peer benchmark run: prompts, reward, the fixed-length rule,
the greedy evaluation, and the result file. Imported by rlcamp's runner and by the TRL runners
(each TRL venv has rlcamp installed without dependencies, so the reward is the same code).

A spec (JSON) fixes the work: model, prompts per step P, samples per prompt G, response tokens T
(EOS ignored, so every response is exactly T tokens), prompts per optimizer step M (P / M
optimizer steps per training step), PPO epochs, learning rate, steps, precision (fp32).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch


def load_spec(path: str) -> dict:
    return json.loads(Path(path).read_text())


def train_rows(spec: dict) -> list[dict]:
    """P x steps training prompts (chat messages + ground truth), the same on both sides, in order."""
    from rlcamp.data.arith import make_splits

    train, _ = make_splits(n_test=spec["n_test"])
    need = spec["prompts_per_step"] * spec["steps"]
    rows = (train * (need // len(train) + 1))[:need]
    return [{"prompt": r["prompt"], "ground_truth": r["reward_model"]["ground_truth"]} for r in rows]


def test_rows(spec: dict) -> list[dict]:
    from rlcamp.data.arith import make_splits

    _, test = make_splits(n_test=spec["n_test"])
    return [{"prompt": r["prompt"], "ground_truth": r["reward_model"]["ground_truth"]} for r in test]


def reward(text: str, ground_truth: str) -> float:
    """The main job's rule: 1 for the right number after "####", 0.1 for a well-formed wrong one."""
    from rlcamp.rewards.gsm8k import compute_score

    return compute_score(text, ground_truth, format_score=0.1)


@torch.no_grad()
def greedy_accuracy(model, tokenizer, rows: list[dict], max_new_tokens: int) -> float:
    """The same greedy evaluation for both sides (plain transformers generate, left padding)."""
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    was_training = model.training
    model.eval()
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    model.train(was_training)
    answers = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(reward(a, r["ground_truth"]) >= 1.0 for a, r in zip(answers, rows)) / len(rows)


class StepClock:
    """Wall-clock per training step, with generation time and counts recorded alongside."""

    def __init__(self):
        self.start = time.perf_counter()
        self.steps: list[dict] = []

    def record(self, seconds: float, generate_s: float, generated_tokens: int, optimizer_steps: int, reward: float):
        self.steps.append({"seconds": seconds, "generate_s": generate_s, "generated_tokens": generated_tokens,
                           "optimizer_steps": optimizer_steps, "reward": reward,
                           "wall": time.perf_counter() - self.start})


def write_result(path: str, side: str, clock: StepClock, accuracy: float, extra: dict | None = None) -> None:
    result = {"side": side, "steps": clock.steps, "accuracy": accuracy,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **(extra or {})}
    Path(path).write_text(json.dumps(result, indent=1))
