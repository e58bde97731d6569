"""DAPO's binary math reward (data_source=math_dapo), on hand-worked responses."""

import pytest

from rlcamp.rewards.dapo import compute_score, extract_answer
from rlcamp.rewards.registry import default_compute_score


@pytest.mark.parametrize("response, truth, score", [
    ("Adding them gives 12.\nAnswer: 12", "12", 1.0),
    ("So the total is\nAnswer: $1,000$.", "1000", 1.0),  # $, thousands comma and a trailing period
    ("First try Answer: 3, no wait.\nAnswer: \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),  # the last one counts
    ("Answer: 5 \\text{ apples}", "5apples", 1.0),
    ("Answer: 13", "12", -1.0),  # wrong
    ("The answer is 12.", "12", -1.0),  # no Answer: line: DAPO scores it as wrong
    ("Answer: 12\n" + "x" * 400, "12", -1.0),  # outside the last 300 characters
])
def test_dapo_score_by_hand(response, truth, score):
    result = compute_score(response, truth)
    assert result["score"] == score and result["acc"] == (score == 1.0)
    assert default_compute_score("math_dapo", response, truth)["score"] == score


def test_the_prediction_is_reported():
    assert extract_answer("work...\nAnswer: 42") == "42"
    assert compute_score("no answer", "1")["pred"] == ""
