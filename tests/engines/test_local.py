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


def _bf16_engine(model, lr=1e-2, grad_clip=1e9):
    return LocalEngine(model, OptimConfig(lr=lr, weight_decay=0.1), total_steps=10, warmup_steps=0,
                       grad_clip=grad_clip, compute_dtype=torch.bfloat16, device=torch.device("cpu"))


def test_bf16_compute_keeps_fp32_master_weights_and_steps_them():
    """The model computes in bf16; the optimizer steps fp32 masters with the bf16 gradients added up
    in fp32 over micro batches, exactly as the reference AdamW stepping fp32 weights on those
    gradients; the model then holds the masters rounded to bf16."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    reference = copy.deepcopy(model)
    engine = _bf16_engine(model)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                                foreach=False)
    xs = torch.randn(3, 8, 16)
    for _ in range(2):
        grads = [torch.zeros_like(p) for p in reference.parameters()]
        for x in xs:  # three micro batches into one optimizer step
            model(x.bfloat16()).float().pow(2).mean().backward()
            assert all(p.grad is None for p in model.parameters())  # moved into the fp32 masters
            bf16 = copy.deepcopy(model)
            bf16(x.bfloat16()).float().pow(2).mean().backward()  # the same bf16 gradient, for the reference
            for g, p in zip(grads, bf16.parameters()):
                g += p.grad.float()
        for p, g in zip(reference.parameters(), grads):
            p.grad = g
        engine.optimizer_step()
        ref_opt.step()
        ref_opt.zero_grad()
        # the model's fp32 copies were stepped exactly as fp32 weights; the model holds them in bf16
        for m, r, p in zip(engine.master, reference.parameters(), model.parameters()):
            torch.testing.assert_close(m, r.detach(), atol=1e-6, rtol=1e-6)
            assert torch.equal(p.detach(), m.bfloat16())
    with engine.full_precision():  # checkpoints and exports see the masters
        assert all(p.dtype == torch.float32 for p in model.parameters())
        for p, m in zip(model.parameters(), engine.master):
            assert p.detach() is m or torch.equal(p.detach(), m)
        with torch.no_grad():
            for p in model.parameters():  # what a checkpoint load does
                p.fill_(0.5)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(m, torch.full_like(m, 0.5)) for m in engine.master)
    assert all(torch.equal(p.detach(), torch.full_like(p, 0.5)) for p in model.parameters())


def test_autocast_stays_for_fp32_compute_and_sharded_or_bf16_weights():
    model = torch.nn.Linear(4, 4)
    engine = LocalEngine(model, OptimConfig(), total_steps=1, warmup_steps=0, grad_clip=1.0, compute_dtype=None,
                         device=torch.device("cpu"))
    assert engine.master is None
    bf16 = torch.nn.Linear(4, 4).bfloat16()
    assert _bf16_engine(bf16).master is None  # already in the compute dtype: nothing to keep
