import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlcamp.utils.dist import free_port  # noqa: F401  (the tests' rendezvous ports)


@pytest.fixture(scope="session", autouse=True)
def _cpu_speed():
    torch.set_flush_denormal(True)  # denormals make CPU matmuls 4-10x slower here


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from rlcamp.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A real `rlcamp sandbox serve` on loopback, with a secret in its environment."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("sandbox") / "service.log", "w")
    env = dict(os.environ, RLCAMP_TEST_SECRET="s3cr3t-token", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "rlcamp.cli.main", "sandbox", "serve", "--port", str(port),
                             "--max-concurrent", "4", "--max-queue", "16", "--run-timeout", "3"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    from rlcamp.sandbox.client import wait_healthy

    health = wait_healthy(url, 30, proc)
    yield {"url": url, "run_url": f"{url}/run_code", "pid": proc.pid, "port": port, "health": health}
    proc.terminate()
    proc.wait(10)
    log.close()
