"""Storage formats of compressed weights: what a sparse or quantized matrix costs in bytes,
and what NVIDIA's 2:4 sparse tensor cores gain in time (SparseGPT section 4, "speedups")."""
from __future__ import annotations

import torch

from .quant import check_bits


def storage_bytes(W: torch.Tensor, fmt: str = "dense", value_bytes: int = 2) -> int:
    """Bytes to store W in a format, with ``value_bytes`` per stored value (2 = fp16/bf16).

    * ``dense``   -- every weight;
    * ``csr``     -- the nonzeros, a 16-bit column index each, a 32-bit offset per row;
    * ``bitmask`` -- the nonzeros plus one bit per position;
    * ``2:4``     -- NVIDIA's semi-structured layout: half the values plus 2 bits of
      position metadata per kept value (needs a valid 2:4 pattern).
    """
    rows, cols = W.shape
    nnz = int((W != 0).sum())
    if fmt == "dense":
        return W.numel() * value_bytes
    if fmt == "csr":
        return nnz * (value_bytes + 2) + 4 * (rows + 1)
    if fmt == "bitmask":
        return nnz * value_bytes + (W.numel() + 7) // 8
    if fmt == "2:4":
        kept = W.numel() // 2
        return kept * value_bytes + (kept * 2 + 7) // 8
    raise ValueError(f"fmt={fmt!r} is not allowed; choose one of ['dense', 'csr', 'bitmask', '2:4']")


def semi_structured_speedup(shapes: list[tuple[int, int]], tokens: int = 2048, device="cuda",
                            repeats: int = 20) -> list[dict]:
    """Time fp16 ``x @ Wᵀ`` dense vs 2:4 sparse (``torch.sparse.to_sparse_semi_structured``).

    Needs an NVIDIA GPU of compute capability >= 8.0 (sparse tensor cores).
    """
    from torch.sparse import to_sparse_semi_structured

    from ..core.timing import best_of

    dev = torch.device(device)
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) < (8, 0):
        raise RuntimeError("2:4 sparse matmul needs a CUDA GPU of compute capability >= 8.0")
    rows_out = []
    for rows, cols in shapes:
        W = torch.randn(rows, cols, device=dev, dtype=torch.float16)
        W = W * (torch.arange(cols, device=dev) % 4 < 2)  # a valid 2:4 pattern
        x = torch.randn(tokens, cols, device=dev, dtype=torch.float16)
        Ws = to_sparse_semi_structured(W)
        dense = best_of(lambda x=x, W=W: torch.nn.functional.linear(x, W), dev, repeats)
        sparse = best_of(lambda x=x, Ws=Ws: torch.nn.functional.linear(x, Ws), dev, repeats)
        rows_out.append({"shape": (rows, cols), "tokens": tokens, "dense_s": dense, "sparse_s": sparse,
                         "speedup": dense / sparse})
    return rows_out


def packed_bytes(rows: int, cols: int, bits) -> int:
    """Bytes of a rows x cols matrix stored on a grid: ``bits`` per weight packed (ternary:
    2 bits, before any entropy coding), plus a 16-bit scale and zero (ternary: wmin, wmax) per row."""
    check_bits(bits)
    b = 2 if bits == "ternary" else bits
    return (rows * cols * b + 7) // 8 + rows * 4
