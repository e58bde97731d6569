import pytest

from rlcamp.rewards import RewardError, default_compute_score, get_reward_function, score_sample

CUSTOM = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0.0):
    return {"score": float(solution_str.strip() == ground_truth) + bonus, "length": len(solution_str)}

def exploding(data_source, solution_str, ground_truth, extra_info=None):
    raise ZeroDivisionError("boom")

def wrong_type(data_source, solution_str, ground_truth, extra_info=None):
    return "high"
'''


@pytest.fixture
def custom_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(CUSTOM)
    return str(path)


def test_dispatch_by_data_source():
    assert default_compute_score("openai/gsm8k", "#### 7", "7") == 1.0
    assert default_compute_score("rlcamp/arith", "#### 8", "7") == {"score": 0.0, "flexible": 0.0}
    assert default_compute_score("HuggingFaceH4/MATH-500", r"\boxed{\frac12}", "0.5") == 1.0
    assert default_compute_score("openai/gsm8k", "#### 8", "7", None, format_score=0.1) == 0.1


def test_arith_logs_flexible_accuracy_beside_the_strict_score():
    # the right sum without the format: strict 0, flexible 1; "#### 3 + 4 = 7" reads 3 under the strict rule
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7", "7", format_score=0.1) == {"score": 0.0, "flexible": 1.0}
    assert default_compute_score("rlcamp/arith", "#### 3 + 4 = 7", "7", format_score=0.1) == {"score": 0.1, "flexible": 1.0}
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7\n#### 7", "7") == {"score": 1.0, "flexible": 1.0}
    assert default_compute_score("rlcamp/arith", "#### 7 is 8", "7") == {"score": 1.0, "flexible": 0.0}


def test_arith_marked_score_is_partial_credit_for_the_right_number_after_the_marker():
    # the right number last after "####" but not right after it earns marked_score; strict still earns 1
    assert default_compute_score("rlcamp/arith", "#### answer: 7", "7", marked_score=0.2) == {"score": 0.2, "flexible": 1.0}
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7\n#### 3 + 4 = 7", "7", marked_score=0.2)["score"] == 0.2
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7\n#### 7", "7", marked_score=0.2)["score"] == 1.0
    # no marker, or the right number only before it: nothing (bare sums are not what the task asks)
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7", "7", marked_score=0.2)["score"] == 0.0
    assert default_compute_score("rlcamp/arith", "3 + 4 = 7\n#### 3", "7", marked_score=0.2)["score"] == 0.0
    # the larger of two partial credits: a formatted wrong number and the marked right one
    assert default_compute_score("rlcamp/arith", "#### 3 + 4 = 7", "7", format_score=0.1,
                                 marked_score=0.3)["score"] == 0.3
    for bad in (1.0, -0.1):
        with pytest.raises(RewardError, match="marked_score"):
            default_compute_score("rlcamp/arith", "7", "7", marked_score=bad)


def test_unknown_data_source_lists_known_ones_and_how_to_add():
    with pytest.raises(RewardError) as err:
        default_compute_score("my/dataset", "x", "y")
    message = str(err.value)
    assert "'my/dataset'" in message and "openai/gsm8k" in message
    assert "custom_reward_function.path" in message and "register_scorer" in message


def test_custom_function_by_path_with_kwargs(custom_file):
    fn = get_reward_function(custom_file, "compute_score", {"bonus": 0.5})
    assert score_sample(fn, 0, "anything", " 42 ", "42") == {"score": 1.5, "length": 4}


def test_custom_function_errors(custom_file, tmp_path):
    with pytest.raises(RewardError, match="has no function 'missing'.*compute_score"):
        get_reward_function(custom_file, "missing")
    with pytest.raises(RewardError, match="does not exist"):
        get_reward_function(str(tmp_path / "nope.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(RewardError, match="importing it failed: ModuleNotFoundError"):
        get_reward_function(str(broken))


def test_a_raising_reward_function_names_sample_and_data_source(custom_file):
    fn = get_reward_function(custom_file, "exploding")
    with pytest.raises(RewardError, match=r"'exploding' raised on sample 3 \(data_source='src/x'.*ZeroDivisionError: boom"):
        score_sample(fn, 3, "src/x", "a", "b")
    with pytest.raises(RewardError, match="sample 5 .*data_source='nope'.*no reward scorer"):
        score_sample(get_reward_function(None), 5, "nope", "a", "b")
    with pytest.raises(RewardError, match="returned 'high' on sample 1"):
        score_sample(get_reward_function(custom_file, "wrong_type"), 1, "s", "a", "b")
    with pytest.raises(RewardError, match="unexpected keyword argument 'colour'"):
        score_sample(get_reward_function(None, reward_kwargs={"colour": "red"}), 0, "gsm8k", "#### 1", "1")
