"""The roofline model (Williams, Waterman & Patterson, CACM 2009): how fast a kernel can run.

Two ceilings bound every kernel: the peak arithmetic rate P (FLOP/s) and the memory
bandwidth B (bytes/s). A kernel of arithmetic intensity I (FLOPs per byte moved) attains at
most min(P, I * B); the ridge point I* = P / B separates memory-bound (I < I*) from
compute-bound kernels. Batch-1 LLM decoding reads every weight once per token for about
2 FLOPs per weight: I = 2 / (bytes per weight), far left of any GPU's ridge -- memory-bound,
which is why fewer bits per weight (case study 2) decode faster.
"""
from __future__ import annotations

import platform
import time

import torch

from .hardware import bf16_native, cpuinfo, resolve_device, synchronize
from .timing import median_of
from .units import human

# Vendor datasheet figures: dense (no 2:4 sparsity) tensor-core peak for 16-bit inputs, fp32
# (non-tensor) peak, both in TFLOP/s, and memory bandwidth in GB/s. Matched by substring of
# torch.cuda.get_device_name(), first match wins (so the longer names come first).
KNOWN_GPUS = [
    # name,        tf16,  tf32, GB/s
    ("H200",        989.0, 67.0, 4800.0),
    ("H100 PCIe",   756.0, 51.0, 2000.0),
    ("H100 NVL",    835.0, 60.0, 3900.0),
    ("H100",        989.0, 67.0, 3350.0),
    ("A100-SXM4-80GB", 312.0, 19.5, 2039.0),
    ("A100 80GB PCIe", 312.0, 19.5, 1935.0),
    ("A100",        312.0, 19.5, 1555.0),
    ("L40S",        362.0, 91.6, 864.0),
    ("A6000",       154.8, 38.7, 768.0),
    ("A10G",         70.0, 31.2, 600.0),
    ("A10",         125.0, 31.2, 600.0),
    ("L4",          121.0, 30.3, 300.0),
    ("RTX 4090",    165.2, 82.6, 1008.0),
    ("RTX 3090",     71.0, 35.6, 936.0),
    ("V100",        125.0, 15.7, 900.0),
    ("T4",           65.0,  8.1, 320.0),
]


def llc_bytes() -> int | None:
    """The size of the CPU's last-level cache (Linux sysfs: the highest cache level of cpu0);
    None where the system does not say."""
    from pathlib import Path

    best = (0, None)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        best = max(best, (level, int(size.rstrip("KMG")) * scale))
    return best[1]


def bandwidth_buffer_bytes(device, llc: int | None = None, available: int | None = None) -> tuple[int, str]:
    """A buffer that no cache holds: 4x the last-level cache (CPU; 1 GiB on a GPU, whose L2 is
    at most 60 MB), within a quarter of the available memory. Returns (bytes, what it is)."""
    if torch.device(device).type != "cpu":
        return 2**30, "1 GiB (GPU L2 caches hold at most 60 MB)"
    import psutil

    llc = llc_bytes() if llc is None else llc
    available = psutil.virtual_memory().available if available is None else available
    want = 4 * llc if llc else 2**30
    size = min(want, available // 4) // 2**20 * 2**20
    what = f"{human(size)}, {size / llc:.1f}x the {human(llc)} last-level cache" if llc else f"{human(size)} (cache size unknown)"
    if size < want:
        what += "; less than 4x: a quarter of the available memory is the limit"
    return size, what


def measure_bandwidth(device, nbytes: int | None = None, repeats: int = 5) -> dict:
    """Read bandwidth (bytes/s): the median time of summing a buffer of ``nbytes`` (default
    ``bandwidth_buffer_bytes``) -- decoding reads its weights, it hardly writes. The buffer is
    freed before returning."""
    dev = torch.device(device)
    what = None
    if nbytes is None:
        nbytes, what = bandwidth_buffer_bytes(dev)
    x = torch.ones(nbytes // 4, device=dev)  # fp32, touched once: the pages exist before timing
    seconds = median_of(x.sum, dev, repeats)  # the first pass warms up
    del x
    return {"bandwidth": nbytes / seconds, "buffer_bytes": nbytes,
            "buffer": what or human(nbytes), "threads": torch.get_num_threads()}


def measure_gemv(device, nbytes: int | None = None, repeats: int = 5) -> dict:
    """The rate at which a matrix-vector product streams its matrix (bytes/s): batch-1 decoding's
    kernel, ``F.linear`` of one fp32 vector with a matrix of ``nbytes`` (default the bandwidth
    buffer), median of ``repeats`` after a warm-up. Below ``measure_bandwidth``'s plain read where
    the kernel does not stream at memory speed (on a CPU, about 60% of it has been seen)."""
    import torch.nn.functional as F

    dev = torch.device(device)
    if nbytes is None:
        nbytes, _ = bandwidth_buffer_bytes(dev)
    k = 4096
    W = torch.ones(max(nbytes // (4 * k), 1), k, device=dev)  # (n, k) fp32, touched once
    x = torch.ones(1, k, device=dev)
    seconds = median_of(lambda: F.linear(x, W), dev, repeats)
    size = W.numel() * 4  # W is freed on return
    return {"gemv_bandwidth": size / seconds, "gemv_bytes": size, "threads": torch.get_num_threads()}


def measure(device, seconds: float = 0.5, bandwidth: bool = True) -> dict:
    """Measured ceilings: fp32 matmul FLOP/s and read bandwidth (``measure_bandwidth``; its
    buffer is large, so ``bandwidth=False`` skips it where only the FLOP/s are wanted)."""
    dev = torch.device(device)
    n = 2048 if dev.type != "cpu" else 512
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)

    def f():
        return a @ b

    f()
    synchronize(dev)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:
        f()
        reps += 1
    synchronize(dev)
    peak = 2 * n**3 * reps / (time.perf_counter() - t0)
    if not bandwidth:
        return {"peak_flops_fp32": peak, "bandwidth": None, "bandwidth_buffer_bytes": None,
                "bandwidth_buffer": "not measured"}
    bw = measure_bandwidth(dev)
    return {"peak_flops_fp32": peak, "bandwidth": bw["bandwidth"], "bandwidth_buffer_bytes": bw["buffer_bytes"],
            "bandwidth_buffer": bw["buffer"], "gemv_bandwidth": measure_gemv(dev, bw["buffer_bytes"])["gemv_bandwidth"]}


def ceilings(device, bandwidth: bool = True) -> dict:
    """Peak FLOP/s (16-bit tensor and fp32) and bandwidth: datasheet if known, else measured
    (``bandwidth=False``: the FLOP/s only)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for key, tf16, tf32, gbs in KNOWN_GPUS:
            if key in name:
                return {"peak_flops_16bit": tf16 * 1e12, "peak_flops_fp32": tf32 * 1e12,
                        "bandwidth": gbs * 1e9, "source": f"datasheet ({key})"}
    m = measure(dev, bandwidth=bandwidth)
    return {"peak_flops_16bit": None, **m,
            "source": f"measured (fp32 matmul; reading {m['bandwidth_buffer']})"}


def attainable(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """FLOP/s a kernel of ``intensity`` FLOP/byte can reach under both ceilings."""
    return min(peak_flops, intensity * bandwidth)


def ridge_point(peak_flops: float, bandwidth: float) -> float:
    return peak_flops / bandwidth


REGIMES = ("memory-bound", "compute-bound", "launch-bound")
WITHIN = 2.0  # a step within this factor of its roofline time is limited by that ceiling


def regime(seconds: float, nbytes: float, flops: float, bandwidth: float, peak_flops: float | None,
           within: float = WITHIN, gemv_bandwidth: float | None = None) -> dict:
    """Which limit a measured step of ``seconds`` sits at, from its figures alone.

    The roofline times of the step are t_mem = bytes / B and t_comp = FLOPs / P; the larger is
    the least time the step can take. A step within ``within`` times that is **memory-bound**
    (t_mem the larger) or **compute-bound**. Where the kernel that reads the weights streams below
    B -- a matrix-vector product on a CPU, ``measure_gemv`` -- a step within ``within`` times
    bytes / B_gemv is memory-bound too, at that kernel's rate (``at`` says which). A slower step
    spends most of its time on neither moving bytes nor arithmetic but on fixed costs per step --
    a Python step, kernel launches, dispatch -- and is **launch-bound**. Returns the regime, the
    times and the step's share of the roofline time (``fraction``, at most 1 unless a ceiling was
    measured too low)."""
    if seconds <= 0 or nbytes <= 0 or bandwidth <= 0:
        raise ValueError(f"seconds={seconds!r}, nbytes={nbytes!r}, bandwidth={bandwidth!r} must all be > 0")
    t_mem = nbytes / bandwidth
    t_comp = flops / peak_flops if peak_flops else 0.0
    bound = max(t_mem, t_comp)
    t_gemv = nbytes / gemv_bandwidth if gemv_bandwidth else None
    at = "read bandwidth"
    if seconds <= within * bound:
        name = "memory-bound" if t_mem >= t_comp else "compute-bound"
    elif t_gemv and t_gemv > t_comp and seconds <= within * t_gemv:
        name, at = "memory-bound", "matrix-vector rate"
    else:
        name = "launch-bound"
    return {"regime": name, "at": at, "t_mem": t_mem, "t_comp": t_comp, "t_gemv": t_gemv, "fraction": bound / seconds}


def plot(peak_flops: float, bandwidth: float, points: dict | None = None, ax=None, title: str = ""):
    """Log-log roofline with named points ``{label: (intensity, achieved FLOP/s)}``."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ridge = ridge_point(peak_flops, bandwidth)
    x = np.logspace(np.log10(ridge) - 3, np.log10(ridge) + 2, 200)
    ax.loglog(x, np.minimum(peak_flops, x * bandwidth), "k-", lw=2, label="roofline")
    ax.axvline(ridge, color="grey", ls=":", lw=1)
    for label, (i, f) in (points or {}).items():
        ax.loglog([i], [f], "o", ms=8, label=label)
    ax.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="FLOP/s", title=title or "roofline")
    ax.legend(fontsize=8)
    return ax


def describe(device: str = "auto", bandwidth: bool = True) -> dict:
    """Name, memory, bf16 support and roofline of the device a notebook will use."""
    dev = resolve_device(device)
    info = {"device": dev.type, "torch": torch.__version__, "python": platform.python_version()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info |= {"name": p.name, "memory_bytes": p.total_memory,
                 "capability": f"{p.major}.{p.minor}"}
    else:
        import psutil

        info |= {"name": cpuinfo("model name") or platform.processor() or platform.machine(),
                 "memory_bytes": psutil.virtual_memory().total, "capability": None,
                 "threads": torch.get_num_threads()}
    info["bf16_native"] = bf16_native(dev)
    info |= ceilings(dev, bandwidth)
    return info


def format_description(info: dict) -> str:
    """The report as aligned ``key : value`` lines, units attached."""
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
