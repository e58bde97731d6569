"""GSM8K scoring: the number after the last "####" (strict) or the last number at all (flexible); rlcamp adds
``marked``, the last number after the last "####" ("#### 4 * 6 = 24" reads 24 where strict reads 4).

Numbers are compared by value, not by text: "1,000", "$1000", "1000.00" and "1000." all equal a
ground truth of "1000".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# a number: optional sign and $, digits with proper thousands groups or plain, optional decimals
_NUMBER = r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\$?\.\d+"
_STRICT = re.compile(r"####\s*(" + _NUMBER + r")")
_ANY_NUMBER = re.compile(_NUMBER)


def to_number(text: str) -> Decimal | None:
    """'$1,234.50' -> Decimal('1234.50'); None when it is not a number."""
    cleaned = text.replace("\u2212", "-").replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def extract_answer(solution_str: str, method: str = "strict") -> str | None:
    """The answer text: strict = the number right after the last "####"; flexible = the last number;
    marked = the last number after the last "####"."""
    text = solution_str.replace("\u2212", "-")
    if method == "strict":
        matches = _STRICT.findall(text)
    elif method == "flexible":
        matches = _ANY_NUMBER.findall(text)
    elif method == "marked":
        matches = _ANY_NUMBER.findall(text.rsplit("####", 1)[1]) if "####" in text else []
    else:
        raise ValueError(f"unknown gsm8k method '{method}'; use strict, flexible or marked")
    return matches[-1].strip() if matches else None


def compute_score(solution_str: str, ground_truth: str, method: str = "strict", format_score: float = 0.0,
                  score: float = 1.0) -> float:
    """``score`` for the right number, ``format_score`` for a well-formed wrong one, 0 for no answer."""
    answer = extract_answer(solution_str, method)
    if answer is None:
        return 0.0
    expected = to_number(str(ground_truth))
    if expected is None:
        raise ValueError(f"gsm8k ground truth {ground_truth!r} is not a number")
    return score if to_number(answer) == expected else format_score
