from rlcamp.data.arith import make_hard_splits, make_splits


def key(row):
    info = row["extra_info"]
    return info["a"], info["op"], info["b"]


def test_main_splits_never_overlap_and_cover_every_sum():
    train, test = make_splits(32, digits=1)
    assert len(test) == 32 and len(train) == 68
    assert not {key(r) for r in train} & {key(r) for r in test}


def test_hard_splits_mix_two_digit_sums_and_one_digit_products():
    train, test = make_hard_splits(seed=0)
    kinds = [key(r)[1] for r in test]
    assert kinds.count("*") == 32 and kinds.count("+") == 32
    assert not {key(r) for r in train} & {key(r) for r in test}
    assert {key(r)[1] for r in train} == {"*", "+"} and len(train) == 68 + 136
    for row in train + test:
        a, op, b = key(row)
        assert (0 <= a <= 9 and 0 <= b <= 9) if op == "*" else (10 <= a <= 99 and 10 <= b <= 99)
        assert row["reward_model"]["ground_truth"] == str(a * b if op == "*" else a + b)
        assert row["prompt"][0]["content"] == f"What is {a} {op} {b}? Write the final answer after ####."
    assert make_hard_splits(seed=0) == (train, test) and make_hard_splits(seed=1) != (train, test)
