"""Checks that need a CUDA GPU (marker ``gpu``: conftest.py skips them where there is none).

Each runs the library's own code path on the device: the loader in bf16 / fp16 and through
bitsandbytes' CUDA kernels, NVIDIA's 2:4 sparse tensor cores, SDPA and the static-cache
``torch.compile`` decode, CUDA's allocator peak, and SparseGPT / GPTQ on an fp16 layer (the
Hessian in fp32). Figures measured on the way are attached with ``record_property``, where
``python -m peakllm gpucheck`` reads them from pytest's JUnit XML. Together well under 2
minutes on an H100.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from peakllm.compress import formats
from peakllm.compress.gptq import GPTQ
from peakllm.compress.quant import rtn
from peakllm.compress.sparsegpt import SparseGPT
from peakllm.core import memory
from peakllm.core.perplexity import context_length, perplexity
from peakllm.core.units import nbytes
from peakllm.data.evaldata import eval_ids
from peakllm.infer import decoding as D
from peakllm.models import DTYPES, load_model, load_tokenizer

pytestmark = pytest.mark.gpu

WINDOWS = 16            # evaluation windows of the model's context: 4,096 tokens of the held-out plays
ROWS, COLUMNS = 512, 1024  # the fp16 layer SparseGPT and GPTQ compress
PROMPT, NEW = 16, 16    # decoding: tokens per prompt, tokens generated


@pytest.fixture(scope="module")
def dense():
    """tiny-opt in fp32 on the GPU (named: a GPU's default is half precision): the reference."""
    return load_model("tiny-opt", device="cuda", dtype="float32")


@pytest.fixture(scope="module")
def ids(dense):
    """The first ``WINDOWS`` windows of the shakespeare test split: (1, WINDOWS * context)."""
    ctx = context_length(dense)
    return eval_ids("shakespeare", load_tokenizer("tiny-opt"), ctx)[:, : WINDOWS * ctx]


@pytest.fixture(scope="module")
def dense_ppl(dense, ids):
    return perplexity(dense, ids, progress=False)


# --- the loader: half precision and bitsandbytes -------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_on_cuda_keep_the_fp32_perplexity(dtype, ids, dense_ppl, record_property):
    model = load_model("tiny-opt", device="cuda", dtype=dtype)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", DTYPES[dtype])}
    with torch.no_grad():
        logits = model(ids[:, : context_length(model)].cuda()).logits  # (1, context, vocab)
    assert torch.isfinite(logits).all()
    ppl = perplexity(model, ids, progress=False)
    record_property(f"ppl_{dtype}", ppl)
    record_property("ppl_float32", dense_ppl)
    assert abs(ppl / dense_ppl - 1) < 0.01, (ppl, dense_ppl)


@pytest.mark.parametrize("quantization, layer", [("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_bitsandbytes_cuda_kernels_keep_the_dense_perplexity(quantization, layer, ids, dense_ppl, record_property):
    bnb = pytest.importorskip("bitsandbytes")
    model = load_model("tiny-opt", device="cuda", quantization=quantization)
    blocks = [m for name, m in model.named_modules() if ".layers." in name and isinstance(m, torch.nn.Linear)]
    assert len(blocks) == 6 * model.config.num_hidden_layers  # q, k, v, out, fc1, fc2 of every block
    assert all(isinstance(m, getattr(bnb.nn, layer)) and m.weight.device.type == "cuda" for m in blocks)
    assert D.dtype_label(model) == quantization
    ppl = perplexity(model, ids, progress=False)
    record_property(f"ppl_{quantization}", ppl)
    assert math.isfinite(ppl) and abs(ppl / dense_ppl - 1) < 0.05, (ppl, dense_ppl)


# --- SparseGPT and GPTQ on an fp16 layer ---------------------------------------------------------

@pytest.fixture
def fp16_layer(correlated_inputs):
    """A ROWS x COLUMNS fp16 linear layer on the GPU and 2,048 fp16 calibration inputs for it."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(COLUMNS, ROWS, bias=False).to("cuda", torch.float16)
    X = correlated_inputs(n=2048, columns=COLUMNS).to("cuda", torch.float16)  # (tokens, columns)
    return layer, X


def collect(solver_class, layer, X):
    """The solver of ``layer`` with X folded into its Hessian, which stays fp32 on the layer's device."""
    solver = solver_class(layer)
    for chunk in X.split(512):
        solver.add_batch(chunk)
    assert solver.H.dtype == torch.float32 and solver.H.device == layer.weight.device
    return solver


def test_sparsegpt_prunes_an_fp16_layer_on_cuda_to_half_zeros(fp16_layer):
    layer, X = fp16_layer
    mask = collect(SparseGPT, layer, X).prune(0.5)
    W = layer.weight.detach()
    assert W.dtype == torch.float16 and W.is_cuda
    assert mask.sum().item() == W.numel() // 2 and (W[mask] == 0).all()
    assert (W == 0).sum().item() == W.numel() // 2


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_rounds_an_fp16_layer_on_cuda_to_a_grid_per_row(bits, fp16_layer):
    layer, X = fp16_layer
    W0 = layer.weight.detach().clone()
    collect(GPTQ, layer, X).quantize(bits)
    W = layer.weight.detach()
    assert W.dtype == torch.float16 and W.is_cuda
    levels = (W.sort(dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1  # distinct values per row
    assert 2 < levels.max().item() <= 2 ** bits
    err = {name: ((X.float() @ (W0 - Wq).float().t()) ** 2).mean().item()
           for name, Wq in (("gptq", W), ("rtn", rtn(W0, bits)))}
    assert err["gptq"] < err["rtn"], err  # the error feedback ran, on the GPU


# --- 2:4 sparse tensor cores ---------------------------------------------------------------------

@pytest.fixture
def sparse_tensor_cores():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need compute capability >= 8.0")


def test_semi_structured_speedup_times_every_shape(sparse_tensor_cores, record_property):
    shapes = [(4096, 4096), (11008, 4096)]  # Llama-7B: attention projections, MLP up projection
    rows = formats.semi_structured_speedup(shapes, repeats=5)
    assert [r["shape"] for r in rows] == shapes
    for r in rows:
        assert math.isfinite(r["speedup"]) and r["speedup"] > 0, r
        record_property("speedup_{}x{}".format(*r["shape"]), r["speedup"])


def test_sparsegpt_2_4_weights_run_on_the_sparse_tensor_cores(sparse_tensor_cores, fp16_layer):
    from torch.sparse import to_sparse_semi_structured

    layer, X = fp16_layer
    collect(SparseGPT, layer, X).prune(0.0, prunen=2, prunem=4)
    W = layer.weight.detach()  # the dense masked matrix
    assert ((W.view(ROWS, -1, 4) == 0).sum(-1) >= 2).all()
    dense = F.linear(X, W)                                   # (tokens, rows)
    sparse = F.linear(X, to_sparse_semi_structured(W))
    rel = ((sparse - dense).float().norm() / dense.float().norm()).item()
    assert rel < 2e-3, rel  # fp16 rounding of the outputs is ~3e-4


# --- decoding: SDPA, static cache, torch.compile -------------------------------------------------

def test_sdpa_and_the_compiled_static_cache_decode_the_eager_tokens(dense, ids, monkeypatch, record_property):
    prompts = ids[0, : 2 * PROMPT].view(2, PROMPT).cuda()  # two prompts of real text (B, T0)
    pad = dense.config.pad_token_id
    D.set_attention(dense, "eager")
    eager = D.generate(dense, prompts, NEW, pad_id=pad).sequences
    D.set_attention(dense, "sdpa")
    assert torch.equal(D.generate(dense, prompts, NEW, pad_id=pad).sequences, eager)

    compiled = []  # generate asks for the compiled forward only when it will use it
    real = dense.get_compiled_call
    monkeypatch.setattr(dense, "get_compiled_call", lambda config: compiled.append(config) or real(config))
    out = D.generate(dense, prompts, NEW, static=True, compiled=True, pad_id=pad).sequences
    assert compiled, "generate did not take the compiled path"
    assert torch.equal(out, eager)

    for setting in (dict(static=True), dict(static=True, compiled=True)):  # the shapes compiled above
        row = D.benchmark_generate(dense, load_tokenizer("tiny-opt"), batch=2, prompt_len=PROMPT,
                                   new_tokens=NEW, repeats=3, **setting)
        assert row["skipped"] == "" and row["tokens_per_s"] > 0, row
        record_property("tokens_per_s_static" + "_compiled" * row["compiled"], row["tokens_per_s"])


# --- memory ---------------------------------------------------------------------------------------

def test_cuda_peak_sees_an_allocation_and_forgets_what_came_before_the_reset():
    dev = torch.device("cuda")
    big = torch.empty(512 * 2**20, dtype=torch.uint8, device=dev)
    del big
    memory.reset_peak(dev)
    base = torch.cuda.memory_allocated(dev)
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
    peak = memory.device_peak(dev)["cuda_peak"]
    assert nbytes(x) <= peak - base < 512 * 2**20


def test_training_step_on_cuda_peaks_above_its_model_states(ids):
    model = load_model("tiny-opt", device="cuda", dtype="float32")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = context_length(model)
    batch = ids[0, : 2 * ctx].view(2, ctx).cuda()  # (2, context)
    parts = memory.training_step_anatomy(model, optimizer, {"input_ids": batch, "labels": batch})
    assert parts["cuda_peak"] >= parts["weights"] + parts["gradients"] + parts["optimizer"], parts
    assert parts["activations"] > 0 and math.isfinite(parts["loss"])
