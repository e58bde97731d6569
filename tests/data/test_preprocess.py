import subprocess
import sys
from pathlib import Path

import pytest

from rlcamp.data import RLDataset, read_records
from rlcamp.data.preprocess import gsm8k_ground_truth
from rlcamp.rewards import default_compute_score

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def run_script(name, *args):
    subprocess.run([sys.executable, str(ROOT / "examples" / "data_preprocess" / name), *args], check=True,
                   capture_output=True, text=True)


def test_gsm8k_script_writes_verl_schema(tmp_path, tiny_tokenizer):
    run_script("gsm8k.py", "--local_dataset_path", str(FIXTURES / "gsm8k"), "--local_dir", str(tmp_path))
    train, test = read_records(tmp_path / "train.parquet"), read_records(tmp_path / "test.parquet")
    assert len(train) == 5 and len(test) == 3
    first = train[0]
    assert first["data_source"] == "openai/gsm8k" and first["ability"] == "math"
    assert first["reward_model"] == {"style": "rule", "ground_truth": "72"}
    assert first["prompt"][0]["role"] == "user" and first["prompt"][0]["content"].endswith('after "####".')
    # the reference solution scores 1 against its own ground truth, through the dispatch
    for r in train:
        assert default_compute_score(r["data_source"], r["extra_info"]["answer"], r["reward_model"]["ground_truth"]) == 1.0
    assert len(RLDataset(str(tmp_path / "train.parquet"), tiny_tokenizer, max_prompt_length=512)) == 5


def test_math_script_extracts_last_boxed(tmp_path):
    run_script("math_dataset.py", "--local_dataset_path", str(FIXTURES / "math500"), "--local_dir", str(tmp_path))
    rows = read_records(tmp_path / "test.parquet")
    assert len(rows) == 5 and rows[0]["data_source"] == "HuggingFaceH4/MATH-500"
    assert rows[0]["reward_model"]["ground_truth"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert rows[0]["prompt"][0]["content"].endswith(r"within \boxed{}.")


def test_gsm8k_ground_truth_strips_commas_and_errors_name_the_row(tmp_path):
    assert gsm8k_ground_truth("so 1,000 + 200\n#### 1,200") == "1200"
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "no marker here"}\n')
    result = subprocess.run([sys.executable, str(ROOT / "examples/data_preprocess/gsm8k.py"), "--local_dataset_path",
                             str(tmp_path), "--local_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0 and "row 0: reference answer has no '#### N'" in result.stderr


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl").exists(), reason="../shared/data not here")
def test_full_shared_gsm8k_converts(tmp_path):
    run_script("gsm8k.py", "--local_dataset_path", str(ROOT.parent / "shared/data/gsm8k"), "--local_dir", str(tmp_path))
    assert len(read_records(tmp_path / "train.parquet")) == 7473


def _verl_rows(ability: str, n: int, source: str, truth: str) -> list[dict]:
    return [{"data_source": source, "prompt": [{"role": "user", "content": f"problem {i % 3}"}], "ability": ability,
             "reward_model": {"style": "rule", "ground_truth": truth}, "extra_info": {"index": i}} for i in range(n)]


def test_eurus_script_keeps_the_code_rows_checked(tmp_path):
    from rlcamp.data.preprocess import write_parquet

    src = tmp_path / "src"
    code_truth = '{"inputs": ["1 2\\n"], "outputs": ["3\\n"]}'
    write_parquet(_verl_rows("code", 3, "codecontests", code_truth) + _verl_rows("math", 2, "numina_olympiads", "4"),
                  src / "train.parquet")
    write_parquet(_verl_rows("code", 2, "codecontests", code_truth), src / "validation.parquet")
    run_script("eurus_code.py", "--local_dataset_path", str(src), "--local_dir", str(tmp_path / "out"))
    train = read_records(tmp_path / "out/train.parquet")
    assert len(train) == 3 and {r["ability"] for r in train} == {"code"}
    assert train[0]["extra_info"]["split"] == "train" and len(read_records(tmp_path / "out/validation.parquet")) == 2
    bad = tmp_path / "bad"
    write_parquet([{"data_source": "x", "prompt": "a string", "reward_model": {"ground_truth": "1"}}],
                  bad / "train.parquet")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_script("eurus_code.py", "--local_dataset_path", str(bad), "--local_dir", str(tmp_path / "o2"))
    assert "row 0: 'prompt' must be a list of chat messages" in failed.value.stderr


def test_dapo_script_drops_repeated_prompts(tmp_path):
    from rlcamp.data.preprocess import write_parquet

    write_parquet(_verl_rows("MATH", 9, "math_dapo", "12"), tmp_path / "dapo.parquet")  # 3 problems, 3 times each
    run_script("dapo_math.py", "--local_dataset_path", str(tmp_path / "dapo.parquet"),
               "--local_file", str(tmp_path / "out.parquet"))
    rows = read_records(tmp_path / "out.parquet")
    assert len(rows) == 3 and default_compute_score("math_dapo", "so\nAnswer: 12", "12")["score"] == 1.0
