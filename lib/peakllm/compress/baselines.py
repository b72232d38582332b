"""The pruning baselines SparseGPT is compared with (SparseGPT section 4).

* **magnitude** -- per matrix: zero the weights of smallest |w| (Han et al. 2015; the paper's
  "magnitude pruning" baseline); needs no data;
* **wanda** -- per output row: zero the smallest |w_ij| · ||x_j||₂, x_j the j-th input feature
  over the calibration tokens (Sun et al. 2023, "Pruning by Weights and activations").
  ||x_j||² is n·H_jj/2, so Wanda reads the diagonal of the same ``obs.Hessian`` SparseGPT fills.

Both take a ``sparsity`` share anywhere (unstructured) or N zeros in each group of M
consecutive input weights of a row (``prunen``, ``prunem``).
"""
from __future__ import annotations

import torch


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


@torch.no_grad()
def wanda(layer: torch.nn.Module, H: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0):
    """Zero the lowest |w_ij| · ||x_j|| of each row (||x_j|| ∝ sqrt(H_jj)); returns the mask."""
    W = layer.weight
    score = W.abs().float() * torch.sqrt(torch.diag(H))[None, :]  # (rows, columns)
    mask = mask_lowest(score, sparsity, prunen, prunem, per_row=True)
    W.masked_fill_(mask, 0)
    return mask
