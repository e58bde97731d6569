"""The RL prompt dataset: rows checked, chat template applied, tokenised once, length-limited.

Everything that can be wrong with a prompt is found at load time, so a run does not fail hours in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from rlcamp.data.files import DataError, check_row, expand, read_records

Truncation = Literal["error", "left", "right", "middle"]


@dataclass(frozen=True)
class PromptSample:
    input_ids: list[int]  # templated prompt, truncated to max_prompt_length
    raw_prompt: list[dict[str, str]]  # the chat messages
    data_source: str
    ground_truth: Any
    extra_info: dict[str, Any]
    ability: str | None
    source: str  # "file:row", for error messages downstream


def truncate(ids: list[int], max_length: int, mode: Truncation, where: str) -> list[int]:
    """Cut a token list to ``max_length``: left keeps the end, right the start, middle both ends."""
    if len(ids) <= max_length:
        return ids
    if mode == "left":
        return ids[-max_length:]
    if mode == "right":
        return ids[:max_length]
    if mode == "middle":
        head = max_length // 2
        return ids[:head] + ids[len(ids) - (max_length - head):]
    raise DataError(f"{where}: prompt is {len(ids)} tokens, longer than data.max_prompt_length={max_length}; "
                    "raise max_prompt_length, set data.filter_overlong_prompts=True to drop such prompts, "
                    "or set data.truncation=left|right|middle")


def apply_chat_template(tokenizer, messages: list[dict[str, str]], where: str = "") -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{where}the tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) has no chat template; "
                        "set actor_rollout_ref.model.custom_chat_template to a Jinja template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class RLDataset:
    """Prompts from one or several verl-schema files, ready for generation."""

    def __init__(self, files: str | Sequence[str], tokenizer, *, max_prompt_length: int,
                 prompt_key: str = "prompt", reward_fn_key: str = "data_source", truncation: Truncation = "error",
                 filter_overlong_prompts: bool = False, max_samples: int | None = None):
        files = [files] if isinstance(files, str) else list(files)
        if not files:
            raise DataError("no data files given")
        rows: list[tuple[str, dict]] = []
        for file in files:
            for i, row in enumerate(read_records(file)):
                where = f"{expand(file)}: row {i}"
                check_row(row, where, prompt_key, reward_fn_key)
                rows.append((where, row))
        if max_samples is not None:
            rows = rows[:max_samples]

        texts = [apply_chat_template(tokenizer, row[prompt_key], f"{where}: ") for where, row in rows]
        all_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]

        self.samples: list[PromptSample] = []
        self.n_filtered = 0
        for (where, row), ids in zip(rows, all_ids):
            if filter_overlong_prompts and len(ids) > max_prompt_length:
                self.n_filtered += 1
                continue
            reward_model = row.get("reward_model") or {}
            self.samples.append(PromptSample(
                input_ids=truncate(list(ids), max_prompt_length, truncation, where),
                raw_prompt=list(row[prompt_key]),
                data_source=row[reward_fn_key],
                ground_truth=reward_model.get("ground_truth"),
                extra_info=dict(row.get("extra_info") or {}),
                ability=row.get("ability"),
                source=where,
            ))
        if not self.samples:
            raise DataError(f"{files}: every prompt is longer than data.max_prompt_length={max_prompt_length} "
                            "and was filtered out")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PromptSample:
        return self.samples[index]
