"""The Optimal Brain Surgeon machinery GPTQ and SparseGPT share.

Both compress one linear layer ``y = W x`` (W: rows x columns) so that the layer's output on
calibration inputs X changes least: minimise ||W X - Ŵ X||². That loss has Hessian

    H = 2 X Xᵀ / n          (columns x columns; n calibration tokens)

(GPTQ section 3, SparseGPT section 3). Removing or rounding weight j of a row changes the
others by the OBS update, which needs [H⁻¹]: both algorithms take the *upper Cholesky factor*
of H⁻¹, whose row j holds exactly the coefficients the update needs once columns < j are done
(GPTQ section 3.3, "Cholesky reformulation").
"""
from __future__ import annotations

import torch


class Hessian:
    """Running H = (2/n) Σ x xᵀ over calibration inputs of one layer, in fp32."""

    def __init__(self, columns: int, device="cpu"):
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.n = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        """Fold in inputs of shape (..., columns): every leading index is one token."""
        X = inp.reshape(-1, inp.shape[-1]).t().float()  # (columns, t)
        t = X.shape[1]
        if t == 0:
            return
        self.H *= self.n / (self.n + t)  # keep H an average as n grows
        self.n += t
        X = X * (2 / self.n) ** 0.5
        self.H += X @ X.t()


def prepare(W: torch.Tensor, H: torch.Tensor, percdamp: float = 0.01):
    """Dead inputs, dampening and the inverse: returns (W, Hinv) ready for column sweeps.

    * a dead input (H_jj = 0: the feature was always zero) gets H_jj = 1 and its weights zero;
    * λ = percdamp · mean(diag H) is added to the diagonal, so H is safely positive definite;
    * Hinv = upper Cholesky factor of H⁻¹.
    """
    W, H = W.float().clone(), H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    H.diagonal().add_(damp)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    return W, Hinv


def layer_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """Output reconstruction error per token: tr((W-Ŵ) H (W-Ŵ)ᵀ) / 2 = ||(W-Ŵ)X||² / n."""
    D = (W.float() - W_hat.float())
    return (torch.sum((D @ H) * D) / 2).item()


def remove_one(w: torch.Tensor, H: torch.Tensor, q: int) -> tuple[torch.Tensor, float]:
    """Optimal Brain Surgeon for one weight of one row (Hassibi & Stork 1993; SparseGPT eq. 3).

    Setting w_q to zero and letting all other weights of the row compensate optimally:

        δ = -(w_q / [H⁻¹]_qq) · H⁻¹_{:,q}        loss increase = w_q² / (2 [H⁻¹]_qq)

    with the loss ½ (w - w') H (w - w')ᵀ. Returns (the new row, the loss increase).
    """
    Hinv = torch.linalg.inv(H.double())
    w = w.double()
    delta = -(w[q] / Hinv[q, q]) * Hinv[:, q]
    return (w + delta).to(H.dtype), (w[q] ** 2 / (2 * Hinv[q, q])).item()
