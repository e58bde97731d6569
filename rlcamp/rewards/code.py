"""Code rewards: run the model's program against the problem's tests in the sandbox.

The ground truth is a JSON string (or dict) in one of two forms:

- HumanEval style: {"prompt": ..., "test": ..., "entry_point": ...}; the program is the prompt
  (when the response does not define the function itself) + the response + the tests +
  ``check(entry_point)``. One run; it passes when it exits 0.
- stdin/stdout cases: {"cases": [{"stdin": ..., "stdout": ...}, ...]}; one run per case, compared
  line by line with trailing whitespace ignored.
- APPS / TACO / Eurus-2-RL-Data (PRIME) rows: {"inputs": [...], "outputs": [...]}, the same paired
  stdin/stdout cases; with "fn_name" they are call-based: each run calls ``fn_name(*inputs[i])``
  (a top-level function, or a method of ``Solution``) and passes when the JSON of the result equals
  ``outputs[i]`` (or its single element, as APPS wraps return values).

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
    if {"inputs", "outputs"} <= truth.keys():
        if len(truth["inputs"]) != len(truth["outputs"]):
            raise ValueError(f"code ground truth has {len(truth['inputs'])} inputs but {len(truth['outputs'])} outputs")
        if truth.get("fn_name"):
            return [({"code": _call_harness(program, truth["fn_name"], given, want), "language": "python"}, None)
                    for given, want in zip(truth["inputs"], truth["outputs"])]
        return [({"code": program, "stdin": _text(given), "language": "python"}, _text(want))
                for given, want in zip(truth["inputs"], truth["outputs"])]
    raise ValueError("code ground truth needs 'cases', 'inputs' + 'outputs', or 'test' + 'entry_point'")


def _text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _call_harness(program: str, name: str, given: Any, want: Any) -> str:
    """The program, then a call of ``name`` on ``given`` that exits 0 when the result is ``want``."""
    return (f"{program}\n\nimport json as _json, sys as _sys\n"
            f"_f = globals().get({name!r}) or getattr(globals()['Solution'](), {name!r})\n"
            f"_args = _json.loads({json.dumps(given)!r})\n_want = _json.loads({json.dumps(want)!r})\n"
            "_got = _json.loads(_json.dumps(_f(*_args) if isinstance(_args, list) else _f(_args)))\n"
            "_ok = _got == _want or (isinstance(_want, list) and len(_want) == 1 and _got == _want[0])\n"
            "_sys.exit(0 if _ok else 1)\n")


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
