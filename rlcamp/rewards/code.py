"""Code rewards: run the model's program against the problem's tests in the sandbox.

The ground truth is a JSON string (or dict) in one of two forms:

- HumanEval style: {"prompt": ..., "test": ..., "entry_point": ...}; the program is the prompt
  (when the response does not define the function itself) + the response + the tests +
  ``check(entry_point)``. One run; it passes when it exits 0.
- stdin/stdout cases: {"cases": [{"stdin": ..., "stdout": ...}, ...]}; one run per case, compared
  line by line with trailing whitespace ignored.

The reward is the fraction of passed runs (``mode="fraction"``) or 1/0 for all passed
(``mode="all"``). The program is the last fenced code block of the response, or the whole text.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_program(response: str) -> str:
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


def _outputs_match(actual: str, expected: str) -> bool:
    strip = lambda text: [line.rstrip() for line in text.strip().splitlines()]  # noqa: E731
    return strip(actual) == strip(expected)


def build_runs(response: str, ground_truth: Any) -> list[tuple[dict, str | None]]:
    """(request, expected stdout or None) for each sandbox run the ground truth asks for."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else dict(ground_truth)
    program = extract_program(response)
    if "cases" in truth:
        return [({"code": program, "stdin": case.get("stdin", ""), "language": "python"}, case.get("stdout", ""))
                for case in truth["cases"]]
    if {"test", "entry_point"} <= truth.keys():
        entry = truth["entry_point"]
        defines = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", program, re.M) is not None
        source = program if defines else truth.get("prompt", "") + program
        code = f"{source}\n\n{truth['test']}\n\ncheck({entry})\n"
        return [({"code": code, "language": "python"}, None)]
    raise ValueError("code ground truth needs either 'cases' or 'test' + 'entry_point'")


def compute_score(response: str, ground_truth: Any, sandbox, mode: str = "fraction", run_timeout: float = 10.0,
                  memory_limit_mb: int = 1024) -> dict[str, Any]:
    if mode not in ("fraction", "all"):
        raise ValueError(f"code reward mode '{mode}' is not fraction or all")
    runs = build_runs(response, ground_truth)
    passed = 0
    statuses = []
    for request, expected in runs:
        result = sandbox.run(dict(request, run_timeout=run_timeout, memory_limit_MB=memory_limit_mb))
        run = result.get("run_result") or {}
        ok = run.get("status") == "Finished" and run.get("return_code") == 0
        if expected is not None:
            ok = ok and _outputs_match(run.get("stdout", ""), expected)
        passed += ok
        statuses.append(run.get("status") or result.get("status"))
    fraction = passed / len(runs)
    score = fraction if mode == "fraction" else float(passed == len(runs))
    return {"score": score, "pass_fraction": fraction, "timeouts": statuses.count("TimeLimitExceeded")}
