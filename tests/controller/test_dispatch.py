import pytest
import torch

from rlcamp.batch import Batch
from rlcamp.controller.dispatch import gather, split_for_ranks
from rlcamp.controller.worker_group import InProcessWorkerGroup


def make(n):
    return Batch({"x": torch.arange(n), "y": torch.arange(n * 2).view(n, 2)}, {"s": [f"s{i}" for i in range(n)]})


def test_batch_ops():
    b = make(6)
    assert len(b) == 6 and b["s"][2] == "s2"
    assert b.index([5, 0])["x"].tolist() == [5, 0] and b.index([5, 0])["s"] == ["s5", "s0"]
    assert [len(p) for p in b.split(4)] == [4, 2] and [len(p) for p in b.chunk(4)] == [2, 2, 1, 1]
    assert Batch.concat(b.chunk(3))["s"] == b["s"]
    r = make(2).repeat_interleave(3)
    assert r["x"].tolist() == [0, 0, 0, 1, 1, 1] and r["s"] == ["s0"] * 3 + ["s1"] * 3
    with pytest.raises(ValueError, match="has 3 rows, the batch has 6"):
        b["z"] = torch.zeros(3)
    with pytest.raises(ValueError, match="disagree"):
        Batch({"a": torch.zeros(2)}, {"b": [1]})


def test_split_and_gather_restore_order():
    b = make(8)
    parts = split_for_ranks(b, 4)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    back = gather(parts)
    assert torch.equal(back["y"], b["y"]) and back["s"] == b["s"]
    assert gather([{"loss": 1.0}, {"loss": 3.0}]) == {"loss": 2.0}
    with pytest.raises(ValueError, match="does not split evenly over 3"):
        split_for_ranks(b, 3)


def test_ulysses_groups_share_a_part_and_return_it_once():
    b = make(4)
    parts = split_for_ranks(b, 4, replicas=2)  # ranks 0,1 share part 0; ranks 2,3 part 1
    assert [p["x"].tolist() for p in parts] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert gather(parts, replicas=2)["x"].tolist() == [0, 1, 2, 3]
    assert gather([{"loss": 1.0}, {"loss": 1.0}, {"loss": 3.0}, {"loss": 3.0}], replicas=2) == {"loss": 2.0}
    with pytest.raises(ValueError, match="does not split evenly over 2 data-parallel ranks"):
        split_for_ranks(make(3), 4, replicas=2)


class Doubler:
    def __init__(self, rank):
        self.rank = rank

    def work(self, batch):
        return Batch({"x": batch["x"] * 2, "rank": torch.full((len(batch),), self.rank)})


def test_in_process_group_splits_calls_and_gathers():
    group = InProcessWorkerGroup([Doubler(0), Doubler(1)])
    out = group.call("work", make(4))
    assert out["x"].tolist() == [0, 2, 4, 6] and out["rank"].tolist() == [0, 0, 1, 1]
