"""The one random-window sampler (peakllm.data.windows)."""
import pytest
import torch

from peakllm.data.windows import random_windows, window_batches


def test_windows_are_slices_of_the_text_drawn_from_the_generator():
    ids = torch.arange(1000)
    w = random_windows(ids, 5, 16, torch.Generator().manual_seed(3))
    starts = torch.randint(0, 1000 - 16, (5,), generator=torch.Generator().manual_seed(3))
    assert w.shape == (5, 16) and torch.equal(w[:, 0], starts) and torch.equal(w[:, 1:] - w[:, :-1], torch.ones(5, 15).long())
    a, b = window_batches(ids, 4, 8, seed=1), window_batches(ids, 4, 8, seed=1)
    assert all(torch.equal(next(a), next(b)) for _ in range(3))
    with pytest.raises(ValueError, match="seq_len=16 needs a text longer"):
        random_windows(torch.arange(10), 1, 16, torch.Generator())

