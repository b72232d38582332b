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
