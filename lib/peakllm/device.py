"""The device: choose it (cuda -> mps -> cpu), synchronize it, and describe it."""
from __future__ import annotations

import platform
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


def _cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _cpu_flags() -> set[str]:
    return set(_cpuinfo("flags").split())


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


def report(device: str = "auto") -> dict:
    """Name, memory, bf16 support and roofline of the device a notebook will use."""
    dev = resolve_device(device)
    info = {"device": dev.type, "torch": torch.__version__, "python": platform.python_version()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info |= {"name": p.name, "memory_bytes": p.total_memory,
                 "capability": f"{p.major}.{p.minor}"}
    else:
        import psutil

        info |= {"name": _cpuinfo("model name") or platform.processor() or platform.machine(),
                 "memory_bytes": psutil.virtual_memory().total, "capability": None,
                 "threads": torch.get_num_threads()}
    info["bf16_native"] = bf16_native(dev)
    from .roofline import ceilings

    info |= ceilings(dev)
    return info


def format_report(info: dict) -> str:
    """The report as aligned ``key : value`` lines, units attached."""
    from .memory import human

    def rate(x, unit):
        return "n/a" if x is None else f"{x / 1e9:.0f} {unit}"

    rows = [("device", info["device"]), ("name", info["name"]),
            ("memory", human(info["memory_bytes"])), ("capability", info.get("capability") or "n/a"),
            ("threads", info.get("threads", "n/a")), ("bf16 native", info["bf16_native"]),
            ("peak 16-bit", rate(info["peak_flops_16bit"], "GFLOP/s")),
            ("peak fp32", rate(info["peak_flops_fp32"], "GFLOP/s")),
            ("bandwidth", rate(info["bandwidth"], "GB/s")),
            ("roofline source", info["source"]), ("python", info["python"]), ("torch", info["torch"])]
    return "\n".join(f"{k:<16}: {v}" for k, v in rows)
