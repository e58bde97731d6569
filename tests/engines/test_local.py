"""The engine's fused AdamW takes the same steps as torch's reference per-tensor AdamW."""

import copy

import torch

from rlcamp.config.schema import OptimConfig
from rlcamp.engines.local import LocalEngine


def test_fused_adamw_matches_the_reference_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    reference = copy.deepcopy(model)
    optim = OptimConfig(lr=1e-2, weight_decay=0.1)
    engine = LocalEngine(model, optim, total_steps=10, warmup_steps=0, grad_clip=1e9, compute_dtype=None,
                         device=torch.device("cpu"))
    assert engine.optimizer.defaults["fused"]
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, betas=tuple(optim.betas), eps=optim.eps,
                                weight_decay=0.1, foreach=False)
    x = torch.randn(8, 16)
    for _ in range(3):
        model(x).pow(2).mean().backward()
        engine.optimizer_step()
        reference(x).pow(2).mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
