"""The pruning baselines SparseGPT is compared with (SparseGPT section 4).

* **magnitude** -- per matrix: zero the weights of smallest |w| (Han et al. 2015; the paper's
  "magnitude pruning" baseline); needs no data;
* **wanda** -- per output row: zero the smallest |w_ij| · ||x_j||₂, x_j the j-th input feature
  over the calibration tokens (Sun et al. 2023, "Pruning by Weights and activations"). It needs
  only the column norms (``ColumnNorms``: d numbers per layer, where SparseGPT's Hessian holds
  d²); ||x_j||² is also n·H_jj/2, so the diagonal of a Hessian serves as well.

Both take a ``sparsity`` share anywhere (unstructured) or N zeros in each group of M
consecutive input weights of a row (``prunen``, ``prunem``).
"""
from __future__ import annotations

import torch

from .obs import Calibration


def mask_lowest(score: torch.Tensor, sparsity: float, prunen: int, prunem: int, per_row: bool):
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
    mask = mask_lowest(W.abs().float(), sparsity, prunen, prunem, per_row=False)
    W.masked_fill_(mask, 0)
    return mask


class ColumnNorms(Calibration):
    """Wanda's statistic of one layer: Σ_t x_tj² for every input feature j (``sq``, fp32)."""

    def __init__(self, layer, cap: int | None = None):
        super().__init__(cap)
        self.layer = layer
        self.sq = torch.zeros(layer.weight.shape[1], dtype=torch.float32, device=layer.weight.device)

    def add_batch(self, inp: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        X = self.take(inp, keep).float()  # (t, columns)
        self.sq += X.pow(2).sum(dim=0)
        self.n += X.shape[0]

    def share(self, other: "ColumnNorms") -> None:
        super().share(other)
        self.sq = other.sq


class ColumnNormsAndInputs(ColumnNorms):
    """``ColumnNorms`` that also keeps the calibration tokens it folds in (``inputs()``: (n,
    columns) fp32, padding left out): one layer's X, for checking a Wanda or OBS step by hand."""

    def __init__(self, layer, cap: int | None = None):
        super().__init__(layer, cap)
        self.parts: list[torch.Tensor] = []

    def take(self, inp, keep=None):
        X = super().take(inp, keep)  # (t, columns): the real tokens of one batch
        self.parts.append(X.float())
        return X

    def inputs(self) -> torch.Tensor:
        return torch.cat(self.parts)


@torch.no_grad()
def wanda(layer: torch.nn.Module, sq: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0):
    """Zero the lowest |w_ij| · ||x_j|| of each row; ``sq`` (columns,) holds ||x_j||² or any
    positive multiple of it (``ColumnNorms.sq``, or ``H.diag()``). Returns the mask."""
    W = layer.weight
    score = W.abs().float() * torch.sqrt(sq.float())[None, :]  # (rows, columns)
    mask = mask_lowest(score, sparsity, prunen, prunem, per_row=True)
    W.masked_fill_(mask, 0)
    return mask
