r"""MATH scoring: the last \boxed{} of the response, checked for equivalence with math-verify.

Equivalence covers what graders accept: \frac vs / vs decimals, \dfrac, spaces, units and
degrees, percent, ``x=3`` vs ``3``, sets in any order. An answer that takes longer than the
timeout to check (sympy can run away on a pathological expression) scores as wrong; the run
goes on.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time

DEFAULT_TIMEOUT_S = 5.0


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` / ``\fbox{...}`` (nested braces kept), or ``\boxed 5``."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len("\\boxed"):] if rest.startswith("\\boxed") else rest[len("\\fbox"):]
    if rest.startswith(" "):  # "\boxed 5" form: up to the closing $ or the end
        return rest[1:].split("$")[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced: no usable answer


_FAST_STRIP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\s|\$")


def _normalise(answer: str) -> str:
    text = _FAST_STRIP.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


class MathVerifier:
    """Runs math-verify in a child process that is killed and restarted when a check overruns."""

    SERVER = [sys.executable, "-m", "rlcamp.rewards.math_verify_server"]

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, start_timeout_s: float = 60.0,
                 command: list[str] | None = None):
        self.timeout_s, self.start_timeout_s = timeout_s, start_timeout_s
        self.command = command or self.SERVER
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self.timeouts = 0  # checks stopped by the timeout, for metrics

    def _start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(self.command,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      env=env)
        self._buffer = b""
        line = self._read_line(time.monotonic() + self.start_timeout_s)
        if line is None or not json.loads(line).get("ready"):
            self.close()
            raise RuntimeError("the math-verify checker process did not start; is math-verify installed? "
                               "(pip install 'math-verify[antlr4_13_2]')")

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the child died
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def equivalent(self, gold: str, pred: str) -> bool:
        """True when ``pred`` is mathematically equal to ``gold``; False on a timeout."""
        if _normalise(gold) == _normalise(pred):
            return True
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            request = {"gold": gold, "pred": pred, "timeout": max(1, int(self.timeout_s))}
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            line = self._read_line(time.monotonic() + self.timeout_s + 1.0)
            if line is None:
                self.timeouts += 1
                self.close()
                return False
            return bool(json.loads(line)["equal"])

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
            self._proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compute_score(solution_str: str, ground_truth: str, format_score: float = 0.0, score: float = 1.0, *,
                  verifier: MathVerifier) -> float:
    """``score`` when the last \\boxed{} equals the ground truth, ``format_score`` for a wrong boxed answer."""
    answer = last_boxed(solution_str)
    if answer is None:
        return 0.0
    return score if verifier.equivalent(str(ground_truth), answer) else format_score
