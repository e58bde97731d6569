r"""DAPO's math reward (``data_source=math_dapo``, the DAPO-Math-17k rows of verl's NPU work order).

DAPO's prompt asks for a last line "Answer: $Answer". The score reads the answer after the last
"Answer:" in the response's last 300 characters (a \boxed{...} there is unwrapped), normalises
both it and the ground truth (spaces, $, \left/\right, \dfrac, a trailing period, thousands
commas, \text{...} wrappers), and gives +1 when they are equal, -1 otherwise: DAPO's binary
reward, wrong and unformatted answers alike. ``acc`` and ``pred`` are reported beside the score.
"""

from __future__ import annotations

import re

from rlcamp.rewards.math import _normalise, last_boxed

TAIL_CHARS = 300
_ANSWER = re.compile(r"Answer\s*:\s*(.*)", re.IGNORECASE)
_TEXT = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def extract_answer(solution_str: str) -> str | None:
    """The answer of the last "Answer:" line within the response's last 300 characters, or None."""
    found = _ANSWER.findall(solution_str[-TAIL_CHARS:])
    if not found:
        return None
    answer = found[-1].strip()
    boxed = last_boxed(answer)
    return boxed if boxed is not None else answer


def normalise(answer: str) -> str:
    text = _TEXT.sub(r"\1", answer)
    text = _THOUSANDS.sub("", _normalise(text))
    return text


def compute_score(solution_str: str, ground_truth: str, **_) -> dict:
    pred = extract_answer(solution_str)
    right = pred is not None and normalise(pred) == normalise(str(ground_truth))
    return {"score": 1.0 if right else -1.0, "acc": right, "pred": pred or ""}
