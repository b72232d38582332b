"""The Optimal Brain Surgeon column sweep GPTQ, SparseGPT and QMoE share.

Both compress one linear layer ``y = W x`` (W: rows x columns) so that the layer's output on
calibration inputs X changes least: minimise ||W X - Ŵ X||². That loss has Hessian

    H = 2 X Xᵀ / n          (columns x columns; n calibration tokens)

(GPTQ section 3, SparseGPT section 3). Removing or rounding weight j of a row changes the
others by the OBS update, which needs [H⁻¹]: both algorithms take the *upper Cholesky factor*
of H⁻¹, whose row j holds exactly the coefficients the update needs once columns < j are done
(GPTQ section 3.3, "Cholesky reformulation").

``ColumnSweep`` follows the structure and names (W, H, Hinv, W1, Q1, Err1, blocksize, percdamp)
of the IST-DASLab reference implementations of GPTQ and SparseGPT (github.com/IST-DASLab/gptq,
github.com/IST-DASLab/sparsegpt; Apache-2.0), written independently; see THIRD_PARTY_NOTICES.md.
"""
from __future__ import annotations

import torch

from ..core.timing import Timer


class Calibration:
    """What every collector of a layer's calibration inputs keeps track of: ``seen`` counts every
    token offered, ``n`` those folded in -- at most ``cap`` (QMoE's per-expert cap); ``seconds``
    the time spent folding them in through ``add_timed``."""

    def __init__(self, cap: int | None = None):
        self.cap = cap
        self.n = self.seen = 0
        self.seconds = 0.0

    def take(self, inp: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs of shape (..., columns) as (t, columns) tokens, counted, capped, then masked.

        ``keep`` (t,) bool, if given, marks the tokens that go into the statistics (QMoE leaves
        special tokens out). As in QMoE's reference code, the cap counts every token offered,
        kept or not: an expert takes its first ``cap`` tokens, and the mask is applied to those."""
        X = inp.reshape(-1, inp.shape[-1])  # (tokens, columns)
        before = self.seen  # tokens offered in earlier batches
        self.seen += X.shape[0]
        if self.cap is not None:
            room = max(0, self.cap - before)
            X, keep = X[:room], (None if keep is None else keep[:room])
        return X if keep is None else X[keep]

    def add_timed(self, inp: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """``add_batch(inp, keep)``, its time (device-synchronized) added to ``seconds``."""
        with Timer(inp.device) as t:
            self.add_batch(inp, keep)
        self.seconds += t.seconds

    def share(self, other: "Calibration") -> None:
        """Take ``other``'s statistics: a layer fed the very same inputs (q, k, v) has the same."""
        self.n, self.seen = other.n, other.seen


class Hessian(Calibration):
    """Running H = (2/n) Σ x xᵀ over calibration inputs of one layer, in fp32."""

    def __init__(self, columns: int, device="cpu", cap: int | None = None):
        super().__init__(cap)
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)

    def add_batch(self, inp: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Fold in inputs of shape (..., columns): every leading index is one token (``keep``:
        which of them, ``Calibration.take``)."""
        X = self.take(inp, keep).t().float()  # (columns, t)
        t = X.shape[1]
        if t == 0:
            return
        self.H *= self.n / (self.n + t)  # keep H an average as n grows
        self.n += t
        X = X * (2 / self.n) ** 0.5
        self.H += X @ X.t()

    def share(self, other: "Hessian") -> None:
        """The same H, not a copy: nothing writes H in place after collection (``prepare``
        works on a copy)."""
        super().share(other)
        self.H = other.H


DAMP_FLOOR = 1e-6  # QMoE's batch_gptq: λ is at least this ("catch all zeros")


def dampened(H: torch.Tensor, percdamp: float = 0.01, keep_dead: bool = False) -> torch.Tensor:
    """A copy of H (columns x columns, or a stack (E, columns, columns); dtype kept), dampened.

    Dense models (GPTQ and SparseGPT's reference code): a dead input (H_jj = 0) gets H_jj = 1,
    then λ = percdamp · mean(diag H) joins the diagonal. ``keep_dead`` (QMoE mode, its
    ``batch_gptq``): H_jj stays 0 and λ = max(percdamp · mean(diag H), 1e-6) joins it."""
    H = H.clone()
    diag = H.diagonal(dim1=-2, dim2=-1)  # (..., columns), a view: writes reach H
    if not keep_dead:
        diag.masked_fill_(diag == 0, 1)
    damp = percdamp * torch.mean(diag.contiguous(), dim=-1, keepdim=True)  # (..., 1)
    diag.add_(damp.clamp_min(DAMP_FLOOR) if keep_dead else damp)
    return H


def dead_inputs(W: torch.Tensor, H: torch.Tensor, keep_dead: bool = False) -> torch.Tensor:
    """W (..., rows, columns) as an fp32 copy for the sweep. Dense models (GPTQ and SparseGPT's
    reference code) zero the weights of a dead input (H_jj = 0: the feature was always zero in
    calibration, so any weight fits it); QMoE mode (``keep_dead``, its ``batch_gptq``) keeps
    them -- an expert's ``wo`` has a dead input for each ReLU unit its few routed tokens never
    fired, and that unit may fire later."""
    W = W.float().clone()
    if not keep_dead:
        W.masked_fill_((torch.diagonal(H, dim1=-2, dim2=-1) == 0)[..., None, :], 0)  # (..., 1, columns)
    return W


def inverse_factor(H: torch.Tensor, percdamp: float = 0.01, keep_dead: bool = False):
    """(Hinv, failed): Hinv the upper Cholesky factor of the ``dampened`` H⁻¹, for H (columns x
    columns) or a stack (E, columns, columns); ``failed`` (() or (E,) bool) marks an H with no
    such factor (not positive definite even after dampening).

    Dense mode raises there, as GPTQ's reference code does. QMoE mode (``keep_dead``) does not:
    as its ``batch_gptq``, a failed H_e becomes the identity, with which the column sweep
    *is* round-to-nearest on the same grid (no error moves: Hinv's off-diagonal is zero), as the
    QMoE paper has it: "simply perform vanilla rounding".
    """
    H = dampened(H, percdamp, keep_dead)
    if not keep_dead:
        L = torch.linalg.cholesky(H)
        no_failure = torch.zeros(H.shape[:-2], dtype=torch.bool, device=H.device)
        # the upper factor comes back as the transpose of a lower one (column-major): the sweep reads
        # its rows, so store them contiguous (a copy, the same values)
        return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).contiguous(), no_failure
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    failed = torch.zeros(H.shape[:-2], dtype=torch.bool, device=H.device)  # () or (E,)
    while True:  # a failed H is replaced by I once, and I never fails
        H = torch.where(failed[..., None, None], eye, H)
        L, info = torch.linalg.cholesky_ex(H)
        Hinv, info_inv = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
        Hinv = Hinv.contiguous()  # rows contiguous, as in dense mode
        bad = (info != 0) | (info_inv != 0) | ~torch.isfinite(Hinv).flatten(-2).all(-1)
        if not (bad & ~failed).any():
            return Hinv, failed
        failed |= bad


def prepare(W: torch.Tensor, H: torch.Tensor, percdamp: float = 0.01, keep_dead: bool = False):
    """Dead inputs, dampening and the inverse: returns (W, Hinv) ready for column sweeps.

    * dense mode: a dead input (H_jj = 0: the feature was always zero) gets its weights zero
      (``dead_inputs``), and H is ``dampened``: H_jj = 1 for it, then
      λ = percdamp · mean(diag H) on the diagonal;
    * ``keep_dead`` (QMoE mode, as QMoE's ``batch_gptq``): every weight is kept, H is dampened
      as it is, and an H with no Cholesky factor gives Hinv = I (``inverse_factor``);
    * Hinv = upper Cholesky factor of H⁻¹.

    W (..., rows, columns) and H (..., columns, columns): one matrix, or a stack of experts.
    """
    return dead_inputs(W, H, keep_dead), inverse_factor(H, percdamp, keep_dead)[0]


@torch.no_grad()
def column_sweep(W: torch.Tensor, Hinv: torch.Tensor, blocksize: int = 128, quantizer=None, select=None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """The OBS column sweep of GPTQ Algorithm 1 and SparseGPT Algorithm 1, in place on W.

    W (..., rows, columns) fp32 and Hinv (..., columns, columns) its upper Cholesky factors, as
    ``prepare`` returns them: one matrix, or a stack of E experts (QMoE's batched execution; every
    operation below carries the leading dimension, and the lazy update is a batched product).
    Columns left to right in blocks of B = ``blocksize``; column i of a block becomes q_i
    (``mask`` -> 0, else rounded by ``quantizer``, fitted here on the rows), its scaled error
    err_i = (w_i - q_i) / [Hinv]_ii moves onto the block's later columns, W[..., i:] -=
    err_i · Hinv[i, i:], and after the block the errors reach the rest in one product,
    W[..., i2:] -= Err1 · Hinv[i1:i2, i2:]. ``select(W1, d, i, mask1)`` may mark more of the block's
    mask at each column (SparseGPT's mask selection; one matrix only). ``mask`` (..., rows,
    columns), True = remove, seeds the mask; returns the final mask.
    """
    columns = W.shape[-1]
    if quantizer is not None:
        quantizer.fit(W.reshape(-1, columns))  # per-row grid: a stack is its rows, expert after expert
    mask = torch.zeros_like(W, dtype=torch.bool) if mask is None else mask.to(W.device).clone()  # True = pruned
    lead = W.shape[:-1]                                   # (..., rows)
    masked = select is not None or bool(mask.any())       # else every column is only rounded
    scratch = torch.empty(W[..., :blocksize].numel(), dtype=W.dtype, device=W.device)  # one OBS update, reused

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[..., i1:i2].clone()                        # (..., rows, B)
        Q1 = torch.zeros_like(W1)                         # the block's final weights
        Err1 = torch.zeros_like(W1)                       # scaled errors, for the lazy update
        Hinv1 = Hinv[..., i1:i2, i1:i2]                   # (..., B, B)
        d = Hinv1.diagonal(dim1=-2, dim2=-1)              # (..., B)
        mask1 = mask[..., i1:i2].clone()                  # (..., rows, B), True = remove
        # the block's columns and Hinv1's rows as views, made once: the loop below does no indexing
        w_, m_, q_, err_ = W1.unbind(-1), mask1.unbind(-1), Q1.unbind(-1), Err1.unbind(-1)  # each (..., rows)
        d_, h_ = d.unsqueeze(-1).unbind(-2), Hinv1.unbind(-2)  # (..., 1) and (..., B) per column

        for i in range(i2 - i1):
            if select is not None:
                select(W1, d, i, mask1)                   # marks in place: m_ sees it
            w, m = w_[i], m_[i]                           # column i, as the updates so far left it
            if masked:
                q = w.masked_fill(m, 0.0)
                if quantizer is not None:
                    q = torch.where(m, q, quantizer.quantize(q.reshape(-1)).view_as(q))
            else:                                         # nothing removed (GPTQ): round, or keep
                q = w if quantizer is None else quantizer.quantize(w.reshape(-1)).view_as(w)
            q_[i].copy_(q)
            err = torch.sub(w, q, out=err_[i]).div_(d_[i])  # (..., rows): (w - q) / [Hinv]_ii, kept in Err1
            rest = i2 - i1 - i
            update = scratch[: err.numel() * rest].view(*lead, rest)  # (..., rows, B - i)
            torch.mul(err.unsqueeze(-1), h_[i].narrow(-1, i, rest).unsqueeze(-2), out=update)
            W1.narrow(-1, i, rest).sub_(update)           # OBS update inside the block

        W[..., i1:i2] = Q1
        mask[..., i1:i2] = mask1
        W[..., i2:] -= torch.matmul(Err1, Hinv[..., i1:i2, i2:])  # lazy update of the rest
    return mask


class ColumnSweep(Hessian):
    """One linear layer ``y = W x``: ``add_batch`` its calibration inputs (the ``Hessian``), then
    ``sweep`` it with ``column_sweep``. GPTQ Algorithm 1 and SparseGPT Algorithm 1 are that sweep
    with a grid (``quantizer``) and/or a mask rule (``select(W1, d, i, mask1)``, called at every
    column i of a block -- W1 its current weights, d = diag(Hinv1) -- may mark more of ``mask1``
    for removal: SparseGPT's mask selection).

    ``keep_dead``: QMoE mode (``prepare``), for an expert matrix -- dead inputs keep their
    weights, and an H with no Cholesky factor makes the sweep plain rounding, which
    ``fell_back`` then records, instead of an error.
    """

    def __init__(self, layer, cap: int | None = None, keep_dead: bool = False):
        self.layer, self.keep_dead, self.fell_back = layer, keep_dead, False
        super().__init__(layer.weight.shape[1], device=layer.weight.device, cap=cap)

    @torch.no_grad()
    def sweep(self, blocksize: int = 128, percdamp: float = 0.01, quantizer=None, select=None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
        """Write the compressed weights into ``layer.weight`` in place; returns the mask of zeros.

        ``mask`` (rows x columns, True = remove): weights to remove from the start, e.g. another
        run's mask; ``select`` may add to it."""
        W0 = self.layer.weight
        rows, columns = W0.shape
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (rows, columns)):
            raise ValueError(f"mask must be a bool tensor of shape {(rows, columns)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        W = dead_inputs(W0, self.H, self.keep_dead)  # (rows, columns) fp32
        Hinv, failed = inverse_factor(self.H, percdamp, self.keep_dead)  # upper, (columns, columns)
        self.fell_back = bool(failed)  # Hinv = I: the sweep below is plain rounding
        mask = column_sweep(W, Hinv, blocksize, quantizer, select, mask)
        W0.copy_(W)  # in place: also right for an expert's slice of a fused parameter
        return mask


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
