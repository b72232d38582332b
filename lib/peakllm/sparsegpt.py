"""SparseGPT: one-shot pruning of a linear layer (Frantar & Alistarh, ICML 2023, Algorithm 1).

Given W (rows x columns) and the Hessian H = 2 X Xᵀ / n of its calibration inputs
(``peakllm.obs``), SparseGPT sweeps the columns left to right in blocks of ``blocksize`` (B):

1. **Mask selection** (section 3.3, "adaptive mask selection"): at the start of each block,
   the weights with the lowest OBS saliency  w² / [H⁻¹]_jj²  in the block -- a ``sparsity``
   share of it -- are marked for removal. For N:M sparsity, the N lowest of each group of M
   consecutive columns (section 3.4).
2. **OBS update** (section 3.2, eq. 3): removing (or quantizing) w_j of every row changes the
   not-yet-processed weights of that row by  -err_j · [H⁻¹]_{j, j:} ,  err_j = (w_j - q_j) / [H⁻¹]_jj,
   with Hinv the upper Cholesky factor of H⁻¹ -- the same row serves every row of W at once.
3. **Lazy batch update** (GPTQ section 3.2): inside a block updates touch only the block;
   the block's accumulated errors reach the remaining columns in one matrix product.

With a ``quantizer`` the kept weights are also rounded to its grid as they are visited: joint
sparsification and quantization (section 3.5), the same sweep as GPTQ.
"""
from __future__ import annotations

import torch

from .checks import in_range
from .obs import Hessian, prepare


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


class SparseGPT(Hessian):
    """Pruner of one linear layer: ``add_batch`` calibration inputs, then ``prune``."""

    def __init__(self, layer: torch.nn.Module):
        self.layer = layer
        super().__init__(layer.weight.shape[1], device=layer.weight.device)

    @torch.no_grad()
    def prune(self, sparsity: float = 0.5, prunen: int = 0, prunem: int = 0, blocksize: int = 128,
              percdamp: float = 0.01, quantizer=None) -> torch.Tensor:
        """Prune (and optionally quantize) ``layer.weight`` in place; returns the mask of zeros."""
        W0 = self.layer.weight
        rows, columns = W0.shape
        check_pattern(sparsity, prunen, prunem, columns)
        if prunem:
            blocksize = max(prunem, blocksize - blocksize % prunem)  # groups never straddle blocks
        W, Hinv = prepare(W0, self.H, percdamp)  # W: (rows, columns) fp32, Hinv: upper, (columns, columns)
        if quantizer is not None:
            quantizer.fit(W)
        mask = torch.zeros_like(W, dtype=torch.bool)  # True = pruned

        for i1 in range(0, columns, blocksize):
            i2 = min(i1 + blocksize, columns)
            W1 = W[:, i1:i2].clone()                          # (rows, B)
            Q1 = torch.zeros_like(W1)                         # the block's final weights
            Err1 = torch.zeros_like(W1)                       # scaled errors, for the lazy update
            Hinv1 = Hinv[i1:i2, i1:i2]                        # (B, B)
            d = torch.diag(Hinv1)                             # (B,)

            if prunen == 0:  # unstructured: lowest saliency share of the whole block
                saliency = W1 ** 2 / d[None, :] ** 2          # (rows, B)
                k = int(saliency.numel() * sparsity)
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
                if k > 0:
                    mask1.view(-1)[torch.topk(saliency.view(-1), k, largest=False).indices] = True
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)

            for i in range(i2 - i1):
                w = W1[:, i]                                  # (rows,)
                if prunen and i % prunem == 0:  # N:M: pick the group's N lowest, with current weights
                    saliency = W1[:, i:i + prunem] ** 2 / d[None, i:i + prunem] ** 2  # (rows, M)
                    low = torch.topk(saliency, prunen, dim=1, largest=False).indices
                    mask1[:, i:i + prunem].scatter_(1, low, True)
                q = w.masked_fill(mask1[:, i], 0.0)
                if quantizer is not None:
                    q = torch.where(mask1[:, i], q, quantizer.quantize(q))
                Q1[:, i] = q
                err = (w - q) / d[i]                          # (rows,)
                W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]  # OBS update inside the block
                Err1[:, i] = err

            W[:, i1:i2] = Q1
            mask[:, i1:i2] = mask1
            W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]              # lazy update of the rest

        W0.copy_(W)  # in place: also right for an expert's slice of a fused parameter
        return mask
