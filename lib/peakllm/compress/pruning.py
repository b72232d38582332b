"""SparseGPT and its baselines on a whole model: patterns, argument checks, the sparsity count.

Patterns: "unstructured" (a ``sparsity`` share anywhere) or "N:M" (N zeros in every group of M
consecutive input weights of a row; 2:4 is what NVIDIA's sparse tensor cores run). Methods:
``sparsegpt`` (``peakllm.compress.sparsegpt``), and the baselines ``wanda`` and ``magnitude``
(``peakllm.compress.baselines``). ``prune`` runs any of them through the one compression
driver (``peakllm.compress.driver``).
"""
from __future__ import annotations

import re

import torch

from ..core.checks import choice
from ..models.structure import all_linear_layers
from .baselines import ColumnNorms, magnitude, wanda
from .driver import compress_model
from .quant import Quantizer, check_bits
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


PRUNING_METHODS = ("magnitude", "wanda", "sparsegpt")


def check_args(model, method: str, sparsity: float, pattern: str, bits=None) -> tuple[int, int]:
    """Every argument checked against every layer before any pruning; returns (N, M)."""
    choice("method", method, PRUNING_METHODS)
    prunen, prunem = parse_pattern(pattern)
    if bits is not None:
        check_bits(bits)
        if method != "sparsegpt":
            raise ValueError(f"bits={bits!r}: joint quantization is part of method='sparsegpt' only")
    for layer in all_linear_layers(model).values():
        check_pattern(sparsity, prunen, prunem, layer.weight.shape[1])
    return prunen, prunem


def prune(model, calib=None, method: str = "sparsegpt", sparsity: float = 0.5,
          pattern: str = "unstructured", blocksize: int = 128, percdamp: float = 0.01, bits=None,
          batch_size: int = 8, progress: bool = True) -> list[dict]:
    """Prune every linear layer of every block of ``model`` in place; one report row per layer.

    ``magnitude`` needs no data; ``wanda`` and ``sparsegpt`` run the sequential driver over
    ``calib``: token windows (n, seqlen), or padded lines -- a dict / ``BatchEncoding`` with
    ``input_ids`` and ``attention_mask`` -- whose padding no layer sees. ``bits`` adds
    SparseGPT's joint quantization. A layer that no calibration token reached (an unused expert) falls back to magnitude.
    """
    prunen, prunem = check_args(model, method, sparsity, pattern, bits)

    def fallback(layer):
        magnitude(layer, sparsity, prunen, prunem)

    def compress(c):
        if method == "wanda":
            wanda(c.layer, c.sq, sparsity, prunen, prunem)
        else:
            c.prune(sparsity, prunen, prunem, blocksize, percdamp,
                    quantizer=Quantizer(bits) if bits is not None else None)

    make = ColumnNorms if method == "wanda" else SparseGPT  # Wanda needs d column norms, not a d x d Hessian
    return compress_model(model, calib, fallback, make, None if method == "magnitude" else compress,
                          method=method, batch_size=batch_size, progress=progress)


def prune_fresh(model_name: str, calib: torch.Tensor | None, device="auto", **kwargs):
    """A freshly loaded ``model_name`` pruned with ``prune(**kwargs)``: (model, report rows,
    seconds spent pruning, device-synchronized). The notebook's original model stays dense."""
    from ..core.timing import Timer
    from ..models import load_model

    model = load_model(model_name, device=device)
    with Timer(next(model.parameters()).device) as t:
        rows = prune(model, calib, progress=False, **kwargs)
    return model, rows, t.seconds
