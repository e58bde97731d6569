import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlcamp.data import DataError, RLDataset, count_records, read_records, truncate


def row(i, content=None, **extra):
    base = {"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": content or f"What is {i} + 1?"}],
            "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
    base.update(extra)
    return base


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def test_reads_parquet_and_jsonl_applies_template(tmp_path, tiny_tokenizer):
    a = write_parquet(tmp_path / "a.parquet", [row(i) for i in range(3)])
    b = write_jsonl(tmp_path / "b.jsonl", [row(i) for i in range(3, 5)])
    ds = RLDataset([a, b], tiny_tokenizer, max_prompt_length=64)
    assert len(ds) == 5 and count_records(a) == 3 and count_records(b) == 2
    sample = ds[4]
    text = tiny_tokenizer.decode(sample.input_ids)
    assert text == "<|im_start|>user\nWhat is 4 + 1?<|im_end|>\n<|im_start|>assistant\n"
    assert sample.ground_truth == "5" and sample.data_source == "openai/gsm8k" and sample.extra_info == {"index": 4}
    assert sample.source.endswith("b.jsonl: row 1")


def test_truncation_modes():
    ids = list(range(10))
    assert truncate(ids, 4, "left", "f") == [6, 7, 8, 9]
    assert truncate(ids, 4, "right", "f") == [0, 1, 2, 3]
    assert truncate(ids, 5, "middle", "f") == [0, 1, 7, 8, 9]
    assert truncate(ids, 20, "error", "f") == ids
    with pytest.raises(DataError, match="f: prompt is 10 tokens, longer than data.max_prompt_length=4"):
        truncate(ids, 4, "error", "f")


def test_overlong_prompts_error_filter_or_truncate(tmp_path, tiny_tokenizer):
    rows = [row(0), row(1, content="word " * 200), row(2)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=r"p.jsonl: row 1: prompt is \d+ tokens.*filter_overlong_prompts"):
        RLDataset(path, tiny_tokenizer, max_prompt_length=40)
    ds = RLDataset(path, tiny_tokenizer, max_prompt_length=40, filter_overlong_prompts=True)
    assert len(ds) == 2 and ds.n_filtered == 1 and [s.ground_truth for s in ds.samples] == ["1", "3"]
    ds = RLDataset(path, tiny_tokenizer, max_prompt_length=40, truncation="left")
    assert len(ds) == 3 and len(ds[1].input_ids) == 40
    assert tiny_tokenizer.decode(ds[1].input_ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("bad,pattern", [
    ({"prompt": None}, "row 1: field 'prompt' must be a non-empty list of chat messages"),
    ({"prompt": "just a string"}, "row 1: field 'prompt' must be a non-empty list of chat messages.*str"),
    ({"prompt": [{"role": "user"}]}, "row 1: field 'prompt' message 0 must be"),
    ({"data_source": 5}, "row 1: field 'data_source' must be a string"),
    ({"reward_model": "7"}, "row 1: field 'reward_model' must be a mapping"),
    ({"extra_info": [1]}, "row 1: field 'extra_info' must be a mapping"),
])
def test_malformed_rows_name_file_row_and_field(tmp_path, tiny_tokenizer, bad, pattern):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(0), row(1, **bad)])
    with pytest.raises(DataError, match=r"bad.jsonl: " + pattern):
        RLDataset(path, tiny_tokenizer, max_prompt_length=64)


def test_missing_column_empty_and_unreadable_files(tmp_path, tiny_tokenizer):
    no_prompt = [{k: v for k, v in row(0).items() if k != "prompt"}]
    path = write_parquet(tmp_path / "np.parquet", no_prompt)
    with pytest.raises(DataError, match=r"np.parquet: row 0: missing field 'prompt'.*data.prompt_key"):
        RLDataset(path, tiny_tokenizer, max_prompt_length=64)
    no_source = [{k: v for k, v in row(0).items() if k != "data_source"}]
    with pytest.raises(DataError, match=r"row 0: missing field 'data_source'"):
        RLDataset(write_jsonl(tmp_path / "ns.jsonl", no_source), tiny_tokenizer, max_prompt_length=64)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: file has no rows"):
        read_records(tmp_path / "empty.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet: not a readable parquet file"):
        read_records(tmp_path / "junk.parquet")
    (tmp_path / "broken.jsonl").write_text(json.dumps(row(0)) + "\n{oops\n")
    with pytest.raises(DataError, match="broken.jsonl: line 2 is not valid JSON"):
        read_records(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match="missing.parquet: file does not exist"):
        read_records(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        (tmp_path / "x.csv").write_text("a,b\n")
        read_records(tmp_path / "x.csv")


def test_custom_prompt_key_and_missing_chat_template(tmp_path, tiny_tokenizer):
    rows = [{"data_source": "gsm8k", "question": [{"role": "user", "content": "hi"}]}]
    ds = RLDataset(write_jsonl(tmp_path / "q.jsonl", rows), tiny_tokenizer, max_prompt_length=64, prompt_key="question")
    assert ds[0].ground_truth is None
    plain = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    with pytest.raises(DataError, match="has no chat template; set actor_rollout_ref.model.custom_chat_template"):
        RLDataset(write_jsonl(tmp_path / "p.jsonl", [row(0)]), plain, max_prompt_length=64)
