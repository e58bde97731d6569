"""Tiny stand-ins for what a work order names: a model of the same family and kind, data of the same
kind. Used by ``rlcamp smoke`` and by the tests that dry-run verl's launch lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlcamp.data import arith
from rlcamp.data.preprocess import GSM8K_SOURCE, HH_SOURCE, MATH_SOURCE

# the model's name (its last path part, lower case) -> the tiny family of the same architecture
NAME_FAMILIES = (
    (r"moonlight|deepseek-v3|deepseek-v2|deepseek-r1", "deepseek_v3"),
    (r"qwen1\.5-moe|qwen2-moe|qwen2_moe|qwen-moe", "qwen2_moe"),
    (r"qwen3", "qwen3"),
    (r"qwen", "qwen2"),  # Qwen1.5, Qwen2, Qwen2.5: the qwen2 architecture
    (r"gemma-2|gemma2", "gemma2"),
    (r"deepseek-llm|deepseek-math|deepseek-coder|llama|smollm|mistral", "llama"),
)
MODEL_TYPE_FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
                       "qwen2_moe": "qwen2_moe", "deepseek_v3": "deepseek_v3"}
REWARD_NAME = re.compile(r"(^|[-_/])rm($|[-_])|reward", re.IGNORECASE)


def family_of(value: str) -> str | None:
    """The tiny family standing in for the model at ``value`` (a local folder or a hub name), or None."""
    config = Path(value).expanduser() / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type in MODEL_TYPE_FAMILIES:
            return MODEL_TYPE_FAMILIES[model_type]
    name = value.rstrip("/").rsplit("/", 1)[-1].lower()
    for pattern, family in NAME_FAMILIES:
        if re.search(pattern, name):
            return family
    return None


def is_reward_model(value: str) -> bool:
    """Whether the model at ``value`` is a sequence classifier (by its config, else by its name)."""
    config = Path(value).expanduser() / "config.json"
    if config.is_file():
        architectures = json.loads(config.read_text()).get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in architectures)
    return bool(REWARD_NAME.search(value.rstrip("/").rsplit("/", 1)[-1]))


DATA_KINDS = (("hh_rlhf", "preference"), ("hh-rlhf", "preference"), ("eurus", "code"), ("code", "code"),
              ("humaneval", "code"), ("dapo", "dapo_math"), ("math", "math"), ("arith", "arith"))


def data_kind(path: str) -> str:
    """What a data file holds, by its path: math (GSM8K-style when nothing else fits), code, preference, or
    rlcamp's arithmetic (scored by ``rlcamp/arith``, whose reward kwargs the GSM8K scorer does not take)."""
    low = path.lower()
    return next((kind for part, kind in DATA_KINDS if part in low), "gsm8k")


def tiny_rows(kind: str, n: int = 4) -> list[dict]:
    """``n`` rows of verl's RL schema of ``kind``."""
    if kind == "preference":
        return [{"data_source": HH_SOURCE, "prompt": [{"role": "user", "content": f"Say hello {i}"}],
                 "ability": "alignment", "reward_model": {"style": "model", "ground_truth": "hello"},
                 "extra_info": {"index": i}} for i in range(n)]
    if kind == "code":  # Eurus-2-RL-Data's code rows: the ground truth is inputs/outputs JSON
        truth = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})
        return [{"data_source": "codecontests", "prompt": [{"role": "user", "content": "Add two numbers read from stdin."}],
                 "ability": "code", "reward_model": {"style": "rule", "ground_truth": truth},
                 "extra_info": {"index": i}} for i in range(n)]
    if kind == "dapo_math":
        return [{"data_source": "math_dapo", "prompt": [{"role": "user", "content": f"What is {i} + 1? End with "
                                                                                     "'Answer: <number>'."}],
                 "ability": "MATH", "reward_model": {"style": "rule-lighteval/MATH_v2", "ground_truth": str(i + 1)},
                 "extra_info": {"index": i}} for i in range(n)]
    if kind == "arith":
        return [arith.row(i, "+", 1, i, "train") for i in range(n)]
    source = MATH_SOURCE if kind == "math" else GSM8K_SOURCE
    return [{"data_source": source, "prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
            for i in range(n)]
