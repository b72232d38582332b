"""GPTQ: one-shot weight quantization from second-order information (Frantar et al., ICLR 2023).

GPTQ rounds the columns of W (rows x columns) left to right onto a per-row grid
(``peakllm.quant``), and after each column moves the rounding error onto the columns not yet
rounded with the OBS update  -err_j · [H⁻¹]_{j, j:}  (section 3.1) -- in blocks of 128 columns
with lazy batch updates (3.2), reading H⁻¹ from its upper Cholesky factor (3.3).

That is exactly SparseGPT's column sweep with no weight masked: SparseGPT (section 3.5) was
built as GPTQ's sweep plus mask selection. So ``GPTQ`` reuses ``SparseGPT.prune`` with
sparsity 0 and a quantizer -- one sweep, one quantizer, for both case studies. QMoE runs the
same sweep on every expert matrix with a ternary grid and 10x stronger dampening (0.1).

RTN (round to nearest, no error feedback) on the same grid is the baseline.
"""
from __future__ import annotations

import torch

from .checks import choice
from .quant import Quantizer, check_bits, rtn
from .sparsegpt import SparseGPT

METHODS = ("gptq", "rtn")


class GPTQ(SparseGPT):
    """Quantizer of one linear layer: ``add_batch`` calibration inputs, then ``quantize``."""

    def quantize(self, bits=4, blocksize: int = 128, percdamp: float = 0.01) -> None:
        check_bits(bits)
        self.prune(0.0, blocksize=blocksize, percdamp=percdamp, quantizer=Quantizer(bits))


def quantize_model(model, calib: torch.Tensor | None = None, method: str = "gptq", bits=4,
                   blocksize: int = 128, percdamp: float = 0.01, batch_size: int = 8,
                   progress: bool = True) -> list[dict]:
    """Quantize every linear layer (and expert matrix) of every block in place.

    ``gptq`` runs the sequential driver over the calibration windows; ``rtn`` needs no data.
    A layer no calibration token reached (an unused expert) falls back to RTN.
    """
    from .sequential import all_linear_layers, compress_sequentially

    choice("method", method, METHODS)
    check_bits(bits)
    if method == "rtn":
        report = []
        for name, layer in all_linear_layers(model).items():
            with torch.no_grad():
                layer.weight.copy_(rtn(layer.weight, bits))
            report.append({"layer": name, "shape": tuple(layer.weight.shape), "tokens": 0, "seconds": 0.0})
        return report
    if calib is None:
        raise ValueError("method='gptq' needs calibration windows (calib)")

    def apply(name, q):
        if q.n == 0:
            with torch.no_grad():
                q.layer.weight.copy_(rtn(q.layer.weight, bits))
        else:
            q.quantize(bits, blocksize, percdamp)

    return compress_sequentially(model, calib, GPTQ, apply, batch_size, progress, desc=f"gptq {bits}-bit")
