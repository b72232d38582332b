"""The one random-window sampler: calibration sets, pretraining and fine-tuning batches.

A window is ``seq_len`` consecutive tokens starting at a uniformly drawn position of one long
token sequence (SparseGPT and GPTQ draw their 128 calibration windows this way, section 4).
Every caller draws through a seeded ``torch.Generator``, so the same seed gives the same
windows on every machine.
"""
from __future__ import annotations

import torch


def random_windows(ids: torch.Tensor, count: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """(count, seq_len) windows of the 1-D ``ids``, starts drawn uniformly from ``gen``."""
    ids = ids.reshape(-1)
    if len(ids) <= seq_len:
        raise ValueError(f"seq_len={seq_len} needs a text longer than its {len(ids)} tokens")
    starts = torch.randint(0, len(ids) - seq_len, (count,), generator=gen)  # (count,)
    return torch.stack([ids[s: s + seq_len] for s in starts.tolist()])     # (count, seq_len)


def window_batches(ids: torch.Tensor, batch_size: int, seq_len: int, seed: int):
    """Endless batches of random windows, (batch_size, seq_len) each: the same sequence of
    batches for every method (and every rank) given the same seed."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield random_windows(ids, batch_size, seq_len, gen)
