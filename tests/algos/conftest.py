import pytest
import torch


@pytest.fixture(autouse=True)
def _float64():
    """The math is checked in float64, so hand-worked values compare tightly; restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
