import itertools
import random

import torch

from rlcamp.batch import Batch
from rlcamp.controller.balance import balance_batch, balanced_partitions, token_budget_micro_batches


def spread(lengths, parts):
    sums = [sum(lengths[i] for i in p) for p in parts]
    return max(sums) - min(sums)


def best_spread(lengths, k):
    """Slow reference: the best equal-size split, by brute force (k = 2)."""
    n = len(lengths)
    best = None
    for left in itertools.combinations(range(n), n // k):
        right = [i for i in range(n) if i not in left]
        s = abs(sum(lengths[i] for i in left) - sum(lengths[i] for i in right))
        best = s if best is None else min(best, s)
    return best


def test_hand_worked():
    # 1..8 into two groups of four: 1+4+6+7 = 18 = 2+3+5+8
    parts = balanced_partitions([1, 2, 3, 4, 5, 6, 7, 8], 2)
    assert sorted(len(p) for p in parts) == [4, 4] and spread(range(1, 9), [[i for i in p] for p in parts]) == 0


def test_partitions_are_complete_equal_sized_and_near_optimal():
    rng = random.Random(0)
    for _ in range(30):
        n = rng.choice([4, 6, 8, 10])
        lengths = [rng.randint(1, 500) for _ in range(n)]
        parts = balanced_partitions(lengths, 2)
        assert sorted(i for p in parts for i in p) == list(range(n))
        assert len(parts[0]) == len(parts[1])
        naive = spread(lengths, [list(range(n // 2)), list(range(n // 2, n))])
        assert spread(lengths, parts) <= max(best_spread(lengths, 2) + max(lengths) // 2, 0)
        assert spread(lengths, parts) <= naive or naive == best_spread(lengths, 2)
    lengths = [rng.randint(1, 1000) for _ in range(64)]
    parts = balanced_partitions(lengths, 4)
    assert all(len(p) == 16 for p in parts) and spread(lengths, parts) <= max(lengths)


def test_balance_batch_restores_order():
    n = 8
    lengths = torch.tensor([30, 1, 1, 1, 28, 2, 2, 3])
    batch = Batch({"attention_mask": torch.ones(n, 2, dtype=torch.long),
                   "response_mask": (torch.arange(30)[None] < lengths[:, None]).long(),
                   "row": torch.arange(n)})
    balanced, restore = balance_batch(batch, 2)
    per_rank = [part["response_mask"].sum().item() for part in balanced.chunk(2)]
    assert abs(per_rank[0] - per_rank[1]) <= 2  # 30+1+1+2 vs 28+1+2+3, instead of 33 vs 35 in order... or worse
    assert torch.equal(balanced.index(restore)["row"], batch["row"])


def test_token_budget_micro_batches():
    lengths = [100, 10, 12, 95, 11, 300, 9, 50]
    groups = token_budget_micro_batches(lengths, 200)
    assert sorted(i for g in groups for i in g) == list(range(8))
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert len(g) == 1 or longest * len(g) <= 200
    assert [5] in groups  # longer than the budget: alone
    assert any(set(g) == {1, 2, 4, 6} for g in groups) or any({1, 2, 4} <= set(g) for g in groups)
