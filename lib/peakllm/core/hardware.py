"""The device: choose it (cuda -> mps -> cpu), synchronize it, and tell what it computes natively.

(``peakllm.core.roofline.describe`` reports its name, memory and ceilings.)
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checks import choice

DEVICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an unavailable explicit choice fails at once."""
    if isinstance(device, torch.device):
        device = device.type
    base = str(device).split(":")[0]
    choice("device", base, DEVICES)
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA GPU is visible here; use device='auto' or 'cpu'")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' but Apple's MPS backend is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def synchronize(device) -> None:
    """Wait for queued kernels, so a timer measures work rather than its launch."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_flags() -> set[str]:
    return set(cpuinfo("flags").split())


def bf16_native(device) -> bool:
    """True where the hardware computes in bf16 (not where torch merely emulates it).

    CUDA: compute capability >= 8.0 (Ampere and later). CPU: the AVX512_BF16 or AMX-BF16
    instructions. MPS: macOS 14 or later.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev) >= (8, 0)
    if dev.type == "mps":
        return bool(torch.backends.mps.is_macos_or_newer(14, 0))
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_threads() -> int:
    """The intra-op thread count the notebooks compute with: ``$PEAKLLM_NUM_THREADS``, else
    ``$OMP_NUM_THREADS``, else the CPUs this process may run on (``taskset`` narrows them).

    Stated once, so that every cell of a run uses the same count whatever the kernel inherited.
    A different count changes the last bits of matmuls and Cholesky factors (MKL splits the work
    differently), so figures are reproducible to the bit only on the same machine and count.
    """
    import os

    for var in ("PEAKLLM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{var}={value!r} must be a positive integer")
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure(device) -> None:
    """Numerics stated, not inherited.

    * A fixed CPU thread count (``cpu_threads``) and torch's deterministic algorithms where it has
      them (``warn_only``: an op without a deterministic version warns instead of failing); on
      CUDA cuDNN's autotuner off and cuBLAS's workspace fixed, as PyTorch's reproducibility notes
      ask. Across CPUs (Intel vs AMD) or thread counts the last bits still differ: MKL and oneDNN
      choose kernels by CPU. ``MKL_CBWR=COMPATIBLE`` makes MKL's own results CPU-independent at
      2.4x the matmul time on this project's machines (README, "Reproducibility"); it is left to the user.
    * On CUDA fp32 matmuls stay IEEE fp32 (TF32 off), as the GPTQ and SparseGPT reference code
      sets it -- the Hessian's Cholesky factorisation and the column sweep are fp32 work that
      TF32's 10-bit mantissa would perturb.
    """
    import os

    torch.set_num_threads(cpu_threads())
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.fp32_precision = "ieee"


def default_dtype(device, encoder_decoder: bool = False, stored: torch.dtype | None = None) -> torch.dtype:
    """The dtype the papers run a model in on ``device``.

    CPU and MPS: fp32 (half-precision matmuls are emulated or slow there). CUDA: the checkpoint's
    own half dtype when it has one (``stored``); else fp16 as SparseGPT / GPTQ load OPT, and bf16
    for the T5 family (Switch: QMoE runs bf16; T5's feed-forward overflows fp16) where the GPU
    computes bf16 natively, fp32 where it does not.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return torch.float32
    if isinstance(stored, str):  # configs written by older transformers hold the name
        stored = getattr(torch, stored, None)
    if stored in (torch.float16, torch.bfloat16):
        return stored
    if encoder_decoder:
        return torch.bfloat16 if bf16_native(dev) else torch.float32
    return torch.float16


def compute_dtype(device) -> torch.dtype:
    """The dtype bitsandbytes layers compute in: bf16 on a GPU that has it natively (QLoRA's
    setting), fp16 on an older GPU, fp32 on the CPU (its bitsandbytes kernels dequantize to fp32)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return torch.float32
    return torch.bfloat16 if bf16_native(dev) else torch.float16
