"""The one compression driver: every method of every case study enters here.

A method is three parts:

* ``fallback(layer)`` -- its data-free form, applied to one layer in place (magnitude pruning,
  RTN). With no calibrated form (``compress=None``) this *is* the method, and no data is read;
* ``make(layer)`` -- a collector of the layer's calibration inputs (a ``ColumnSweep``:
  SparseGPT, GPTQ), and ``compress(collector)`` -- the calibrated compression;
* ``only(name, layer)`` -- which layers it touches (QMoE: expert matrices only).

The calibrated path runs ``sequential.compress_sequentially`` (block by block, each block fed
the outputs of the compressed blocks before it). A layer that no calibration token reached --
an expert the router never chose -- gets ``fallback`` instead, and its report row says so; so
does one whose collector reports ``fell_back`` after compressing (QMoE mode: an H with no
Cholesky factor, rounded instead).
"""
from __future__ import annotations

import torch

from ..core.perplexity import context_length
from ..core.timing import Timer
from ..models.structure import all_linear_layers
from .obs import Calibration
from .sequential import calibration_tensors, compress_sequentially


class Untouched(Calibration):
    """Stands in for the collector of a layer the method leaves alone: collects nothing."""

    def add_batch(self, inp, keep=None) -> None:
        pass


def check_calibration(model, calib, method: str) -> None:
    """Calibration present -- token windows (n, seqlen), or padded lines with their attention
    mask (``sequential.calibration_tensors``) -- and no longer than the model's context."""
    if calib is None:
        raise ValueError(f"method={method!r} needs calibration windows or padded lines (calib)")
    seqlen = calibration_tensors(calib)[0].shape[-1]
    try:
        ctx = context_length(model)
    except ValueError:
        return  # no fixed context (relative positions only, e.g. T5 / Switch)
    if seqlen > ctx:
        raise ValueError(f"calibration sequences of {seqlen} tokens exceed the model's context "
                         f"of {ctx}; use calib_seqlen (or max_length) <= {ctx}")


def calibrated(collector) -> str:
    """How a calibrated layer was compressed: as asked, or rounded where its H had no Cholesky factor."""
    return "fallback (no Cholesky)" if getattr(collector, "fell_back", False) else "calibrated"


@torch.no_grad()
def compress_model(model, calib, fallback, make=None, compress=None, *,
                   method: str = "", only=None, batch_size: int = 8, progress: bool = True,
                   desc: str = "", compress_group=None) -> list[dict]:
    """Compress the chosen linear layers of ``model`` in place; one row per layer:
    ``layer``, ``shape``, ``tokens`` (folded into its Hessian), ``routed`` (offered to it),
    ``seconds`` and ``how`` ("data-free", "calibrated", "fallback (no tokens)" or, for a
    collector that ``fell_back`` while compressing, "fallback (no Cholesky)").

    ``compress_group(collectors)``, if given, compresses in one call the calibrated layers of a
    block that share a weight shape (QMoE's batched experts); a shape met once goes to ``compress``."""
    chosen = {n: m for n, m in all_linear_layers(model).items() if only is None or only(n, m)}
    if compress is None:
        rows = []
        for name, layer in chosen.items():
            with Timer(layer.weight.device) as t:
                fallback(layer)
            rows.append({"layer": name, "shape": tuple(layer.weight.shape), "tokens": 0, "routed": 0,
                         "seconds": t.seconds, "how": "data-free"})
        return rows
    check_calibration(model, calib, method)
    how, routed = {}, {}

    def make_(name, layer):
        return make(layer) if name in chosen else Untouched()

    def apply(name, c):
        if isinstance(c, Untouched):
            return
        routed[name] = c.seen
        if c.n == 0:
            fallback(c.layer)
            how[name] = "fallback (no tokens)"
        else:
            compress(c)
            how[name] = calibrated(c)

    def apply_group(items):
        same_shape = {}
        for name, c in items:
            if isinstance(c, Untouched) or c.n == 0:
                apply(name, c)
            else:
                same_shape.setdefault(tuple(c.layer.weight.shape), []).append((name, c))
        for group in same_shape.values():
            if len(group) == 1:
                apply(*group[0])
                continue
            compress_group([c for _, c in group])
            for name, c in group:
                routed[name], how[name] = c.seen, calibrated(c)

    rows = compress_sequentially(model, calib, make_, apply, batch_size, progress, desc=desc or method,
                                 apply_group=apply_group if compress_group is not None else None)
    return [r | {"routed": routed[r["layer"]], "how": how[r["layer"]]} for r in rows if r["layer"] in how]
