"""Notebook 10.1's layer under the microscope, pruned at every sparsity: its error and its mask.

SparseGPT (Frantar & Alistarh 2023, section 3) judges a pruned layer by its output
reconstruction error ||(W - Ŵ) X||² on the calibration inputs X. ``layer_sweep`` prunes one
layer at a grid of sparsities with each method (magnitude, Wanda, SparseGPT), from the same
dense weights and the same Hessian H = X Xᵀ, and keeps each run's relative error
||(W - Ŵ) X||² / ||W X||² and a corner of its mask. ``explorer`` draws the result: the errors
against sparsity, and the kept weights of the corner at one sparsity. The picture is drawn
statically every time (papermill, nbval and the book keep it); where ipywidgets is installed
(the interactive environment, Binder) a slider below it redraws the picture for another
sparsity from the precomputed runs, without pruning again.
"""
from __future__ import annotations

import torch

METHODS = ("magnitude", "wanda", "sparsegpt")


def microscope_layer(model, calib, block: int = 1):
    """The layer that notebook 10.1 puts under the microscope: the largest linear layer of block
    ``block`` (clipped to the first stack's length; in OPT the first MLP matrix ``fc1``),
    calibrated on ``calib`` by the dense model. Returns (name, layer, acc), ``acc`` a
    ``SparseGPT`` holding the Hessian H of the layer's inputs."""
    from ..compress import sequential, sparsegpt
    from ..models import structure

    layers = structure.all_linear_layers(model)
    stack_name, stack = structure.find_stacks(model)[0]
    block = min(block, len(stack) - 1)
    name = max((n for n in layers if n.startswith(f"{stack_name}.{block}.")), key=lambda n: layers[n].weight.numel())
    return name, layers[name], sequential.calibrate_layer(model, calib, name, sparsegpt.SparseGPT)
COLORS = {"magnitude": "#bdbdbd", "wanda": "#f3a712", "sparsegpt": "#4c86c6"}


@torch.no_grad()
def layer_sweep(acc, sparsities, methods=METHODS, blocksize: int = 128, percdamp: float = 0.01,
                corner: int = 48) -> dict:
    """Prune ``acc.layer`` (a calibrated ``SparseGPT``) at each sparsity with each method.

    Returns {"sparsities": [...], "error": {method: [relative error per sparsity]},
    "mask": {method: (len(sparsities), corner, corner) bool, True where a weight was removed}}.
    The layer's weights are restored afterwards."""
    from ..compress import baselines, obs
    from ..core.checks import choices, in_range

    choices("methods", list(methods), list(METHODS))
    sparsities = [float(s) for s in sparsities]
    for s in sparsities:
        in_range("sparsities", s, 0, 1)
    layer = acc.layer
    W0 = layer.weight.detach().clone()                       # (rows, columns)
    signal = obs.layer_error(W0, torch.zeros_like(W0), acc.H)  # ||W X||² / n
    out = {"sparsities": sparsities, "error": {m: [] for m in methods}, "mask": {m: [] for m in methods}}
    try:
        for m in methods:
            for s in sparsities:
                layer.weight.data = W0.clone()
                if m == "magnitude":
                    mask = baselines.magnitude(layer, s)
                elif m == "wanda":
                    mask = baselines.wanda(layer, acc.H.diag(), s)  # ||x_j||² ∝ H_jj
                else:
                    mask = acc.prune(s, blocksize=blocksize, percdamp=percdamp)
                out["error"][m].append(obs.layer_error(W0, layer.weight, acc.H) / signal)
                out["mask"][m].append(mask[:corner, :corner].cpu())
            out["mask"][m] = torch.stack(out["mask"][m])       # (sparsities, corner, corner)
    finally:
        layer.weight.data = W0
    return out


def figure(sweep: dict, sparsity: float, title: str = ""):
    """The errors of every method against sparsity, a line at ``sparsity``, and each method's
    mask corner there (dark: kept). ``sparsity`` must be one of the swept values."""
    import matplotlib.pyplot as plt

    grid = sweep["sparsities"]
    if not any(abs(sparsity - s) < 1e-9 for s in grid):
        raise ValueError(f"sparsity={sparsity!r} was not swept; choose one of {grid}")
    k = min(range(len(grid)), key=lambda i: abs(grid[i] - sparsity))
    methods = list(sweep["error"])
    fig = plt.figure(figsize=(4.2 + 2.2 * len(methods), 3.4))
    plt.close(fig)  # displayed once, when a cell returns it (as peakllm.workbook.diagrams)
    gs = fig.add_gridspec(1, 1 + len(methods), width_ratios=[2.2] + [1] * len(methods), wspace=0.35)
    ax = fig.add_subplot(gs[0])
    for m in methods:
        ax.plot(grid, sweep["error"][m], "o-", ms=3, color=COLORS.get(m), label=m)
    ax.axvline(grid[k], color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("relative output error")
    ax.legend(fontsize=8)
    ax.set_title(title or "one layer, every sparsity", fontsize=9)
    for j, m in enumerate(methods):
        a = fig.add_subplot(gs[1 + j])
        mask = sweep["mask"][m][k]
        a.imshow((~mask).numpy(), cmap="Blues", vmin=-0.3, vmax=1, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"{m}\nerror {sweep['error'][m][k]:.3g}", fontsize=8)
    n = sweep["mask"][methods[0]].shape[-1]
    fig.text(0.99, 0.01, f"masks: the first {n} rows × {n} columns at {grid[k]:.0%} (dark: kept)",
             ha="right", fontsize=7)
    return fig


def explorer(sweep: dict, sparsity: float, title: str = ""):
    """``figure`` at ``sparsity``, drawn statically; with ipywidgets installed, also a slider over
    the swept sparsities that redraws it. Returns the static figure."""
    from IPython.display import display

    fig = figure(sweep, sparsity, title)
    display(fig)
    try:
        import ipywidgets as widgets
    except ImportError:  # the test environment and papermill runs: the static figure is the explorer
        return None
    out = widgets.Output()
    slider = widgets.SelectionSlider(options=[(f"{s:.0%}", s) for s in sweep["sparsities"]], value=min(
        sweep["sparsities"], key=lambda s: abs(s - sparsity)), description="sparsity", continuous_update=False)

    def redraw(change):
        with out:
            out.clear_output(wait=True)
            display(figure(sweep, change["new"], title))

    slider.observe(redraw, names="value")
    display(widgets.VBox([slider, out]))
    return None
