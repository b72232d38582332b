"""Pruning baselines and the sparsity check (SparseGPT section 4's comparison points).

* **magnitude** -- per matrix: zero the weights of smallest |w| (Han et al. 2015; the paper's
  "magnitude pruning" baseline);
* **wanda** -- per output row: zero the smallest |w_ij| · ||x_j||₂, x_j the j-th input feature
  over the calibration tokens (Sun et al. 2023, "Pruning by Weights and activations").
  ||x_j||² is n·H_jj/2, so Wanda reads the same ``peakllm.obs.Hessian`` SparseGPT fills.

Patterns: "unstructured" (a ``sparsity`` share anywhere) or "N:M" (N zeros in every group of M
consecutive input weights of a row; 2:4 is what NVIDIA's sparse tensor cores run).
"""
from __future__ import annotations

import re

import torch

from .checks import choice
from .models import context_length
from .quant import Quantizer, check_bits
from .sequential import all_linear_layers, compress_sequentially
from .sparsegpt import SparseGPT, check_pattern

PATTERNS = ("unstructured", "2:4", "4:8")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """"unstructured" -> (0, 0); "2:4" -> (2, 4). Any "N:M" with 0 < N < M is accepted."""
    if pattern == "unstructured":
        return 0, 0
    m = re.fullmatch(r"(\d+):(\d+)", str(pattern))
    if not m:
        raise ValueError(f"pattern={pattern!r} is not allowed; choose one of {list(PATTERNS)} (or any N:M)")
    n, mm = int(m.group(1)), int(m.group(2))
    if not 0 < n < mm:
        raise ValueError(f"pattern={pattern!r}: N:M needs 0 < N < M")
    return n, mm


def _mask_lowest(score: torch.Tensor, sparsity: float, prunen: int, prunem: int, per_row: bool):
    """True where ``score`` is among the lowest: per matrix, per row, or N per group of M."""
    rows, cols = score.shape
    mask = torch.zeros_like(score, dtype=torch.bool)
    if prunen:
        groups = score.reshape(rows, cols // prunem, prunem)
        low = torch.topk(groups, prunen, dim=2, largest=False).indices
        return mask.reshape(rows, cols // prunem, prunem).scatter_(2, low, True).reshape(rows, cols)
    if per_row:
        k = int(cols * sparsity)
        if k:
            mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
        return mask
    k = int(score.numel() * sparsity)
    if k:
        mask.view(-1)[torch.topk(score.reshape(-1), k, largest=False).indices] = True
    return mask


@torch.no_grad()
def magnitude(layer: torch.nn.Module, sparsity: float, prunen: int = 0, prunem: int = 0) -> torch.Tensor:
    """Zero the smallest-|w| weights of ``layer.weight`` in place; returns the mask of zeros."""
    W = layer.weight
    mask = _mask_lowest(W.abs().float(), sparsity, prunen, prunem, per_row=False)
    W.masked_fill_(mask, 0)
    return mask


@torch.no_grad()
def wanda(layer: torch.nn.Module, H: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0):
    """Zero the lowest |w_ij| · ||x_j|| of each row (||x_j|| ∝ sqrt(H_jj)); returns the mask."""
    W = layer.weight
    score = W.abs().float() * torch.sqrt(torch.diag(H))[None, :]  # (rows, columns)
    mask = _mask_lowest(score, sparsity, prunen, prunem, per_row=True)
    W.masked_fill_(mask, 0)
    return mask


def sparsity_report(layers: dict, pattern: str = "unstructured") -> list[dict]:
    """Counted zeros of each named layer, and whether every N:M group holds its N zeros."""
    prunen, prunem = parse_pattern(pattern)
    rows = []
    for name, layer in layers.items():
        W = layer.weight
        zeros = int((W == 0).sum())
        row = {"layer": name, "shape": tuple(W.shape), "zeros": zeros, "sparsity": zeros / W.numel()}
        if prunen:
            groups = (W == 0).reshape(W.shape[0], -1, prunem).sum(dim=2)
            row["n:m holds"] = bool((groups >= prunen).all())
        rows.append(row)
    return rows


METHODS = ("magnitude", "wanda", "sparsegpt")


def check(model, method: str, sparsity: float, pattern: str, bits=None) -> tuple[int, int]:
    """Every argument checked against every layer before any pruning; returns (N, M)."""
    choice("method", method, METHODS)
    prunen, prunem = parse_pattern(pattern)
    if bits is not None:
        check_bits(bits)
        if method != "sparsegpt":
            raise ValueError(f"bits={bits!r}: joint quantization is part of method='sparsegpt' only")
    for layer in all_linear_layers(model).values():
        check_pattern(sparsity, prunen, prunem, layer.weight.shape[1])
    return prunen, prunem


def prune(model, calib: torch.Tensor | None = None, method: str = "sparsegpt", sparsity: float = 0.5,
          pattern: str = "unstructured", blocksize: int = 128, percdamp: float = 0.01, bits=None,
          batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Prune every linear layer of every block of ``model`` in place; one report row per layer.

    ``magnitude`` needs no data; ``wanda`` and ``sparsegpt`` run the sequential driver over the
    calibration windows ``calib`` (n, seqlen). ``bits`` adds SparseGPT's joint quantization.
    A layer that no calibration token reached (an unused expert) falls back to magnitude.
    """
    prunen, prunem = check(model, method, sparsity, pattern, bits)
    if method == "magnitude":
        report = []
        for name, layer in all_linear_layers(model).items():
            magnitude(layer, sparsity, prunen, prunem)
            report.append({"layer": name, "shape": tuple(layer.weight.shape), "tokens": 0, "seconds": 0.0})
        return report
    if calib is None:
        raise ValueError(f"method={method!r} needs calibration windows (calib)")
    try:
        ctx = context_length(model)
    except ValueError:
        ctx = None  # no fixed context (e.g. relative positions only)
    if ctx is not None and calib.shape[-1] > ctx:
        raise ValueError(f"calibration windows of {calib.shape[-1]} tokens exceed the model's context "
                         f"of {ctx}; use calib_seqlen <= {ctx}")

    def apply(name, c):
        if c.n == 0:
            magnitude(c.layer, sparsity, prunen, prunem)
        elif method == "wanda":
            wanda(c.layer, c.H, sparsity, prunen, prunem)
        else:
            c.prune(sparsity, prunen, prunem, blocksize, percdamp,
                    quantizer=Quantizer(bits) if bits is not None else None)

    return compress_sequentially(model, calib, SparseGPT, apply, batch_size, progress, desc=method)


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

    from .timing import best_of

    dev = torch.device(device)
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) < (8, 0):
        raise RuntimeError("2:4 sparse matmul needs a CUDA GPU of compute capability >= 8.0")
    rows_out = []
    for rows, cols in shapes:
        W = torch.randn(rows, cols, device=dev, dtype=torch.float16)
        W = W * (torch.arange(cols, device=dev) % 4 < 2)  # a valid 2:4 pattern
        x = torch.randn(tokens, cols, device=dev, dtype=torch.float16)
        Ws = to_sparse_semi_structured(W)
        dense = best_of(lambda: torch.nn.functional.linear(x, W), dev, repeats)
        sparse = best_of(lambda: torch.nn.functional.linear(x, Ws), dev, repeats)
        rows_out.append({"shape": (rows, cols), "tokens": tokens, "dense_s": dense, "sparse_s": sparse,
                         "speedup": dense / sparse})
    return rows_out
