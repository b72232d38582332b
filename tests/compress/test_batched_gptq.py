import pytest
import torch

from peakllm.compress.gptq import GPTQ
from peakllm.compress.obs import dampened, prepare
from peakllm.compress.qmoe.batched import prepare_batched, quantize_batched, quantize_group, time_batched_vs_sequential
from peakllm.compress.quant import rtn

E, ROWS, COLS, DEAD = 4, 64, 96, 17  # expert 2's input DEAD is always zero


def experts(correlated_inputs, seed=0, keep_dead=False):
    """E collectors of 64 x 96 linear layers, each with its own correlated inputs; expert 2 has
    one dead input column (H_jj = 0). ``keep_dead``: QMoE mode."""
    torch.manual_seed(seed)
    collectors = []
    for e in range(E):
        X = correlated_inputs(n=512, columns=COLS, seed=seed + e)  # (tokens, columns)
        if e == 2:
            X[:, DEAD] = 0
        c = GPTQ(torch.nn.Linear(COLS, ROWS, bias=False), keep_dead=keep_dead)
        c.add_batch(X)
        collectors.append(c)
    return collectors


def one_at_a_time(collectors, bits, blocksize, percdamp):
    out = []
    for c in collectors:
        w = c.layer.weight.detach().clone()
        c.quantize(bits, blocksize, percdamp)
        out.append(c.layer.weight.detach().clone())
        with torch.no_grad():
            c.layer.weight.copy_(w)  # leave the collector as it was
    return torch.stack(out)


def test_prepare_batched_is_prepare_per_expert(correlated_inputs):
    cs = experts(correlated_inputs)
    Ws = torch.stack([c.layer.weight.detach() for c in cs])
    Hs = torch.stack([c.H for c in cs])
    assert Hs[2, DEAD, DEAD] == 0
    W, Hinv = prepare_batched(Ws, Hs, 0.01)  # dense mode (GPTQ, SparseGPT): a dead input's weights zeroed
    for e, c in enumerate(cs):
        W_e, Hinv_e = prepare(c.layer.weight.detach(), c.H, 0.01)
        torch.testing.assert_close(W[e], W_e, rtol=0, atol=0)
        torch.testing.assert_close(Hinv[e], Hinv_e, rtol=1e-6, atol=1e-6 * Hinv_e.abs().max().item())
    assert (W[2, :, DEAD] == 0).all() and Hs[2, DEAD, DEAD] == 0  # the inputs are left alone


@pytest.mark.parametrize("bits", ["ternary", 2, 4])
def test_batched_equals_gptq_one_matrix_at_a_time(bits, correlated_inputs):
    cs = experts(correlated_inputs)
    blocksize = 32  # three blocks: in-block and lazy updates both exercised
    Ws = torch.stack([c.layer.weight.detach() for c in cs])
    Hs = torch.stack([c.H for c in cs])
    expected = one_at_a_time(cs, bits, blocksize, 0.01)
    got = quantize_batched(Ws, Hs, bits, blocksize, 0.01)
    scale = Ws.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale
    assert torch.equal(got == 0, expected == 0)
    assert (got[2, :, DEAD] == 0).all()
    assert torch.equal(Ws, torch.stack([c.layer.weight.detach() for c in cs]))  # inputs untouched


def test_qmoe_mode_keeps_a_dead_inputs_weights(correlated_inputs):
    """Dense GPTQ zeroes the weights of a dead input; QMoE's batch_gptq keeps them, and since no
    error reaches an input no token moved (H's row and column are zero), they are rounded as RTN
    rounds them, on the row's grid."""
    cs = experts(correlated_inputs)
    Ws = torch.stack([c.layer.weight.detach() for c in cs])
    Hs = torch.stack([c.H for c in cs])
    assert (Ws[2, :, DEAD] != 0).all() and Hs[2, DEAD].abs().sum() == 0
    dense = quantize_batched(Ws, Hs, 2, 32, 0.01)
    kept = quantize_batched(Ws, Hs, 2, 32, 0.01, keep_dead=True)
    assert (dense[2, :, DEAD] == 0).all()
    assert torch.equal(kept[2, :, DEAD], rtn(Ws[2], 2)[:, DEAD]) and (kept[2, :, DEAD] != 0).any()
    assert torch.equal(dense[[0, 1, 3]], kept[[0, 1, 3]])  # no dead input elsewhere: the same sweep
    # one matrix at a time in QMoE mode gives the same; prepare keeps W and dampens H as it is
    expected = one_at_a_time(experts(correlated_inputs, keep_dead=True), 2, 32, 0.01)
    assert (kept - expected).abs().max() <= 1e-5 * Ws.abs().max()
    W, Hinv = prepare(Ws[2], Hs[2], 0.01, keep_dead=True)
    damped = Hs[2] + 0.01 * Hs[2].diagonal().mean() * torch.eye(COLS)  # the dead H_jj stays 0 before λ joins
    torch.testing.assert_close(dampened(Hs[2], 0.01, keep_dead=True), damped, rtol=1e-6, atol=0)
    dense_jj = 1 + 0.01 * (Hs[2].diagonal().sum().item() + 1) / COLS  # dense mode: H_jj = 1 first, then λ
    assert dampened(Hs[2], 0.01)[DEAD, DEAD].item() == pytest.approx(dense_jj, rel=1e-6)
    U = torch.linalg.cholesky(torch.linalg.inv(damped.double()), upper=True)
    assert torch.equal(W, Ws[2]) and (Hinv - U).abs().max() <= 1e-3 * U.abs().max()


def test_qmoe_mode_rounds_an_expert_whose_h_has_no_cholesky_factor(correlated_inputs):
    """One of E experts has an H that is not positive definite (even dampened): in QMoE mode it
    gets RTN's result and ``fell_back``, the others GPTQ's; dense GPTQ stops with an error."""
    cs = experts(correlated_inputs, seed=2, keep_dead=True)
    bad = cs[1].H.clone()
    bad[5, 5] = -10 * bad.diagonal().mean()  # a negative pivot: no Cholesky factor
    cs[1].H = bad
    W0 = [c.layer.weight.detach().clone() for c in cs]
    W1 = W0[1]
    solved = one_at_a_time([cs[0], cs[2], cs[3]], "ternary", 32, 0.1)
    quantize_group(cs, "ternary", 32, 0.1)
    assert [c.fell_back for c in cs] == [False, True, False, False]
    assert torch.equal(cs[1].layer.weight.detach(), rtn(W1, "ternary"))
    for e, q in zip([0, 2, 3], solved):
        assert (cs[e].layer.weight - q).abs().max() <= 1e-5 * q.abs().max()
        assert not torch.equal(cs[e].layer.weight.detach(), rtn(W0[e], "ternary"))  # solved, not rounded
    alone = GPTQ(torch.nn.Linear(COLS, ROWS, bias=False), keep_dead=True)  # one matrix: the same fallback
    alone.layer.weight.data.copy_(W1)
    alone.H, alone.n = bad, 512
    alone.quantize("ternary", 32, 0.1)
    assert alone.fell_back and torch.equal(alone.layer.weight.detach(), rtn(W1, "ternary"))
    dense = experts(correlated_inputs, seed=2)
    dense[1].H = bad
    with pytest.raises(torch.linalg.LinAlgError):
        quantize_group(dense, "ternary", 32, 0.1)
    with pytest.raises(ValueError, match="keep_dead"):
        quantize_group([cs[0], dense[0]], "ternary")


def test_quantize_group_writes_weights_in_place(correlated_inputs):
    cs = experts(correlated_inputs, seed=1)
    expected = one_at_a_time(cs, "ternary", 128, 0.1)
    params = [c.layer.weight for c in cs]
    ptrs = [p.data_ptr() for p in params]
    quantize_group(cs, "ternary", 128, 0.1)
    for e, c in enumerate(cs):
        assert c.layer.weight is params[e] and c.layer.weight.data_ptr() == ptrs[e]
        assert (c.layer.weight - expected[e]).abs().max() <= 1e-5 * expected[e].abs().max()


def test_quantize_group_of_one_is_gptq(correlated_inputs):
    cs = experts(correlated_inputs)[:1]
    expected = one_at_a_time(cs, 4, 128, 0.01)
    quantize_group(cs, 4)
    assert torch.equal(cs[0].layer.weight.detach(), expected[0])


def test_bad_arguments_name_the_parameter(correlated_inputs):
    cs = experts(correlated_inputs)
    other = GPTQ(torch.nn.Linear(COLS, ROWS + 1, bias=False))
    other.add_batch(correlated_inputs(n=64, columns=COLS))
    with pytest.raises(ValueError, match=r"collectors\[4\]"):
        quantize_group(cs + [other], "ternary")
    with pytest.raises(ValueError, match=r"collectors\[1\].*n == 0"):
        quantize_group([cs[0], GPTQ(torch.nn.Linear(COLS, ROWS, bias=False))], "ternary")
    with pytest.raises(ValueError, match="collectors"):
        quantize_group([], "ternary")
    Ws = torch.randn(E, ROWS, COLS)
    with pytest.raises(ValueError, match="Hs"):
        quantize_batched(Ws, torch.eye(COLS + 1).expand(E, -1, -1), 4)
    with pytest.raises(ValueError, match="Ws"):
        quantize_batched(Ws[0], torch.eye(COLS)[None], 4)
    with pytest.raises(ValueError, match="bits=5"):
        quantize_batched(Ws, torch.eye(COLS).expand(E, -1, -1), 5)


def test_timing_returns_positive_seconds():
    t = time_batched_vs_sequential(E=2, rows=8, cols=16, bits=2, repeats=1)
    assert t["sequential_s"] > 0 and t["batched_s"] > 0 and t["speedup"] > 0
