"""Notebook 21's LLM.int8() by hand (vector-wise absmax, outlier columns in 16-bit) against
bitsandbytes' ``Linear8bitLt`` on the CPU, on one real layer of tiny-opt."""
import importlib.util

import pytest
import torch

from peakllm import models

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


@pytest.fixture(scope="module")
def fc2():
    """(X, W, bias, Linear8bitLt) of block 0's fc2 for one window of text; X has outlier columns."""
    name = "model.decoder.layers.0.fc2"
    dense = models.load_model("tiny-opt", device="cpu")
    int8 = models.load_model("tiny-opt", device="cpu", quantization="int8")
    ids = torch.randint(4, 4096, (1, 256), generator=torch.Generator().manual_seed(0))
    seen = {}
    hook = dense.get_submodule(name).register_forward_hook(lambda m, a, o: seen.update(X=a[0].detach()))
    with torch.no_grad():
        dense(ids)
    hook.remove()
    lin = dense.get_submodule(name)
    return seen["X"].reshape(-1, lin.in_features), lin.weight.detach(), lin.bias.detach(), int8.get_submodule(name)


def by_hand(X, W, bias, threshold, scale):
    """The notebook's cell: Y = outlier columns in 16-bit + scale * (s_X s_W^T) * (X_i8 W_i8^T) + bias."""
    X16, W16 = X.half(), W.half()
    s_W = W16.abs().amax(1).float()
    W_i8 = torch.round(W16 * (127 / s_W[:, None])).to(torch.int8)
    outlier = X16.abs() >= threshold
    cols = outlier.any(0).nonzero().flatten()
    X_rest = X16.masked_fill(outlier, 0)
    s_X = X_rest.abs().amax(1).float()
    X_i8 = torch.round(X_rest * (127 / s_X[:, None])).to(torch.int8)
    X_i8[:, cols] = 0
    C = X_i8.float() @ W_i8.float().T
    Y_16 = X[:, cols] @ (W_i8[:, cols].float() * s_W[:, None] / 127).T
    return C * (s_X[:, None] * s_W[None, :]) * scale + bias + Y_16, cols, W_i8, s_W


def test_int8_by_hand_equals_linear8bitlt_on_the_cpu(fc2):
    X, W, bias, layer = fc2
    assert type(layer).__name__ == "Linear8bitLt" and layer.state.threshold == 6.0
    Y, cols, W_i8, s_W = by_hand(X, W, bias, 6.0, 1 / 127**2)
    assert torch.equal(W_i8, layer.weight.data) and torch.equal(s_W, layer.weight.SCB)  # before the first forward
    with torch.no_grad():
        Y_bnb = layer(X)
    assert 0 < len(cols) < X.shape[1] // 4  # some columns, not most, go to 16-bit
    gap = (Y - Y_bnb).abs().max()
    assert 1e-5 < gap < 2e-3  # bitsandbytes' CPU constant is not 1/127^2 ...
    cpu_scale = torch.ops.bitsandbytes.int8_mm_dequant(
        torch.ones(1, 1, dtype=torch.int32), torch.ones(1), torch.ones(1), dtype=torch.float32).item()
    assert abs(cpu_scale * 127**2 - 1) > 1e-5
    Y_cpu, *_ = by_hand(X, W, bias, 6.0, cpu_scale)
    torch.testing.assert_close(Y_cpu, Y_bnb, rtol=0, atol=1e-5)  # ... with it, float rounding only


def test_the_outlier_columns_are_what_makes_int8_close(fc2):
    X, W, bias, _ = fc2
    fp32 = X @ W.T + bias
    decomposed, *_ = by_hand(X, W, bias, 6.0, 1 / 127**2)
    everything_int8, cols, *_ = by_hand(X, W, bias, float("inf"), 1 / 127**2)
    assert len(cols) == 0
    assert (decomposed - fp32).pow(2).mean() < (everything_int8 - fp32).pow(2).mean()


def test_one_row_by_hand_equals_int8_vectorwise_quant(fc2):
    import bitsandbytes as bnb

    row = fc2[0][0].half()
    s_row = row.abs().max().float()
    row_i8 = torch.round(row.float() * (127 / s_row)).to(torch.int8)
    CA, SCA, cols = bnb.functional.int8_vectorwise_quant(row[None].clone())
    assert cols is None and torch.equal(s_row.reshape(1), SCA) and torch.equal(row_i8, CA[0])
