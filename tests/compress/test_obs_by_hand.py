"""Notebook 10's hand-built steps, against the library: several weights of a row by repeated OBS,
the rows of chol(H⁻¹) as the sequential OBS update, and the lazy block update being exact."""
import pytest
import torch

from peakllm.compress import obs
from peakllm.compress.sparsegpt import SparseGPT


def toy(seed=0, d=6):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(200, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    return X, 2 * X.T @ X / len(X), torch.randn(d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repeated_obs_equals_least_squares_on_the_kept_weights(seed):
    X, H, w = toy(seed)
    Hinv, row, pruned = torch.linalg.inv(H), w.clone(), []
    for step in range(3):
        eps = row ** 2 / Hinv.diag()                                     # ε_q = w_q² / [H⁻¹]_qq
        eps[pruned] = float("inf")
        q = int(eps.argmin())
        if step == 0:  # the first removal is the library's one-weight OBS, loss increase ε / 2
            new, increase = obs.remove_one(w, H, q)
            torch.testing.assert_close(row - (row[q] / Hinv[q, q]) * Hinv[:, q], new)
            assert increase == pytest.approx(eps[q].item() / 2)
        row = row - (row[q] / Hinv[q, q]) * Hinv[:, q]                   # δ_q
        Hinv = Hinv - torch.outer(Hinv[:, q], Hinv[q, :]) / Hinv[q, q]   # drop q from H⁻¹
        pruned.append(q)
    keep = [j for j in range(len(w)) if j not in pruned]
    torch.testing.assert_close(Hinv[keep][:, keep], torch.linalg.inv(H[keep][:, keep]))
    brute = torch.zeros_like(w)
    brute[keep] = torch.linalg.lstsq(X[:, keep], X @ w).solution
    assert row[pruned].abs().max() < 1e-12
    torch.testing.assert_close(row, brute, atol=1e-9, rtol=0)


def test_rows_of_the_upper_cholesky_factor_are_the_sequential_obs_update():
    X, H, _ = toy(3, d=8)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)  # H⁻¹ = Uᵀ U
    Hinv = torch.linalg.inv(H)
    for j in range(len(H)):
        torch.testing.assert_close(Hinv[j:, j:], torch.linalg.inv(H[j:, j:]))  # columns < j removed
        torch.testing.assert_close(U[j, j:], Hinv[j, j:] / Hinv[j, j].sqrt(), atol=1e-10, rtol=0)
        Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j, :]) / Hinv[j, j]
    # and prepare() (the sweep's Hinv) is that factor, of H with dampening
    damped = H + 0.01 * H.diag().mean() * torch.eye(len(H), dtype=H.dtype)
    torch.testing.assert_close(obs.dampened(H, 0.01), damped)
    _, Hinv_lib = obs.prepare(torch.zeros(1, len(H)), H.float(), 0.01)
    torch.testing.assert_close(Hinv_lib, torch.linalg.cholesky(torch.linalg.inv(damped), upper=True).float(),
                               atol=1e-4, rtol=1e-4)


def test_blocksize_one_and_128_give_the_same_weights_for_the_same_mask(correlated_inputs):
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 48, bias=False)
    pruner = SparseGPT(layer)
    pruner.add_batch(correlated_inputs(columns=256))
    W0 = layer.weight.detach().clone()
    mask = pruner.prune(0.5, blocksize=128)
    W128 = layer.weight.detach().clone()
    layer.weight.data = W0.clone()
    again = pruner.sweep(blocksize=128, mask=mask)  # a fixed mask reproduces the run exactly
    assert torch.equal(again, mask) and torch.equal(layer.weight, W128)
    for b in (1, 7, 64):
        layer.weight.data = W0.clone()
        assert torch.equal(pruner.sweep(blocksize=b, mask=mask), mask)
        assert torch.equal(layer.weight == 0, mask)
        torch.testing.assert_close(layer.weight, W128, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        pruner.sweep(mask=mask.float())
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        pruner.sweep(mask=mask[:, :10])

