"""A child process that checks math answers with math-verify, one JSON request per line.

It exists so that a pathological expression (sympy can run for minutes) is stopped by killing a
process, which works from any thread; math-verify's own timeout uses SIGALRM and only works in
the main thread. Request: {"gold": "...", "pred": "...", "timeout": s}; reply: {"equal": bool}.
"""

from __future__ import annotations

import json
import sys


def check(gold: str, pred: str, timeout: int) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def main() -> None:
    import math_verify  # noqa: F401  (import once, before announcing readiness)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"equal": check(request["gold"], request["pred"], int(request.get("timeout", 5)))}
        except Exception as exc:  # a reply for every request keeps the protocol in step
            reply = {"equal": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
