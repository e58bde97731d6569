"""GSM8K scorer on a hand-written table of tricky answers.

Scores use score=1.0 and format_score=0.1, so each row tells apart right (1.0), a well-formed
wrong answer (0.1) and no extractable answer (0.0).
"""

import pytest

from rlcamp.rewards.gsm8k import compute_score, extract_answer

# (response, ground truth, strict score, flexible score)
TABLE = [
    ("She sold 48 + 24 = 72 clips.\n#### 72", "72", 1.0, 1.0),
    ("#### 72", "72", 1.0, 1.0),
    ("####72", "72", 1.0, 1.0),
    ("#### 72.", "72", 1.0, 1.0),  # a full stop ends the sentence, not the number
    ("#### 1,000", "1000", 1.0, 1.0),  # thousands separator
    ("#### 1,234,567", "1234567", 1.0, 1.0),
    ("#### $18", "18", 1.0, 1.0),  # currency sign
    ("#### $ 18", "18", 1.0, 1.0),
    ("#### $1,250.00", "1250", 1.0, 1.0),  # equal by value, not by text
    ("#### 18.00", "18", 1.0, 1.0),
    ("#### 0.5", ".5", 1.0, 1.0),
    ("#### .5", "0.5", 1.0, 1.0),
    ("#### -3", "-3", 1.0, 1.0),
    ("#### \u22123", "-3", 1.0, 1.0),  # unicode minus sign
    ("#### 3", "-3", 0.1, 0.1),  # sign matters
    ("#### 71", "72", 0.1, 0.1),  # well-formed but wrong
    ("#### 7", "72", 0.1, 0.1),  # a prefix of the truth is not the truth
    ("#### 720", "72", 0.1, 0.1),
    ("#### 72 clips", "72", 1.0, 1.0),  # units after the number are fine
    ("#### 5\nWait, that is wrong.\n#### 72", "72", 1.0, 1.0),  # the last #### counts
    ("#### 72\nWait, no.\n#### 5", "72", 0.1, 0.1),
    ("The answer is 72.", "72", 0.0, 1.0),  # no ####: strict finds nothing, flexible takes 72
    ("The answer is seventy-two.", "72", 0.0, 0.0),  # words are not numbers
    ("", "72", 0.0, 0.0),
    ("####", "72", 0.0, 0.0),
    ("#### the answer is 72", "72", 0.0, 1.0),  # strict wants the number right after ####
    ("### 72", "72", 0.0, 1.0),  # three hashes are not the marker
    ("First 10, then 20, finally 72", "72", 0.0, 1.0),
    ("It is 72, not 70", "72", 0.0, 0.1),  # flexible takes the LAST number
    ("#### 72\nCheck: 72 - 24 = 48", "72", 1.0, 0.1),  # flexible is fooled by a trailing check
    ("#### 50%", "50", 1.0, 1.0),  # a percent sign ends the number
    ("#### 3/4", "0.75", 0.1, 0.1),  # fractions are not parsed: 3 then 4
    ("#### 1e3", "1000", 0.1, 0.1),  # scientific notation is not a GSM8K answer format
    ("#### 12,34", "1234", 0.1, 0.1),  # a malformed thousands group is not 1234
    ("#### 007", "7", 1.0, 1.0),  # leading zeros are the same number
    ("#### +5", "5", 1.0, 1.0),
    ("#### 2.50", "2.5", 1.0, 1.0),
    ("#### 2.51", "2.5", 0.1, 0.1),
    ("#### 100000000000000000000", "100000000000000000000", 1.0, 1.0),  # no float rounding
    ("#### 100000000000000000001", "100000000000000000000", 0.1, 0.1),
    ("####   \n  42", "42", 1.0, 1.0),  # whitespace and a newline between marker and number
    ("Total: $3,000 per month\n#### 36,000", "36000", 1.0, 1.0),
    ("x<<48/2=24>>24 #### 24", "24", 1.0, 1.0),  # GSM8K calculator notes in the text
    ("#### 5 apples and 3 pears", "5", 1.0, 0.1),
]


@pytest.mark.parametrize("response,truth,strict,flexible", TABLE)
def test_table(response, truth, strict, flexible):
    assert compute_score(response, truth, method="strict", format_score=0.1) == strict
    assert compute_score(response, truth, method="flexible", format_score=0.1) == flexible


def test_table_is_big_enough():
    assert len(TABLE) >= 40


def test_extract_answer_and_options():
    assert extract_answer("a #### 1,234.", "strict") == "1,234"
    assert extract_answer("no number", "flexible") is None
    assert compute_score("#### 5", "5", score=2.0) == 2.0
    with pytest.raises(ValueError, match="unknown gsm8k method"):
        compute_score("#### 5", "5", method="fuzzy")
    with pytest.raises(ValueError, match="not a number"):
        compute_score("#### 5", "five")
