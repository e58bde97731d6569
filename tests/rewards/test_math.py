r"""MATH scorer: \boxed{} extraction and equivalence on a hand-written table of tricky answers."""

import sys
import threading
import time

import pytest

from rlcamp.rewards.math import MathVerifier, compute_score, last_boxed

# (response, ground truth, expected score with format_score=0.1)
TABLE = [
    (r"so the answer is \boxed{5}.", "5", 1.0),
    (r"\boxed{5.0}", "5", 1.0),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),  # \dfrac vs \frac
    (r"\boxed{\tfrac12}", r"\frac{1}{2}", 1.0),  # \tfrac, no braces
    (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),  # slash vs \frac
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),  # decimal vs fraction
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1.0),  # unreduced
    (r"\boxed{0.33}", r"\frac{1}{3}", 0.1),  # a rounded decimal is not exact
    (r"\boxed{ 3 }", "3", 1.0),  # spaces
    (r"\boxed{x=3}", "3", 1.0),  # an equation vs its value
    (r"\boxed{3}", "x=3", 1.0),
    (r"\boxed{y = 2x + 3}", "2x+3", 1.0),
    (r"\boxed{90^\circ}", "90", 1.0),  # degrees
    (r"\boxed{90^{\circ}}", r"90^\circ", 1.0),
    (r"\boxed{10\text{ cm}}", "10", 1.0),  # units
    (r"\boxed{5\text{ dollars}}", "5", 1.0),
    (r"\boxed{\$5}", "5", 1.0),  # currency
    (r"\boxed{50\%}", "50", 1.0),  # percent
    (r"\boxed{1,000}", "1000", 1.0),  # thousands separator
    (r"\boxed{\sqrt{18}}", r"3\sqrt{2}", 1.0),  # simplification
    (r"\boxed{\frac{\sqrt2}{2}}", r"\frac{\sqrt{2}}{2}", 1.0),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", 1.0),  # expanded vs factored
    (r"\boxed{-0.5}", r"-\frac{1}{2}", 1.0),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),
    (r"\boxed{(3,\pi/2)}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),  # \left( ... \right) vs plain
    (r"\boxed{\{2,1\}}", r"\{1,2\}", 1.0),  # sets in any order
    (r"\boxed{[1,2]}", "[1,2)", 0.1),  # closed vs half-open interval
    (r"\boxed{\infty}", r"\infty", 1.0),
    (r"\boxed{\text{(A)}}", "A", 1.0),  # multiple choice
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", 1.0),
    (r"\boxed{10000000000}", "10^{10}", 1.0),
    (r"\boxed{4}", "5", 0.1),  # wrong
    (r"\boxed{}", "5", 0.1),  # empty box: well-formed but no answer
    ("The answer is 5.", "5", 0.0),  # no box at all
    (r"\boxed{5", "5", 0.0),  # unbalanced braces
    (r"first \boxed{4}, corrected: \boxed{5}", "5", 1.0),  # the last box counts
    (r"first \boxed{5}, corrected: \boxed{4}", "5", 0.1),
    (r"\boxed{\frac{1}{\frac{1}{2}}}", "2", 1.0),  # nested braces
    (r"$\boxed 5$", "5", 1.0),  # \boxed without braces
    (r"\fbox{5}", "5", 1.0),  # \fbox
    (r"\boxed{2\pi}", "6.283185", 1.0),  # numeric value of a constant
    (r"\boxed{-3}", "3", 0.1),
    (r"\boxed{\frac{3}{4}}", "0.75", 1.0),
]


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout_s=10)
    yield v
    v.close()


@pytest.mark.parametrize("response,truth,expected", TABLE)
def test_table(verifier, response, truth, expected):
    assert compute_score(response, truth, format_score=0.1, verifier=verifier) == expected


def test_table_is_big_enough():
    assert len(TABLE) >= 40


def test_last_boxed():
    assert last_boxed(r"\boxed{\frac{1}{2}} then \boxed{a{b}c}") == "a{b}c"
    assert last_boxed("nothing") is None
    assert last_boxed(r"\boxed{open") is None
    assert last_boxed(r"$\boxed 7$ done") == "7"


def test_pathological_expression_is_stopped_and_the_checker_recovers(verifier):
    start = time.monotonic()
    assert compute_score(r"\boxed{9^{9^{9^{9^{9}}}}}", "2", verifier=MathVerifier(timeout_s=1)) == 0.0
    assert time.monotonic() - start < 15
    assert compute_score(r"\boxed{1/2}", r"\frac12", verifier=verifier) == 1.0


def test_hung_checker_is_killed_and_restarted():
    """The outer guard: a checker that never answers is killed after the timeout, from any thread."""
    hang = [sys.executable, "-c", "import json,time,sys; print(json.dumps({'ready': True}), flush=True); time.sleep(60)"]
    verifier = MathVerifier(timeout_s=1, command=hang)
    results = []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: results.append(verifier.equivalent("1", "2")))
    worker.start()
    worker.join(10)
    assert results == [False] and verifier.timeouts == 1
    assert time.monotonic() - start < 8
    verifier.command = MathVerifier.SERVER  # the next check starts a fresh, working checker
    assert verifier.equivalent("1/2", "0.5")
    verifier.close()


def test_checker_that_cannot_start_says_what_is_missing():
    verifier = MathVerifier(start_timeout_s=5, command=[sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(RuntimeError, match="math-verify"):
        verifier.equivalent("1", "2")
