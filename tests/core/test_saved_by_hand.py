"""Notebook 00's hand count: what one nn.Linear saves for backward is its input x (the weight it
also saves is a parameter, no new bytes): batch x seq x d_in x 4 bytes in fp32, the count of
``memory.SavedActivations``."""
import pytest
import torch

from peakllm.core import memory


@pytest.mark.parametrize("x_requires_grad", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_one_linear_saves_its_input(x_requires_grad, bias):
    torch.manual_seed(0)
    batch, seq, d_in, d_out = 3, 5, 16, 24
    lin = torch.nn.Linear(d_in, d_out, bias=bias)
    x = torch.randn(batch, seq, d_in, requires_grad=x_requires_grad)
    saved = []  # the pack hook sees each tensor autograd saves; no backward here, so no unpack
    with torch.autograd.graph.saved_tensors_hooks(saved.append, saved.append):
        lin(x)
    storage = {t.untyped_storage().data_ptr() for t in saved}
    weight, inp = lin.weight.untyped_storage().data_ptr(), x.untyped_storage().data_ptr()
    assert inp in storage  # x, as a (batch * seq, d_in) view
    assert storage <= {weight, inp}  # and at most the weight (when x needs a gradient)
    assert (weight in storage) == x_requires_grad
    by_hand = batch * seq * d_in * 4
    assert x.untyped_storage().nbytes() == by_hand
    with memory.SavedActivations(lin) as counter:
        lin(x)
    assert counter.bytes == by_hand


def test_without_the_model_the_counter_also_counts_the_weight():
    lin = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(2, 3, 8, requires_grad=True)
    with memory.SavedActivations() as counter:  # no model given: parameters are not excluded
        lin(x)
    assert counter.bytes == 2 * 3 * 8 * 4 + 8 * 4 * 4
