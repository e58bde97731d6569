"""Reading RL prompt files (parquet or jsonl) in verl's schema, with errors that name file, row and field.

A row looks like::

    {"data_source": "openai/gsm8k",
     "prompt": [{"role": "user", "content": "..."}],
     "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "72"},
     "extra_info": {"split": "train", "index": 0}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A prompt file or row that cannot be used; the message names file, row and field."""


def expand(path: str | Path) -> Path:
    return Path(path).expanduser()


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All rows of one parquet / jsonl / json file as dicts."""
    path = expand(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    suffix = path.suffix.lower()
    compressed = suffix == ".gz"
    if compressed:
        suffix = Path(path.stem).suffix.lower()
    if suffix == ".parquet" and not compressed:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    elif suffix in (".jsonl", ".json"):
        text = _read_text(path, compressed)
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON ({exc})") from exc
        else:
            rows = []
            for line_no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {line_no} is not valid JSON ({exc.msg})") from exc
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i} is a {type(row).__name__}, not an object")
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .parquet, .jsonl or .jsonl.gz")
    if not rows:
        raise DataError(f"{path}: file has no rows")
    return rows


def _read_text(path: Path, compressed: bool) -> str:
    """The file as UTF-8 text; a file that is not gzip (or cut short) or not UTF-8 is named with where."""
    raw = path.read_bytes()
    if compressed:
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DataError(f"{path}: not a readable gzip file ({type(exc).__name__}: {exc})") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start}: "
                        f"{raw[exc.start:exc.start + 4]!r}); re-encode the file as UTF-8") from exc


def count_records(path: str | Path) -> int:
    """Row count without reading the data (parquet metadata / line count)."""
    path = expand(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return len(read_records(path))


def check_row(row: dict[str, Any], where: str, prompt_key: str, reward_fn_key: str) -> None:
    """Raise DataError naming ``where`` (file and row) and the field when a row breaks the schema."""
    if prompt_key not in row:
        raise DataError(f"{where}: missing field '{prompt_key}' (fields: {sorted(row)}); "
                        f"set data.prompt_key if your prompts are in another column")
    messages = row[prompt_key]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError(f"{where}: field '{prompt_key}' must be a non-empty list of chat messages "
                        f"[{{'role': ..., 'content': ...}}], got {type(messages).__name__}: {str(messages)[:80]!r}")
    for j, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{prompt_key}' message {j} must be {{'role': str, 'content': str}}, "
                            f"got {str(message)[:80]!r}")
    if reward_fn_key not in row:
        raise DataError(f"{where}: missing field '{reward_fn_key}' (it picks the reward scorer); fields: {sorted(row)}")
    if not isinstance(row[reward_fn_key], str):
        raise DataError(f"{where}: field '{reward_fn_key}' must be a string, got {type(row[reward_fn_key]).__name__}")
    reward_model = row.get("reward_model")
    if reward_model is not None and not isinstance(reward_model, dict):
        raise DataError(f"{where}: field 'reward_model' must be a mapping like {{'ground_truth': ...}}, "
                        f"got {type(reward_model).__name__}")
    extra_info = row.get("extra_info")
    if extra_info is not None and not isinstance(extra_info, dict):
        raise DataError(f"{where}: field 'extra_info' must be a mapping, got {type(extra_info).__name__}")
    ability = row.get("ability")
    if ability is not None and not isinstance(ability, str):
        raise DataError(f"{where}: field 'ability' must be a string, got {type(ability).__name__}")
