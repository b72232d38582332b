"""Notebook 10's sparsity explorer: one layer at every sparsity, its figure, the static fallback."""
import pytest
import torch
from matplotlib.figure import Figure

from peakllm.compress.sparsegpt import SparseGPT
from peakllm.workbook import explore


@pytest.fixture(scope="module")
def acc():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16, 32, generator=g))
    a = SparseGPT(layer)
    # correlated inputs, where OBS's compensation matters: a few directions, some features large
    X = torch.randn(512, 6, generator=g) @ torch.randn(6, 32, generator=g) + 0.1 * torch.randn(512, 32, generator=g)
    a.add_batch(X * torch.linspace(0.2, 3, 32))
    return a


def test_every_method_removes_the_share_asked_and_sparsegpt_errs_least(acc):
    W0 = acc.layer.weight.detach().clone()
    sweep = explore.layer_sweep(acc, [0.25, 0.5, 0.75], blocksize=32, corner=8)  # one block: the whole row
    assert torch.equal(acc.layer.weight, W0)  # the layer is left as it was
    for m in explore.METHODS:
        masks = sweep["mask"][m]
        assert masks.shape == (3, 8, 8) and masks.dtype == torch.bool
        errs = sweep["error"][m]
        assert errs == sorted(errs) and 0 < errs[0] < 1  # more zeros, more error, less than the whole output
    for k in range(3):
        assert sweep["error"]["sparsegpt"][k] < sweep["error"]["magnitude"][k]
    # the stored corner comes from the whole mask: magnitude pruning's share over the full matrix is exact
    full = explore.layer_sweep(acc, [0.5], methods=["magnitude"], corner=32)["mask"]["magnitude"]
    assert full.float().mean().item() == pytest.approx(0.5)


def test_bad_methods_and_sparsities_name_the_parameter(acc):
    with pytest.raises(ValueError, match="methods"):
        explore.layer_sweep(acc, [0.5], methods=["random"])
    with pytest.raises(ValueError, match="sparsities"):
        explore.layer_sweep(acc, [1.5])


def test_figure_draws_errors_and_one_mask_per_method_and_refuses_unswept_values(acc):
    sweep = explore.layer_sweep(acc, [0.3, 0.6], blocksize=8, corner=8)
    fig = explore.figure(sweep, 0.6, title="toy")
    assert isinstance(fig, Figure) and len(fig.axes) == 1 + len(explore.METHODS)
    assert [a.get_title().split("\n")[0] for a in fig.axes[1:]] == list(explore.METHODS)
    assert f"{sweep['error']['sparsegpt'][1]:.3g}" in fig.axes[3].get_title()
    with pytest.raises(ValueError, match="sparsity=0.5"):
        explore.figure(sweep, 0.5)


def test_without_ipywidgets_the_explorer_is_the_static_figure(acc, monkeypatch):
    import builtins
    import sys

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.extend(a))
    real_import = builtins.__import__

    def no_widgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError("no ipywidgets")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "ipywidgets", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_widgets)
    sweep = explore.layer_sweep(acc, [0.5], blocksize=8, corner=8)
    assert explore.explorer(sweep, 0.5) is None
    assert len(shown) == 1 and isinstance(shown[0], Figure)
