"""Units: bytes of a tensor, and figures written for people (1536 B -> '1.5 KiB').

One byte counter (``nbytes``) serves memory accounting, KV caches, collectives and storage
formats, so a tensor's size is computed the same way everywhere.
"""
from __future__ import annotations


def nbytes(t) -> int:
    """Bytes of a tensor's elements (not of its whole storage: a view counts only itself)."""
    return t.numel() * t.element_size()


def human(n: float) -> str:
    """Bytes for people: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_value(value, unit: str) -> str:
    """A figure with its unit, scaled for reading: 1536 B -> '1.5 KiB', 2.5e11 FLOP/s -> '250 GFLOP/s'."""
    if value is None:
        return "n/a"
    if not isinstance(value, (int, float)):
        return f"{value} {unit}"
    if unit == "B":
        return human(value)
    scaled = {"FLOP/s": (1e9, "GFLOP/s"), "B/s": (1e9, "GB/s")}
    if unit in scaled:
        div, unit = scaled[unit]
        return f"{value / div:.0f} {unit}"
    if unit in ("s", "tok/s"):
        return f"{value:.1f} {unit}"
    return f"{value:.6g} {unit}"
