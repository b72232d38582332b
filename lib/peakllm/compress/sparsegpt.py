"""SparseGPT: one-shot pruning of a linear layer (Frantar & Alistarh, ICML 2023, Algorithm 1).

Given W (rows x columns) and the Hessian H = 2 X Xᵀ / n of its calibration inputs
(``peakllm.compress.obs``), SparseGPT sweeps the columns left to right in blocks of ``blocksize`` (B):

1. **Mask selection** (section 3.3, "adaptive mask selection"): at the start of each block,
   the weights with the lowest OBS saliency  w² / [H⁻¹]_jj²  in the block -- a ``sparsity``
   share of it -- are marked for removal. For N:M sparsity, the N lowest of each group of M
   consecutive columns (section 3.4).
2. **OBS update** (section 3.2, eq. 3): removing (or quantizing) w_j of every row changes the
   not-yet-processed weights of that row by  -err_j · [H⁻¹]_{j, j:} ,  err_j = (w_j - q_j) / [H⁻¹]_jj,
   with Hinv the upper Cholesky factor of H⁻¹ -- the same row serves every row of W at once.
3. **Lazy batch update** (GPTQ section 3.2): inside a block updates touch only the block;
   the block's accumulated errors reach the remaining columns in one matrix product.

Steps 2 and 3 are ``peakllm.compress.obs.ColumnSweep``, which GPTQ shares; this module adds
step 1. With a ``quantizer`` the kept weights are also rounded to its grid as they are visited:
joint sparsification and quantization (section 3.5).

The names (W, H, Hinv, W1, Q1, Err1, blocksize, percdamp, prunen, prunem) follow the
IST-DASLab reference implementation (github.com/IST-DASLab/sparsegpt, Apache-2.0), so this
code reads beside it; see THIRD_PARTY_NOTICES.md.
"""
from __future__ import annotations

import torch

from ..core.checks import in_range
from .obs import ColumnSweep


def check_pattern(sparsity: float, prunen: int = 0, prunem: int = 0, columns: int | None = None) -> None:
    """Fail early on a sparsity outside [0, 1) or an impossible N:M pattern."""
    if prunen or prunem:
        if not (0 < prunen < prunem):
            raise ValueError(f"N:M pattern {prunen}:{prunem} needs 0 < N < M (e.g. 2:4, 4:8)")
        if columns is not None and columns % prunem:
            raise ValueError(f"N:M pattern {prunen}:{prunem}: M={prunem} does not divide the "
                             f"input width {columns}")
    else:
        in_range("sparsity", sparsity, 0, 1)


def lowest(x: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (x's shape) of the k lowest entries of x, all of its entries ranked together.

    The entries at most the k-th smallest value (``torch.kthvalue``, a selection: several times
    faster than ``torch.topk`` at k = half the block); where ties at that value would make more
    than k, ``torch.topk`` picks, so the mask is always topk's."""
    flat = x.reshape(-1)
    chosen = flat <= torch.kthvalue(flat, k).values
    if int(chosen.sum()) != k:
        chosen = torch.zeros_like(chosen)
        chosen[torch.topk(flat, k, largest=False).indices] = True
    return chosen.view_as(x)


class SparseGPT(ColumnSweep):
    """Pruner of one linear layer: ``add_batch`` calibration inputs, then ``prune``."""

    @torch.no_grad()
    def prune(self, sparsity: float = 0.5, prunen: int = 0, prunem: int = 0, blocksize: int = 128,
              percdamp: float = 0.01, quantizer=None) -> torch.Tensor:
        """Prune (and optionally quantize) ``layer.weight`` in place; returns the mask of zeros."""
        check_pattern(sparsity, prunen, prunem, self.layer.weight.shape[1])
        if prunem:
            blocksize = max(prunem, blocksize - blocksize % prunem)  # groups never straddle blocks

        def select(W1, d, i, mask1):
            if prunen == 0 and i == 0:  # unstructured: the lowest-saliency share of the whole block
                saliency = W1 ** 2 / d[None, :] ** 2          # (rows, B)
                k = int(saliency.numel() * sparsity)
                if k > 0:
                    mask1 |= lowest(saliency, k)
            elif prunen and i % prunem == 0:  # N:M: the group's N lowest, with current weights
                saliency = W1[:, i:i + prunem] ** 2 / d[None, i:i + prunem] ** 2  # (rows, M)
                low = torch.topk(saliency, prunen, dim=1, largest=False).indices
                mask1[:, i:i + prunem].scatter_(1, low, True)

        return self.sweep(blocksize, percdamp, quantizer, select)
