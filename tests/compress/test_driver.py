"""The one compression driver (peakllm.compress.driver) and the one column sweep (obs.ColumnSweep)."""
import pytest
import torch

from peakllm.compress import driver, gptq, obs, pruning, quant, sparsegpt
from peakllm.compress.qmoe import algorithm as qmoe
from peakllm.models.structure import all_linear_layers


def calib(n=4, seqlen=16, vocab=64, seed=0):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_a_data_free_method_reads_no_data_and_says_so(tiny_model):
    m = tiny_model("opt", preset="compress")
    touched = []
    rows = driver.compress_model(m, None, lambda layer: touched.append(layer))
    assert len(rows) == len(all_linear_layers(m)) == len(touched)
    assert {r["how"] for r in rows} == {"data-free"} and all(r["tokens"] == 0 for r in rows)


def test_a_calibrated_method_without_calibration_fails_naming_the_method(tiny_model):
    with pytest.raises(ValueError, match="method='sparsegpt' needs calibration windows"):
        driver.compress_model(tiny_model("opt"), None, lambda layer: None, obs.ColumnSweep, lambda c: None,
                              method="sparsegpt")


def test_windows_longer_than_the_context_fail_before_any_work(tiny_model):
    m = tiny_model("opt")  # context 32
    with pytest.raises(ValueError, match="exceed the model's context of 32"):
        driver.compress_model(m, calib(seqlen=40), lambda layer: None, obs.ColumnSweep, lambda c: None, method="gptq")


def test_only_the_chosen_layers_change_and_unreached_ones_fall_back(tiny_model):
    m = tiny_model("mixtral", preset="compress")
    before = {n: layer.weight.detach().clone() for n, layer in all_linear_layers(m).items()}
    experts = qmoe.expert_layers(m)
    calibrated, fell_back = [], []
    rows = driver.compress_model(
        m, calib(n=1, seqlen=2), lambda layer: fell_back.append(layer) or layer.weight.zero_(),
        obs.ColumnSweep, lambda c: calibrated.append(c) or c.layer.weight.mul_(2),
        method="test", only=lambda name, layer: name in experts, progress=False)
    assert {r["layer"] for r in rows} == set(experts)
    after = all_linear_layers(m)
    for n, w in before.items():
        if n not in experts:
            assert torch.equal(after[n].weight, w), f"{n} is not an expert but changed"
    # 2 tokens, top-2 of 4 experts: at most 2 x 2 expert choices per layer, so some expert got no token
    how = {r["layer"]: r["how"] for r in rows}
    assert "fallback (no tokens)" in how.values() and "calibrated" in how.values()
    for r in rows:
        if r["how"] == "fallback (no tokens)":
            assert r["tokens"] == 0 and torch.count_nonzero(after[r["layer"]].weight) == 0
        else:
            assert r["tokens"] > 0 and torch.allclose(after[r["layer"]].weight, 2 * before[r["layer"]])
    assert len(calibrated) + len(fell_back) == len(experts)


def test_gptq_and_sparsegpt_are_siblings_over_one_sweep():
    assert gptq.GPTQ.__bases__ == (obs.ColumnSweep,) and sparsegpt.SparseGPT.__bases__ == (obs.ColumnSweep,)


def test_gptq_is_the_sweep_with_a_grid_and_no_mask(correlated_inputs):
    X = correlated_inputs(512, 32)
    torch.manual_seed(0)
    a, b = torch.nn.Linear(32, 8, bias=False), torch.nn.Linear(32, 8, bias=False)
    b.weight.data.copy_(a.weight.data)
    qa, sb = gptq.GPTQ(a), obs.ColumnSweep(b)
    qa.add_batch(X)
    sb.add_batch(X)
    qa.quantize(3, blocksize=8)
    mask = sb.sweep(blocksize=8, quantizer=quant.Quantizer(3))
    assert torch.equal(a.weight, b.weight) and not mask.any()
    assert max(len(torch.unique(r)) for r in a.weight) <= 2 ** 3


def test_the_token_cap_keeps_the_first_tokens_and_counts_all():
    h = obs.Hessian(4, cap=5)
    x = torch.randn(8, 4)
    h.add_batch(x[:3])
    h.add_batch(x[3:])
    ref = obs.Hessian(4)
    ref.add_batch(x[:5])
    assert (h.n, h.seen) == (5, 8) and torch.allclose(h.H, ref.H)


def test_the_cap_counts_masked_tokens_and_masks_the_first_ones_it_takes():
    """QMoE's reference: an expert takes its first ``cap`` routed tokens, special ones included,
    and the special ones among them are then left out of H."""
    h = obs.Hessian(4, cap=5)
    x = torch.randn(8, 4)
    h.add_batch(x[:3], torch.tensor([True, False, True]))
    h.add_batch(x[3:], torch.tensor([True, False, True, True, True]))  # offered 3..7: 3 and 4 are under the cap
    ref = obs.Hessian(4)
    ref.add_batch(x[[0, 2, 3]])
    assert (h.n, h.seen) == (3, 8) and torch.allclose(h.H, ref.H)


def test_prune_fresh_leaves_the_callers_model_alone_and_times_the_work(tmp_path):
    m, rows, seconds = pruning.prune_fresh("tiny-opt", None, "cpu", method="magnitude", sparsity=0.5)
    assert seconds > 0 and len(rows) == len(all_linear_layers(m))
    sp = pruning.sparsity_report(all_linear_layers(m))
    assert all(abs(r["sparsity"] - 0.5) < 1e-3 for r in sp)
