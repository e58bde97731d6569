import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _cpu_speed():
    torch.set_flush_denormal(True)  # denormals make CPU matmuls 4-10x slower here


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from rlcamp.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()
