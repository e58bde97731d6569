"""rlcamp starts a Ray of its own unless RAY_ADDRESS names a cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes its cluster for a bare ray.init()


def test_a_cluster_file_left_by_a_killed_ray_start_is_not_joined(tmp_path):
    """A bare ray.init() joins the cluster that file names; a dead one made every later run fail with
    'When connecting to an existing cluster, num_cpus and num_gpus must not be provided'."""
    saved = CLUSTER_FILE.read_text() if CLUSTER_FILE.exists() else None
    CLUSTER_FILE.parent.mkdir(parents=True, exist_ok=True)
    CLUSTER_FILE.write_text("127.0.0.1:1\n")  # nothing listens there
    try:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        code = ("from rlcamp.controller.ray_group import ensure_ray\n"
                "ray = ensure_ray(num_cpus=1)\n"
                "print('cpus', int(ray.cluster_resources()['CPU']))\n"
                "ray.shutdown()\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=180)
    finally:
        if saved is None:
            CLUSTER_FILE.unlink(missing_ok=True)
        else:
            CLUSTER_FILE.write_text(saved)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cpus 1" in out.stdout
