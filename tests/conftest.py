from pathlib import Path

import pytest
import torch

from rlcamp.utils.dist import free_port  # noqa: F401  (the tests' rendezvous ports)
from tests.helpers import start_service, stop_service


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
    svc = start_service(tmp_path_factory.mktemp("sandbox") / "service.log", "--max-concurrent", "4", "--max-queue",
                        "16", "--run-timeout", "3", env={"RLCAMP_TEST_SECRET": "s3cr3t-token"})
    yield svc
    stop_service(svc)
