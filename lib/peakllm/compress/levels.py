"""Quantization grids drawn over the values they round: the pictures beside the by-hand cells.

* ``plot_levels``: a weight tensor scaled by its block absmax (the values 4-bit NormalFloat
  rounds, QLoRA, Dettmers et al. 2023, section 3) as a histogram, with the 16 NF4 levels over it:
  the levels crowd where the weights do;
* ``plot_outlier_columns``: LLM.int8()'s outlier features (Dettmers et al. 2022, section 3.2):
  the largest |x| of each input column of one layer, against the threshold (6.0) above which a
  column is multiplied in 16-bit instead of int8.

Both draw on a given ``ax`` (or a new figure) and return it; neither computes anything that
is checked: the numbers come from the notebook's cells.
"""
from __future__ import annotations

import torch


def plot_levels(scaled: torch.Tensor, levels: torch.Tensor, ax=None, bins: int = 120,
                title: str = "weights / block absmax, with the NF4 levels"):
    """Histogram of ``scaled`` (any shape, values in [-1, 1]) with a vertical line per level."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    values = scaled.detach().float().flatten().cpu().numpy()
    ax.hist(values, bins=bins, range=(-1, 1), color="#9ecae1", label=f"{values.size:,} weights")
    for i, q in enumerate(levels.detach().float().cpu().tolist()):
        ax.axvline(q, color="#e4572e", lw=0.9, label=f"{len(levels)} levels" if i == 0 else None)
    ax.set(xlabel="w / absmax of its block", ylabel="weights", title=title, xlim=(-1.05, 1.05))
    ax.legend(fontsize=8)
    return ax


def plot_outlier_columns(x: torch.Tensor, threshold: float = 6.0, ax=None,
                         title: str = "largest |x| of each input column"):
    """A line per input column of ``x`` (tokens x features): its largest |x|; columns at or above
    ``threshold`` in red (LLM.int8()'s 16-bit part), the threshold as a dashed line."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    peak = x.detach().float().reshape(-1, x.shape[-1]).abs().amax(0).cpu()
    out = peak >= threshold
    cols = torch.arange(len(peak))
    ax.vlines(cols[~out].numpy(), 0, peak[~out].numpy(), color="#9ecae1", lw=1, label="int8 columns")
    ax.vlines(cols[out].numpy(), 0, peak[out].numpy(), color="#e4572e", lw=1.5,
              label=f"{int(out.sum())} outlier columns (16-bit)")
    ax.axhline(threshold, color="black", ls="--", lw=0.9, label=f"threshold {threshold}")
    ax.set(xlabel="input feature (column of X)", ylabel="max |x| over tokens", title=title, xlim=(-1, len(peak)))
    ax.legend(fontsize=8)
    return ax
