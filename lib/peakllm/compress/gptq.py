"""GPTQ: one-shot weight quantization from second-order information (Frantar et al., ICLR 2023).

GPTQ rounds the columns of W (rows x columns) left to right onto a per-row grid
(``peakllm.compress.quant``), and after each column moves the rounding error onto the columns
not yet rounded with the OBS update  -err_j · [H⁻¹]_{j, j:}  (section 3.1) -- in blocks of 128
columns with lazy batch updates (3.2), reading H⁻¹ from its upper Cholesky factor (3.3).

That loop is ``peakllm.compress.obs.ColumnSweep``; GPTQ is the sweep with a grid and no mask,
SparseGPT (section 3.5 of its paper) the same sweep with mask selection: siblings over one core.
QMoE runs GPTQ on every expert matrix with a ternary grid and 10x stronger dampening (0.1).

RTN (round to nearest, no error feedback) on the same grid is the baseline, and the fallback
(``round_layer``) of a layer no calibration token reached. QMoE runs its experts in QMoE mode
(``keep_dead``, ``obs.prepare``): dead inputs keep their weights, and an expert whose H has no
Cholesky factor is rounded on the same grid instead of stopping the run.
"""
from __future__ import annotations

from ..core.checks import choice
from .obs import ColumnSweep
from .quant import Quantizer, check_bits, rtn

QUANT_METHODS = ("gptq", "rtn")


class GPTQ(ColumnSweep):
    """Quantizer of one linear layer: ``add_batch`` calibration inputs, then ``quantize``
    (``GPTQ(layer, keep_dead=True)``: QMoE mode, see ``ColumnSweep``)."""

    def quantize(self, bits=4, blocksize: int = 128, percdamp: float = 0.01) -> None:
        check_bits(bits)
        self.sweep(blocksize, percdamp, quantizer=Quantizer(bits))


def round_layer(layer, bits=4) -> None:
    """RTN on the layer's per-row grid, in place: the data-free method, and the fallback of a
    layer no calibration token reached (GPTQ and QMoE alike)."""
    layer.weight.copy_(rtn(layer.weight, bits))


def quantize_model(model, calib=None, method: str = "gptq", bits=4,
                   blocksize: int = 128, percdamp: float = 0.01, batch_size: int = 8,
                   progress: bool = True) -> list[dict]:
    """Quantize every linear layer (and expert matrix) of every block in place.

    ``gptq`` runs the sequential driver over ``calib`` -- token windows (n, seqlen), or padded
    lines with their ``attention_mask`` (a dict / ``BatchEncoding``); ``rtn`` needs no data.
    A layer no calibration token reached (an unused expert) falls back to RTN.
    """
    from .driver import compress_model

    choice("method", method, QUANT_METHODS)
    check_bits(bits)
    return compress_model(model, calib, lambda layer: round_layer(layer, bits), GPTQ,
                          None if method == "rtn" else lambda q: q.quantize(bits, blocksize, percdamp),
                          method=method, batch_size=batch_size, progress=progress, desc=f"gptq {bits}-bit")
