"""Two local Ray nodes (head + worker): ranks land on different nodes and a 2-device job runs across them."""

import json
import os

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (extra 'ray')")
from ray.cluster_utils import Cluster  # noqa: E402

from rlcamp.workers.base import Worker  # noqa: E402
from rlcamp.controller.ray_group import RayWorkerGroup  # noqa: E402
from rlcamp.trainer.main_ppo import main  # noqa: E402
from tests.helpers import make_tiny_setup, tiny_run_overrides  # noqa: E402


class NodeProbe(Worker):
    """A test-only worker (workers proper never import Ray)."""

    def __init__(self, **_):
        pass

    def where(self):
        import torch

        from rlcamp.utils.dist import all_reduce_sum, rank

        node = ray.get_runtime_context().get_node_id()
        return {"node": node, "sum": all_reduce_sum(torch.tensor(float(rank() + 1))).item()}


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # the way a user points rlcamp at a cluster
    yield cluster
    os.environ.pop("RAY_ADDRESS")
    ray.shutdown()
    cluster.shutdown()


def test_ranks_spread_over_nodes_and_talk(two_nodes):
    group = RayWorkerGroup("tests.controller.test_two_nodes:NodeProbe", 2, {}, device="cpu", backend="gloo",
                           stage_timeout_s=120, nnodes=2, name="probe")
    out = group._wait([a.execute.remote("where") for a in group.actors], "where")  # one result per rank
    assert out[0]["node"] != out[1]["node"]
    assert out[0]["sum"] == out[1]["sum"] == 3.0  # gloo across the two nodes
    group.shutdown()


def test_ppo_job_across_two_nodes(two_nodes, tmp_path):
    model, data = make_tiny_setup(tmp_path)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(model, data, run, **{"trainer.nnodes": 2, "trainer.n_gpus_per_node": 1,
                                                         "trainer.total_training_steps": 2, "trainer.stage_timeout_s": 300})
    assert main(overrides) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and "actor/grad_norm" in rows[-1]
