"""One column sweep for one matrix and for a stack of experts (``obs.column_sweep``), checked to
the bit against the textbook loop of GPTQ / SparseGPT Algorithm 1 -- the loop as the papers write
it, one indexing expression per step -- so that making the sweep faster changed no result."""
import pytest
import torch

from peakllm.compress import obs, quant, sparsegpt
from peakllm.compress.bench import random_hessian
from peakllm.compress.qmoe import batched


def textbook(W, Hinv, blocksize, quantizer=None, select=None, mask=None):
    """The sweep as the reference implementations write it, with a leading dimension allowed."""
    columns = W.shape[-1]
    if quantizer is not None:
        quantizer.fit(W.reshape(-1, columns))
    mask = torch.zeros_like(W, dtype=torch.bool) if mask is None else mask.clone()
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1, Hinv1 = W[..., i1:i2].clone(), Hinv[..., i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        d, mask1 = Hinv1.diagonal(dim1=-2, dim2=-1), mask[..., i1:i2].clone()
        for i in range(i2 - i1):
            if select is not None:
                select(W1, d, i, mask1)
            w = W1[..., i]
            q = w.masked_fill(mask1[..., i], 0.0)
            if quantizer is not None:
                q = torch.where(mask1[..., i], q, quantizer.quantize(q.reshape(-1)).view_as(q))
            Q1[..., i] = q
            err = (w - q) / d[..., i, None]
            W1[..., i:] -= err[..., :, None] * Hinv1[..., None, i, i:]
            Err1[..., i] = err
        W[..., i1:i2] = Q1
        mask[..., i1:i2] = mask1
        W[..., i2:] -= torch.matmul(Err1, Hinv[..., i1:i2, i2:])
    return mask


def problem(rows=96, columns=160, seed=0, dead=(5,)):
    gen = torch.Generator().manual_seed(seed)
    H = random_hessian(columns, torch.device("cpu"), gen, tokens=120).H
    for j in dead:
        H[j, :] = H[:, j] = 0.0
    return obs.prepare(torch.randn(rows, columns, generator=gen), H, 0.01)


def selector(sparsity=0.0, prunen=0, prunem=0):
    """SparseGPT's mask rule, as ``SparseGPT.prune`` hands it to the sweep."""
    captured = {}

    class Probe(sparsegpt.SparseGPT):
        def sweep(self, blocksize=128, percdamp=0.01, quantizer=None, select=None, mask=None):
            captured["select"] = select
            return mask

    layer = torch.nn.Linear(160, 96, bias=False)
    Probe(layer).prune(sparsity, prunen, prunem)
    return captured["select"]


@pytest.mark.parametrize("case", ["gptq 4-bit", "gptq ternary", "sparsegpt 50%", "sparsegpt 2:4", "50% + 4-bit",
                                  "given mask"])
@pytest.mark.parametrize("blocksize", [128, 32])
def test_the_sweep_is_the_textbook_loop_to_the_bit(case, blocksize):
    W, Hinv = problem()
    quantizer = {"gptq 4-bit": 4, "gptq ternary": "ternary", "50% + 4-bit": 4}.get(case)
    select = {"sparsegpt 50%": (0.5,), "sparsegpt 2:4": (0.0, 2, 4), "50% + 4-bit": (0.5,)}.get(case)
    mask = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) < 0.3 if case == "given mask" else None
    runs = []
    for sweep in (obs.column_sweep, textbook):
        Wc = W.clone()
        m = sweep(Wc, Hinv, blocksize, None if quantizer is None else quant.Quantizer(quantizer),
                  None if select is None else selector(*select), mask)
        runs.append((Wc, m))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], W)  # the sweep did change the weights


def test_a_stack_of_experts_is_the_textbook_loop_to_the_bit_and_batched_gptq_uses_it():
    gen = torch.Generator().manual_seed(2)
    E, rows, columns = 4, 48, 96
    Ws = torch.randn(E, rows, columns, generator=gen)
    Hs = torch.stack([random_hessian(columns, torch.device("cpu"), gen, tokens=30).H for _ in range(E)])
    Hs[1] = -torch.eye(columns)  # no Cholesky factor: QMoE mode rounds this expert
    W, Hinv = obs.prepare(Ws, Hs, 0.01, keep_dead=True)  # (E, rows, columns), (E, columns, columns)
    ref = W.clone()
    textbook(ref, Hinv, 32, quant.Quantizer("ternary"))
    assert torch.equal(batched.quantize_batched(Ws, Hs, "ternary", blocksize=32, keep_dead=True), ref)
    rounded = quant.Quantizer("ternary").fit(Ws[1])
    assert torch.equal(ref[1], rounded.quantize(Ws[1]))  # Hinv_1 = I: plain rounding, no error moved


def test_the_k_lowest_are_topks_choice_with_and_without_ties():
    gen = torch.Generator().manual_seed(3)
    for x in (torch.rand(40, 32, generator=gen), torch.randint(0, 4, (40, 32), generator=gen).float()):
        for k in (1, 17, 640, 1279):
            want = torch.zeros(x.numel(), dtype=torch.bool)
            want[torch.topk(x.reshape(-1), k, largest=False).indices] = True
            got = sparsegpt.lowest(x, k)
            assert got.shape == x.shape and int(got.sum()) == k
            assert torch.equal(got.reshape(-1), want)
