"""Weight quantization grids: one quantizer for GPTQ, SparseGPT's joint mode and RTN.

A grid maps each weight to the nearest of a few values chosen per output row:

* ``k`` bits, asymmetric min-max (GPTQ's grid): 2^k levels spread from the row's min to max,
  ``scale = (max - min) / (2^k - 1)``, ``zero = round(-min / scale)``,
  ``q(w) = scale * (clamp(round(w / scale) + zero, 0, 2^k - 1) - zero)``;
* ``ternary`` (QMoE section 4): the three values {min, 0, max} of the row,
  w > max/2 -> max, w < min/2 -> min, otherwise 0.

``Quantizer.fit(W)`` sets the per-row parameters from a weight matrix (rows x columns);
``quantize(w)`` rounds a column (or any tensor broadcastable to rows x k) onto the grid.
RTN (round to nearest) is ``Quantizer(bits).fit(W).quantize(W)``.

The min-max grid (``scale``, ``zero``, ``maxq``) follows the quantizer of the IST-DASLab GPTQ
reference implementation (github.com/IST-DASLab/gptq, Apache-2.0), written independently; see
THIRD_PARTY_NOTICES.md.
"""
from __future__ import annotations

import torch

BITS = (2, 3, 4, 8, "ternary")


def check_bits(bits) -> None:
    if bits not in BITS:
        raise ValueError(f"bits={bits!r} is not supported; choose one of {list(BITS)}")


class Quantizer:
    def __init__(self, bits=4):
        check_bits(bits)
        self.bits = bits

    def fit(self, W: torch.Tensor) -> "Quantizer":
        """Per-row grid parameters from W (rows x columns). Returns self."""
        W = W.float()
        wmin = torch.minimum(W.min(dim=1).values, torch.zeros(1, device=W.device))  # (rows,)
        wmax = torch.maximum(W.max(dim=1).values, torch.zeros(1, device=W.device))
        if self.bits == "ternary":
            self.wmin, self.wmax = wmin[:, None], wmax[:, None]  # (rows, 1)
            return self
        maxq = 2 ** self.bits - 1
        flat = wmax == wmin  # an all-zero row: any grid reproduces it
        wmin, wmax = torch.where(flat, -1.0, wmin), torch.where(flat, 1.0, wmax)
        self.scale = ((wmax - wmin) / maxq)[:, None]  # (rows, 1)
        self.zero = torch.round(-wmin / self.scale.squeeze(1))[:, None]
        self.maxq = maxq
        return self

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Nearest grid value of each weight; ``w`` is (rows,) -- one column, as the sweep rounds
        them -- or (rows, k). One new tensor, worked on in place: the sweep calls this per column."""
        col = w.dim() == 1
        w = w[:, None] if col else w
        if self.bits == "ternary":
            q = torch.where(w > self.wmax / 2, self.wmax, torch.where(w < self.wmin / 2, self.wmin, 0.0))
        else:  # scale · (clamp(round(w / scale) + zero, 0, maxq) - zero)
            q = torch.div(w, self.scale).round_().add_(self.zero).clamp_(0, self.maxq).sub_(self.zero).mul_(self.scale)
        return q[:, 0] if col else q


def rtn(W: torch.Tensor, bits=4) -> torch.Tensor:
    """Round-to-nearest on the per-row grid: the baseline GPTQ improves on."""
    return Quantizer(bits).fit(W).quantize(W.float()).to(W.dtype)


def gaussian_zero_share(cols: int, rows: int = 2048, seed: int = 0) -> float:
    """Share of zeros the ternary grid leaves on ``rows`` rows of ``cols`` i.i.d. Gaussian weights:
    the threshold is half each row's extreme, and longer rows reach further into the tails."""
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))  # (rows, cols)
    return (rtn(W, "ternary") == 0).float().mean().item()


def parse_bits(bits):
    """A bit width as a notebook or papermill gives it: 2, "2" or "ternary"; checked."""
    if isinstance(bits, str) and bits.strip().isdigit():
        bits = int(bits)
    check_bits(bits)
    return bits
