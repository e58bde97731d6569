import pytest
import torch

from rlcamp.workers.base import Worker
from rlcamp.batch import Batch
from rlcamp.controller.dispatch import consecutive, engine_dp_size, gather, places_for, plain, split_for_ranks
from rlcamp.engines.base import Place
from rlcamp.controller.worker_group import InProcessWorkerGroup


def make(n):
    return Batch({"x": torch.arange(n), "y": torch.arange(n * 2).view(n, 2)}, {"s": [f"s{i}" for i in range(n)]})


def test_split_and_gather_restore_order():
    b = make(8)
    parts = split_for_ranks(b, plain(4))
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    back = gather(parts, plain(4))
    assert torch.equal(back["y"], b["y"]) and back["s"] == b["s"]
    assert gather([{"loss": 1.0}, {"loss": 3.0}]) == {"loss": 2.0}
    with pytest.raises(ValueError, match="does not split evenly over 3"):
        split_for_ranks(b, plain(3))


def test_ulysses_groups_share_a_part_and_return_it_once():
    b = make(4)
    places = consecutive(4, 2)  # ranks 0,1 share part 0; ranks 2,3 part 1
    parts = split_for_ranks(b, places)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert gather(parts, places)["x"].tolist() == [0, 1, 2, 3]
    assert gather([{"loss": 1.0}, {"loss": 1.0}, {"loss": 3.0}, {"loss": 3.0}], places) == {"loss": 2.0}
    with pytest.raises(ValueError, match="does not split evenly over 2 data-parallel ranks"):
        split_for_ranks(make(3), places)


def test_parts_follow_the_mesh_not_the_rank_order():
    """A mesh whose data-parallel rank is not rank // group (e.g. tensor parallel inner, data parallel
    outer: ranks 0 and 2 hold part 0, ranks 1 and 3 part 1, the first of each pair returns it)."""
    b = make(4)
    places = [Place(0, 2, True), Place(1, 2, True), Place(0, 2, False), Place(1, 2, False)]
    parts = split_for_ranks(b, places)
    assert [p["x"].tolist() for p in parts] == [[0, 1], [2, 3], [0, 1], [2, 3]]
    results = [Batch({"x": p["x"] * 10 + r}) for r, p in enumerate(parts)]  # tag each by its rank
    assert gather(results, places)["x"].tolist() == [0, 10, 21, 31]  # part 0 from rank 0, part 1 from rank 1
    with pytest.raises(ValueError, match="exactly one rank that returns it"):
        split_for_ranks(b, [Place(0, 2, True), Place(1, 2, True), Place(0, 2, True), Place(1, 2, False)])
    mesh = [{"update": p} for p in places]
    assert places_for("update", mesh) == places and places_for("generate", mesh) == plain(4)
    assert engine_dp_size(mesh) == 2 and engine_dp_size([{}, {}]) == 2


class Doubler(Worker):
    def __init__(self, rank):
        self.rank = rank

    def work(self, batch):
        return Batch({"x": batch["x"] * 2, "rank": torch.full((len(batch),), self.rank)})


def test_in_process_group_splits_calls_and_gathers():
    group = InProcessWorkerGroup([Doubler(0), Doubler(1)])
    out = group.call("work", make(4))
    assert out["x"].tolist() == [0, 2, 4, 6] and out["rank"].tolist() == [0, 0, 1, 1]
