"""One row of a compressed-model table (peakllm.workbook.measure)."""
import torch

from peakllm.workbook import measure


def test_model_row_measures_size_quality_and_speed(tiny_random_opt):
    ids = torch.randint(0, 64, (1, 96), generator=torch.Generator().manual_seed(0))
    row = measure.model_row(tiny_random_opt, "dense", 32, {"text": ids}, ids[:, :32], 32)
    assert row["bits/param (linear)"] == 32.0 and row["weight bytes"] > 0
    assert 1 < row["ppl text"] < 200 and row["forward"].endswith(" ms")
    packed = measure.model_row(tiny_random_opt, "rtn", 4, {"text": ids}, ids[:, :32], 32, stored_bytes=10, linear_bits=4.1)
    assert (packed["weight bytes"], packed["bits/param (linear)"], packed["bits"]) == (10, 4.1, "4")



def test_a_model_with_the_dense_forward_is_not_timed_again(tiny_random_opt):
    import torch

    ids = torch.randint(0, 64, (1, 64))
    row = measure.model_row(tiny_random_opt, "gptq", 4, {"text": ids}, None, 32, stored_bytes=10, linear_bits=4.1)
    assert row["forward"] == "as dense" and row["ppl text"] > 1
