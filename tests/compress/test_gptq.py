import pytest
import torch

from peakllm.compress.gptq import GPTQ, quantize_model
from peakllm.compress.quant import Quantizer, rtn
from peakllm.models.structure import all_linear_layers


def layer_and_inputs(correlated_inputs, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(64, 32, bias=False)
    return layer, correlated_inputs(columns=64, seed=seed)


@pytest.mark.parametrize("bits", [2, 3, 4, "ternary"])
def test_gptq_reconstructs_better_than_rtn_on_the_same_grid(bits, correlated_inputs):
    layer, X = layer_and_inputs(correlated_inputs)
    W0 = layer.weight.detach().clone()
    q = GPTQ(layer)
    q.add_batch(X)
    q.quantize(bits, blocksize=16)
    err_gptq = ((X @ (W0 - layer.weight).t()) ** 2).mean()
    err_rtn = ((X @ (W0 - rtn(W0, bits)).t()) ** 2).mean()
    assert err_gptq < err_rtn


def test_ternary_rows_take_only_min_zero_max(correlated_inputs):
    layer, X = layer_and_inputs(correlated_inputs, 1)
    q = GPTQ(layer)
    q.add_batch(X)
    grid = Quantizer("ternary").fit(layer.weight.detach())
    lo, hi = grid.wmin.clone(), grid.wmax.clone()
    q.quantize("ternary")
    W = layer.weight.detach()
    for r in range(W.shape[0]):
        assert set(W[r].unique().tolist()) <= {lo[r, 0].item(), 0.0, hi[r, 0].item()}


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_k_bit_rows_use_at_most_2_to_the_k_levels(bits):
    W = rtn(torch.randn(16, 64), bits)
    assert max(len(row.unique()) for row in W) <= 2 ** bits


def test_eight_bit_rtn_is_nearly_lossless():
    W = torch.randn(16, 64)
    assert (rtn(W, 8) - W).abs().max() < (W.max() - W.min()) / 255


@pytest.mark.parametrize("bad,match", [(dict(bits=5), "bits=5"), (dict(method="awq"), "method='awq'")])
def test_bad_arguments_fail(bad, match, tiny_random_opt):
    with pytest.raises(ValueError, match=match):
        quantize_model(tiny_random_opt, torch.zeros(2, 8, dtype=torch.long), **bad)


@pytest.mark.parametrize("family", ["opt", "mixtral", "switch"])
def test_quantize_model_runs_on_dense_and_moe_models(family, tiny_model):
    model = tiny_model(family, preset="compress")
    calib = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(model, calib, method="gptq", bits="ternary", percdamp=0.1, blocksize=16, progress=False)
    for layer in all_linear_layers(model).values():
        assert max(len(row.unique()) for row in layer.weight) <= 3
