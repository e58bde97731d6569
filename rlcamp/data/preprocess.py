"""Turn public math sets into RL prompt files in verl's schema (used by examples/data_preprocess).

GSM8K: the prompt asks for the final answer after "####"; ground truth = the number after
"####" in the reference answer, commas removed. MATH: the prompt asks for \\boxed{}; ground truth
= the content of the reference solution's last \\boxed{}.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from rlcamp.data.files import DataError, read_records
from rlcamp.rewards.math import last_boxed

GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
GSM8K_SOURCE = "openai/gsm8k"
MATH_SOURCE = "DigitalLearningGmbH/MATH-lighteval"
MATH500_SOURCE = "HuggingFaceH4/MATH-500"


def gsm8k_ground_truth(answer: str) -> str:
    match = re.search(r"####\s*(-?[0-9.,]+)", answer)
    if match is None:
        raise ValueError(f"reference answer has no '#### N': {answer[-80:]!r}")
    return match.group(1).replace(",", "").rstrip(".")


def gsm8k_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    question, answer = record["question"], record["answer"]
    return {
        "data_source": GSM8K_SOURCE,
        "prompt": [{"role": "user", "content": f"{question} {GSM8K_INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": gsm8k_ground_truth(answer)},
        "extra_info": {"split": split, "index": index, "question": question, "answer": answer},
    }


def math_row(record: dict[str, Any], split: str, index: int, data_source: str = MATH_SOURCE) -> dict[str, Any]:
    # MATH-lighteval names the fields problem/solution; the MATH-500 copy here, question/answer
    problem = record.get("problem", record.get("question"))
    solution = record.get("solution", record.get("answer"))
    if problem is None or solution is None:
        raise ValueError(f"needs problem/solution (or question/answer) fields, has {sorted(record)}")
    truth = last_boxed(solution)
    if truth is None:
        raise ValueError(f"reference solution has no \\boxed{{}} answer: {solution[-80:]!r}")
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": f"{problem} {MATH_INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {"split": split, "index": index, "level": record.get("level"), "type": record.get("type")},
    }


CODE_INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python block."
HUMANEVAL_SOURCE = "openai/openai_humaneval"
STDIO_SOURCE = "rlcamp/code"


def humaneval_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """HumanEval problem -> RL row; ground truth = JSON {prompt, test, entry_point} for the code scorer."""
    truth = {"prompt": record["prompt"], "test": record["test"], "entry_point": record["entry_point"]}
    return {
        "data_source": HUMANEVAL_SOURCE,
        "prompt": [{"role": "user", "content": f"{CODE_INSTRUCTION}\n\n```python\n{record['prompt']}```"}],
        "ability": "code",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(truth)},
        "extra_info": {"split": split, "index": index, "task_id": record.get("task_id"),
                       "canonical_solution": record.get("canonical_solution")},
    }


def stdio_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """{question, cases: [{stdin, stdout}]} -> RL row for programs that read stdin and print."""
    cases = record["cases"]
    if not isinstance(cases, list) or not cases:
        raise ValueError("'cases' must be a non-empty list of {stdin, stdout}")
    return {
        "data_source": STDIO_SOURCE,
        "prompt": [{"role": "user", "content": f"{record['question']}\n\nWrite a Python program that reads the input "
                    "from stdin and prints the answer. Reply with the program in a ```python block."}],
        "ability": "code",
        "reward_model": {"style": "rule", "ground_truth": json.dumps({"cases": cases})},
        "extra_info": {"split": split, "index": index},
    }


HH_SOURCE = "Anthropic/hh-rlhf"
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_rlhf_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """hh-rlhf pair -> RL row: the conversation up to the last assistant turn is the prompt
    (scored by a reward model; the preferred reply is kept as ground truth for reference)."""
    parts = _HH_TURN.split("\n\n" + record["chosen"].lstrip("\n"))[1:]
    turns = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
             for who, text in zip(parts[::2], parts[1::2])]
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        raise ValueError("'chosen' must alternate Human/Assistant turns and end with an Assistant reply")
    return {
        "data_source": HH_SOURCE,
        "prompt": turns[:-1],
        "ability": "alignment",
        "reward_model": {"style": "model", "ground_truth": turns[-1]["content"]},
        "extra_info": {"split": split, "index": index},
    }


def verl_row(record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """A row already in verl's RL schema (Eurus-2-RL-Data, DAPO-Math-17k), checked and kept as it is:
    data_source, prompt (chat messages), reward_model.ground_truth; extra_info gains split and index."""
    for key in ("data_source", "prompt", "reward_model"):
        if key not in record:
            raise KeyError(f"'{key}' is missing (verl's RL schema: data_source, prompt, ability, reward_model, "
                           "extra_info)")
    prompt = record["prompt"]
    if isinstance(prompt, str) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise ValueError("'prompt' must be a list of chat messages ({role, content})")
    truth = record["reward_model"]
    if not isinstance(truth, dict) or "ground_truth" not in truth:
        raise ValueError("'reward_model' must hold a 'ground_truth'")
    extra = dict(record.get("extra_info") or {})
    extra.setdefault("split", split)
    extra.setdefault("index", index)
    return {**record, "prompt": [dict(m) for m in prompt], "extra_info": extra}


def unique_prompts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose prompt has not been seen before, in order (DAPO-Math-17k repeats each of its 17k
    problems about 100 times)."""
    import json

    seen, out = set(), []
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def convert(records: Iterable[dict[str, Any]], make_row, split: str, source: str, **kwargs) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(records):
        try:
            rows.append(make_row(record, split, i, **kwargs))
        except (KeyError, ValueError) as exc:
            raise DataError(f"{source}: row {i}: {exc}") from exc
    return rows


def convert_splits(splits: dict[str, list[dict]], make_row, local_dir: str | Path, source: str, **kwargs) -> None:
    """Convert every split with ``make_row`` and write ``<local_dir>/<split>.parquet`` (the scripts' shared tail)."""
    for split, records in splits.items():
        path = write_parquet(convert(records, make_row, split, source, **kwargs), f"{local_dir}/{split}.parquet")
        print(f"wrote {len(records)} rows to {path}")


def local_splits(path: str | Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, list[dict]]:
    """Records of each split found under ``path``: a folder with <split>.jsonl/.parquet, or one file (test)."""
    path = Path(path).expanduser()
    if path.is_file():
        return {"train" if "train" in path.name else "test": read_records(path)}
    if not path.is_dir():
        raise DataError(f"--local_dataset_path {path} does not exist")
    found = {}
    for split in splits:
        for candidate in sorted(path.glob(f"{split}*")):
            if candidate.name.endswith((".jsonl", ".json", ".parquet", ".jsonl.gz")):
                found[split] = read_records(candidate)
                break
    if not found:
        raise DataError(f"--local_dataset_path {path} holds no {' / '.join(splits)} .jsonl or .parquet file")
    return found


def hub_splits(name: str, config: str | None = None) -> dict[str, list[dict]]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError("reading from the hub needs the datasets package: pip install datasets; "
                        "or pass --local_dataset_path") from exc
    loaded = datasets.load_dataset(name, config)
    return {split: list(loaded[split]) for split in loaded}


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
