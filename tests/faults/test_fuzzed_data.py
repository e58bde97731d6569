"""Bad data at scale: fuzzed prompt files load or fail with a DataError naming the file (never another error)."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlcamp.data import DataError, RLDataset


def good_row(i: int) -> dict:
    return {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}


JUNK = [None, 0, -1, 3.5, float("nan"), "", "x" * 5000, [], {}, [[]], [{}], [{"role": 1}], {"a": [1, 2]}, True,
        [{"role": "user", "content": None}], [{"role": "user", "content": ""}], [{"content": "hi"}],
        [{"role": "bogus", "content": "hi"}], "\ud800", "\x00\x01", [{"role": "user", "content": "\x00"}]]
FIELDS = ["data_source", "prompt", "ability", "reward_model", "extra_info", "unknown"]


def mutate_row(rng: random.Random, row: dict) -> dict:
    row = json.loads(json.dumps(row))
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        field = rng.choice(FIELDS)
        if kind < 0.6:
            row[field] = rng.choice(JUNK)
        elif kind < 0.8:
            row.pop(field, None)
        else:  # a huge row
            row["prompt"] = [{"role": "user", "content": "word " * rng.randint(1000, 50000)}]
    return row


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.random()
    if kind < 0.3:  # random bytes over part of it
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind < 0.5:  # cut short
        data = data[:rng.randrange(len(data))]
    elif kind < 0.7:  # invalid UTF-8
        data[rng.randrange(len(data)):0] = b"\xff\xfe\xc3("
    elif kind < 0.85:  # all random
        data = bytearray(rng.randbytes(rng.randint(0, 2000)))
    else:  # a NUL byte
        data[rng.randrange(len(data)):0] = b"\x00"
    return bytes(data)


def write(path, rows, kind: str) -> None:
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "json": ".json", "gz": ".jsonl.gz"}


def load(path, tokenizer, truncation="error", filter_overlong=False):
    return RLDataset([str(path)], tokenizer, max_prompt_length=256, truncation=truncation,
                     filter_overlong_prompts=filter_overlong)


@pytest.mark.parametrize("seed", range(8))
def test_fuzzed_rows_load_or_name_the_file_and_row(tmp_path, tiny_tokenizer, seed):
    rng = random.Random(seed)
    for case in range(25):
        kind = rng.choice(list(SUFFIX))
        rows = [good_row(i) for i in range(6)]
        bad = rng.randrange(len(rows))
        rows[bad] = mutate_row(rng, rows[bad])
        path = tmp_path / f"{seed}_{case}{SUFFIX[kind]}"
        try:
            write(path, rows, kind)
        except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeEncodeError):
            continue  # rows parquet/json cannot even hold
        try:
            ds = load(path, tiny_tokenizer, truncation=rng.choice(["error", "left"]), filter_overlong=rng.random() < 0.5)
        except DataError as exc:
            assert str(path) in str(exc), exc
            continue
        assert 1 <= len(ds) <= 6


@pytest.mark.parametrize("seed", range(8))
def test_fuzzed_bytes_load_or_name_the_file(tmp_path, tiny_tokenizer, seed):
    rng = random.Random(100 + seed)
    for case in range(25):
        kind = rng.choice(list(SUFFIX))
        clean = tmp_path / f"clean{SUFFIX[kind]}"
        write(clean, [good_row(i) for i in range(6)], kind)
        path = tmp_path / f"{seed}_{case}{SUFFIX[kind]}"
        path.write_bytes(mutate_bytes(rng, clean.read_bytes()))
        try:
            load(path, tiny_tokenizer)
        except DataError as exc:
            assert str(path) in str(exc), exc


@pytest.mark.slow
def test_a_million_rows_load_and_serve_batches(tmp_path, tiny_tokenizer):
    """~90 s and ~6 GiB here (benchmarks/RESULTS.md, "Faults")."""
    from rlcamp.data.loader import PromptLoader

    path = tmp_path / "million.jsonl"
    with open(path, "w") as f:
        for i in range(1_000_000):
            f.write(json.dumps(good_row(i)) + "\n")
    ds = load(path, tiny_tokenizer)
    assert len(ds) == 1_000_000 and ds[999_999].ground_truth == "1000000"
    batch = next(iter(PromptLoader(ds, 64, pad_token_id=tiny_tokenizer.pad_token_id, shuffle=True, seed=1)))
    assert batch["input_ids"].shape[0] == 64
