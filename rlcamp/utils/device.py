"""The one place that knows accelerator types: which device, which collective backend, CPU tuning."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> str:
    """'auto' -> cuda if available, else npu (torch_npu), else cpu; an explicit device is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if npu_available():
            return "npu"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but torch sees no CUDA device (torch "
                           f"{torch.__version__}); install a CUDA build of torch 2.13.0 or use trainer.device=cpu")
    if name == "npu" and not npu_available():
        raise RuntimeError("trainer.device=npu needs Ascend's torch_npu installed and a visible NPU; "
                           "or use trainer.device=cpu")
    return name


def npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return torch.npu.is_available()


def cpu_matmul_is_fast(dtype: torch.dtype) -> bool:
    """Whether torch has real matrix kernels for ``dtype`` on this CPU. bf16 and fp16 matmuls go to
    oneDNN only where it supports them (bf16: AVX-512 or AMX; fp16: AVX512-FP16 or AMX-FP16), the
    same checks torch makes; elsewhere torch falls back to a reference loop. On an AVX2 machine
    (AMD EPYC, 2 cores) a 2048^3 matmul ran at 0.3 GFLOP/s in bf16 against 174 in fp32, and a
    [tokens, 576] x [576, 1536] linear layer at 19 against 83 (``benchmarks/RESULTS.md``)."""
    if dtype == torch.float32:
        return True
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if check is None or not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, check):
        return False
    return bool(getattr(torch.ops.mkldnn, check)())


def cpu_features() -> str:
    """The vector extensions torch uses here, for messages (e.g. 'AVX2')."""
    return torch.backends.cpu.get_cpu_capability()


def torch_compile_problem(device: str) -> str | None:
    """Why torch.compile cannot run here, or None: on CPU, inductor compiles C++ and needs a compiler."""
    import shutil

    if device == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU compiles C++ and no C++ compiler (g++) is installed; install one to use it"
    return None


def collective_backend(device: str) -> str:
    return {"cuda": "nccl", "npu": "hccl"}.get(device, "gloo")


def tune_cpu(num_threads: int | None = None) -> None:
    """Denormal flushing (4-10x faster decoding here), freed memory kept for reuse, and one thread
    per available core."""
    torch.set_flush_denormal(True)
    keep_freed_memory()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(num_threads or max(available, 1))


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to serve every allocation from its heap and never hand freed memory
    back to the OS. By default blocks over 32 MB are fresh mmaps and the heap is trimmed as it
    shrinks, so each training step's activations and logits are new pages, every one a page fault
    when first touched: a PPO step on SmolLM2 in bf16 spent ~20% of its time there (11.4 s against
    14.1 s, ``benchmarks/RESULTS.md``). The price: resident memory stays at its peak. No-op (False)
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def to_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{name}'; use one of {sorted(DTYPES)}")
    return DTYPES[name]
