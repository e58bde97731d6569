import pytest
import torch

from rlcamp.algos import pf_ppo_resample, pf_ppo_weights


def test_weights_hand_worked():
    scores = torch.tensor([1.0, -2.0, 0.5, 0.0])
    assert torch.allclose(pf_ppo_weights(scores, "pow", 2.0), torch.tensor([1.0, 4.0, 0.25, 1e-8]))
    assert torch.allclose(pf_ppo_weights(scores, "max_min"), torch.tensor([1.0, 1.0, 1e-8, 1e-8]))
    assert torch.allclose(pf_ppo_weights(scores, "max_random"), torch.tensor([0.4, 0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="unknown algorithm.pf_ppo.reweight_method"):
        pf_ppo_weights(scores, "top_k")


def test_resample_follows_the_weights():
    scores = torch.tensor([0.0, 1.0, 0.0, -3.0])
    idx = pf_ppo_resample(scores, "max_min", generator=torch.Generator().manual_seed(0))
    assert idx.shape == (4,) and set(idx.tolist()) <= {1, 3}
    counts = torch.zeros(4)
    g = torch.Generator().manual_seed(1)
    for _ in range(2000):
        counts += torch.bincount(pf_ppo_resample(scores, "pow", 2.0, g), minlength=4)
    # weights 0, 1, 0, 9 -> shares 0.1 and 0.9
    share = counts / counts.sum()
    assert share[1].item() == pytest.approx(0.1, abs=0.01) and share[3].item() == pytest.approx(0.9, abs=0.01)
