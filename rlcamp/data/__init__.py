"""RL prompt data: verl-schema files, chat templates, length limits, resumable sampling, collate."""

from rlcamp.data.dataset import PromptSample, RLDataset, apply_chat_template, truncate
from rlcamp.data.files import DataError, check_row, count_records, read_records
from rlcamp.data.loader import PromptLoader, ResumableSampler, collate_prompts

__all__ = ["DataError", "PromptLoader", "PromptSample", "RLDataset", "ResumableSampler", "apply_chat_template",
           "check_row", "collate_prompts", "count_records", "read_records", "truncate"]
