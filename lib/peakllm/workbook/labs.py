"""Check cells of the labs: the learner's result against the library's, and the outcome that matters.

A lab is a coding exercise (see ``student``) whose solution region implements a notebook's
mechanism -- SparseGPT's column sweep, a LoRA layer, one cached attention step. Its check cell
calls these helpers, so every lab fails the same way: an ``AssertionError`` (``LabCheckFailed``)
whose first line says what differs, by how much, and what was allowed. The grader
(``python -m peakllm grade``) prints that first line per lab.

    labs.close("W_hat", W_hat, W_library, rtol=1e-3)   # values, to a relative tolerance
    labs.equal("mask", mask, mask_library)             # exact (masks, indices, codes)
    labs.agree("Q", Q, Q_library, at_least=0.99)       # entry by entry, most entries (sweeps that round)
    labs.outcome(err < err_magnitude, "your layer error is not below magnitude pruning's")
    labs.passed("SparseGPT's column sweep")

``close`` compares the whole tensor at once: ``max |yours - ref| <= atol + rtol * max |ref|``,
so a result a few percent off fails a tolerance of 1e-3 wherever the reference is not all zero.

A column sweep that rounds or prunes (GPTQ, SparseGPT) is chaotic in the last bits: two correct
implementations that sum in another order -- another thread count, lazy block updates or none --
can round one weight near a grid midpoint the other way, and the error feedback carries that
difference along the rest of its row. Those labs compare entry by entry with ``agree`` (most
entries equal, to ``rtol``) and their layer error with ``ratio_at_most``; a result a few percent
off, or a sweep without its error feedback, still fails both.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class LabCheckFailed(AssertionError):
    """A lab's check failed; the message's first line says what differs."""


def _array(x, name: str) -> np.ndarray:
    if x is None:
        raise LabCheckFailed(f"{name}: you returned None (did the function reach its return?)")
    if torch.is_tensor(x):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        return x.numpy()
    return np.asarray(x)


def _shape(name: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise LabCheckFailed(f"{name}: your shape is {tuple(a.shape)}, the library's is {tuple(b.shape)}")


def close(name: str, yours, reference, rtol: float = 1e-3, atol: float = 0.0) -> float:
    """``yours`` equals ``reference`` to ``atol + rtol * max|reference|`` everywhere; returns the
    largest difference relative to max|reference| (0 when both are zero)."""
    a, b = _array(yours, name).astype(float), _array(reference, name).astype(float)
    _shape(name, a, b)
    if not np.isfinite(a).all():
        i = np.unravel_index(np.argmax(~np.isfinite(a)), a.shape)
        raise LabCheckFailed(f"{name}: your value at {tuple(int(k) for k in i)} is {a[i]}, not a finite number")
    scale = float(np.abs(b).max()) if b.size else 0.0
    diff = np.abs(a - b)
    worst = float(diff.max()) if diff.size else 0.0
    if worst > atol + rtol * scale:
        i = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        where = f" at {tuple(int(k) for k in i)}" if diff.ndim else ""
        rel = worst / scale if scale else math.inf
        raise LabCheckFailed(f"{name}: yours differs from the library's by {rel:.3g} of its largest value{where} "
                             f"(yours {a[i]:.6g}, library {b[i]:.6g}); allowed {rtol:.3g}")
    return worst / scale if scale else 0.0


def equal(name: str, yours, reference) -> None:
    """``yours`` equals ``reference`` exactly (masks, indices, integer codes)."""
    a, b = _array(yours, name), _array(reference, name)
    _shape(name, a, b)
    bad = a != b
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
        raise LabCheckFailed(f"{name}: {int(bad.sum())} of {bad.size} entries differ from the library's, "
                             f"first at {tuple(int(k) for k in i)} (yours {a[i]}, library {b[i]})")


def agree(name: str, yours, reference, at_least: float = 0.99, rtol: float = 1e-4) -> float:
    """At least ``at_least`` of the entries of ``yours`` equal ``reference``'s (to ``rtol`` of
    max|reference|, exactly for booleans and integers); returns the share that do."""
    a, b = _array(yours, name), _array(reference, name)
    _shape(name, a, b)
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        same = a == b
    else:
        a, b = a.astype(float), b.astype(float)
        same = np.abs(a - b) <= rtol * (float(np.abs(b).max()) if b.size else 0.0)
    share = float(same.mean()) if same.size else 1.0
    if share < at_least:
        i = np.unravel_index(int(np.argmax(~same)), same.shape)
        raise LabCheckFailed(f"{name}: {share:.2%} of your entries equal the library's, fewer than {at_least:.2%}; "
                             f"first difference at {tuple(int(k) for k in i)} (yours {a[i]}, library {b[i]})")
    return share


def ratio_at_most(name: str, yours: float, reference: float, most: float) -> float:
    """``yours / reference <= most`` (an error at most ``most`` times the library's); returns the ratio."""
    yours, reference = float(yours), float(reference)
    if not math.isfinite(yours):
        raise LabCheckFailed(f"{name}: yours is {yours}, not a finite number")
    r = yours / reference if reference else (math.inf if yours else 1.0)
    if r > most:
        raise LabCheckFailed(f"{name}: yours is {yours:.6g}, {r:.4g}x the library's {reference:.6g}; allowed {most:g}x")
    return r


def outcome(ok, message: str) -> None:
    """The outcome the lab is for holds; ``message`` says what does not."""
    if not bool(ok):
        raise LabCheckFailed(message)


def passed(lab: str) -> None:
    print(f"lab passed: {lab}")
