import json
from pathlib import Path

import pytest

from rlcamp.data import read_records
from rlcamp.rewards import RewardServices, default_compute_score
from rlcamp.rewards.code import build_runs, compute_score, extract_program
from rlcamp.sandbox.client import EmbeddedSandbox, HTTPSandbox

ROOT = Path(__file__).resolve().parents[2]
HUMANEVAL = [r for r in read_records(ROOT / "tests/fixtures/humaneval/HumanEval10.jsonl")]


def truth(problem):
    return json.dumps({k: problem[k] for k in ("prompt", "test", "entry_point")})


@pytest.fixture(scope="module")
def embedded():
    return EmbeddedSandbox(max_concurrent=2)


def test_extract_program():
    assert extract_program("text\n```python\nprint(1)\n```\nmore\n```py\nprint(2)\n```") == "print(2)\n"
    assert extract_program("def f():\n    return 1") == "def f():\n    return 1"


def test_humaneval_canonical_solutions_pass_through_the_service(service):
    sandbox = HTTPSandbox(service["run_url"])
    for problem in HUMANEVAL:
        # the canonical solution is a function body: the prompt is prepended, as for a completion
        result = compute_score(problem["canonical_solution"], truth(problem), sandbox)
        assert result["score"] == 1.0, problem["task_id"]
        whole = problem["prompt"] + problem["canonical_solution"]
        assert compute_score(f"Here:\n```python\n{whole}```", truth(problem), sandbox)["score"] == 1.0


def test_wrong_solutions_score_zero(service):
    sandbox = HTTPSandbox(service["run_url"])
    problem = HUMANEVAL[0]
    assert compute_score("    return not True\n", truth(problem), sandbox)["score"] == 0.0
    assert compute_score("    while True: pass\n", truth(problem), sandbox, run_timeout=1) == {
        "score": 0.0, "pass_fraction": 0.0, "timeouts": 1}


def test_stdio_cases_fraction_and_all(embedded):
    cases = json.dumps({"cases": [{"stdin": "2 3\n", "stdout": "5\n"}, {"stdin": "1 1\n", "stdout": "2"},
                                  {"stdin": "0 0\n", "stdout": "1\n"}]})
    program = "```python\na, b = map(int, input().split())\nprint(a + b)   \n```"
    assert compute_score(program, cases, embedded)["score"] == pytest.approx(2 / 3)
    assert compute_score(program, cases, embedded, mode="all")["score"] == 0.0
    with pytest.raises(ValueError, match="needs 'cases', 'inputs' \\+ 'outputs', or 'test'"):
        build_runs("x", {"tests": []})


def test_dispatch_by_data_source_uses_the_sandbox_it_is_given(service):
    services = RewardServices(service["run_url"], max_concurrent=2)
    problem = HUMANEVAL[1]
    score = default_compute_score("openai/openai_humaneval", problem["canonical_solution"], truth(problem),
                                  services=services)
    assert score["score"] == 1.0
    assert services.sandbox().url == service["run_url"]  # the one it was given, not an embedded one


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared/data/humaneval/HumanEval.jsonl.gz").exists(), reason="../shared not here")
def test_all_164_canonical_solutions_score_one(service):
    sandbox = HTTPSandbox(service["run_url"])
    problems = read_records(ROOT.parent / "shared/data/humaneval/HumanEval.jsonl.gz")
    assert len(problems) == 164
    failed = [p["task_id"] for p in problems if compute_score(p["canonical_solution"], truth(p), sandbox)["score"] != 1.0]
    assert failed == []


def test_apps_style_inputs_outputs_stdio_and_call_based(embedded):
    """Eurus-2-RL-Data / APPS / TACO rows: paired inputs and outputs; with fn_name, a function call."""
    stdio = json.dumps({"inputs": ["2 3\n", "1 1\n"], "outputs": ["5\n", "3\n"]})
    program = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert compute_score(program, stdio, embedded)["score"] == pytest.approx(1 / 2)
    calls = json.dumps({"fn_name": "add", "inputs": [[2, 3], [1, 1]], "outputs": [[5], 2]})  # APPS wraps returns
    assert compute_score("def add(a, b):\n    return a + b\n", calls, embedded)["score"] == 1.0
    method = "class Solution:\n    def add(self, a, b):\n        return a - b\n"
    assert compute_score(method, calls, embedded)["score"] == 0.0
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        compute_score(program, json.dumps({"inputs": ["1", "2"], "outputs": ["1"]}), embedded)
