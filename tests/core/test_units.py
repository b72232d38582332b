"""Units: the one byte counter and figures for people (peakllm.core.units)."""
import torch

from peakllm.core import units


def test_one_byte_counter():
    assert units.nbytes(torch.zeros(3, 4, dtype=torch.bfloat16)) == 24
    assert units.nbytes(torch.zeros(10)[2:5]) == 12  # a view counts itself, not its storage
    assert units.human(1536) == "1.5 KiB" and units.format_value(2.5e11, "FLOP/s") == "250 GFLOP/s"

