"""The Triton head (fused_kernel_options.impl_backend=triton) against the PyTorch head and the full
logits. Here there is no GPU, so the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1),
which executes the same kernel code; compiled CUDA runs are for a machine that has one."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlcamp.config import blockers
from rlcamp.config.loader import build_config
from rlcamp.models import triton_head
from rlcamp.models.forward import actor_forward, sequence_inputs
from rlcamp.models.head import chunked_log_probs
from rlcamp.models.tiny import build_tiny_model
from tests.conftest import ROOT
from tests.models.test_forward import batch
from tests.models.test_head import grads, leaves, reference

pytest.importorskip("triton")


def in_interpreter(case):
    """Run ``case`` in a fresh process with TRITON_INTERPRET=1: the interpreter must be on before triton is
    first imported (its own library functions, tl.zeros and the like, are decorated then)."""
    return pytest.param(case.__name__, id=case.__name__.removeprefix("case_"))


def triton(hidden, weight, labels, temperature, with_entropy):
    return chunked_log_probs(hidden, weight, labels, temperature, with_entropy, backend="triton")


def case_values_and_gradients_equal_the_full_logits():
    # 70 rows, 301 columns, hidden 80: every tile has a ragged edge (64-row, 128-column, 64-wide blocks);
    # the backward in chunks of 64 rows, the last one short
    triton_head.GRAD_CHUNK_ELEMENTS = 301 * 64
    hidden, weight, labels = leaves(n=70, d=80, vocab=301)
    for with_entropy in (False, True):
        for temperature in (1.0, 0.7):
            got = grads(triton, hidden, weight, labels, temperature, with_entropy)
            want = grads(reference, hidden, weight, labels, temperature, with_entropy)
            for a, b in zip(got, want):
                if b is not None:
                    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def case_under_autocast_it_matches_the_pytorch_head_in_bf16():
    hidden, weight, labels = leaves(n=20, d=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads(triton, hidden, weight, labels, 1.0, True)
        want = grads(chunked_log_probs, hidden, weight, labels, 1.0, True)
    assert got[2].dtype == hidden.dtype and got[3].dtype == weight.dtype
    for a, b in zip(got, want):  # bf16 logits: Triton sums the projection in fp32, torch rounds it to bf16 first
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def case_actor_forward_with_it_equals_the_pytorch_head():
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_pretrained(build_tiny_model(Path(tmp), "qwen2"))
    inputs = sequence_inputs(*batch())

    def run(backend):
        model.zero_grad()
        lp, ent, _ = actor_forward(model, inputs, 0.8, True, remove_padding=True, head_backend=backend)
        m = inputs.attention_mask[:, -inputs.response_len:].bool()
        (lp[:, :m.shape[1]][m].sum() - 0.3 * ent[:, :m.shape[1]][m].sum()).backward()
        return [lp.detach(), ent.detach()] + [p.grad.clone() for p in model.parameters()]

    for a, b in zip(run("triton"), run("torch")):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", [in_interpreter(c) for c in (case_values_and_gradients_equal_the_full_logits,
                                                                case_under_autocast_it_matches_the_pytorch_head_in_bf16,
                                                                case_actor_forward_with_it_equals_the_pytorch_head)])
def test_in_triton_s_interpreter(case):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", f"import tests.models.test_triton_head as t; t.{case}()"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_triton_on_a_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, weight, labels = leaves()
    with pytest.raises(RuntimeError, match="impl_backend=triton: Triton compiles for CUDA devices.*impl_backend=torch"):
        triton(hidden, weight, labels, 1.0, False)
    cfg = build_config(["actor_rollout_ref.model.fused_kernel_options.impl_backend=triton", "trainer.device=cpu"]).config
    said = [b for b in blockers.run_blockers(cfg) if "impl_backend=triton" in b]
    assert said and "TRITON_INTERPRET=1" in said[0]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not [b for b in blockers.run_blockers(cfg) if "impl_backend=triton" in b]
