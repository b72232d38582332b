"""Notebooks 11 and 12 build each training mechanism by hand on one layer or tensor; here the same
few lines meet the code paths the recipes use: LoRA (peft, through ``recipes.prepare``), NF4's
levels and one weight quantized (bitsandbytes' table and 4-bit quantizer), the 8-bit optimizer
state (bitsandbytes' AdamW8bit after one step), what a checkpointed layer keeps
(``memory.SavedActivations``), and one weight's FSDP shards (``distributed.record_shard``)."""
import importlib.util

import pytest
import torch

from peakllm import models
from peakllm.core import memory
from peakllm.train import recipes as training

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


def test_lora_by_hand_equals_peft_and_merging_adds_the_scaled_product():
    cfg = training.FinetuneConfig(method="lora", lora_r=4, lora_alpha=8, device="cpu")
    model = training.prepare(cfg)[0]
    q = model.base_model.model.model.decoder.layers[0].self_attn.q_proj
    W0, b0 = q.base_layer.weight.detach().clone(), q.base_layer.bias.detach().clone()  # (d_out, d_in), (d_out,)
    A, B = q.lora_A["default"].weight, q.lora_B["default"].weight  # (r, d_in), (d_out, r)
    x = torch.randn(3, W0.shape[1])  # (tokens, d_in)
    assert A.shape == (4, 256) and B.shape == (256, 4) and q.scaling["default"] == 2.0
    assert not B.any() and torch.equal(q(x), q.base_layer(x))  # B = 0 at init: the base layer exactly
    with torch.no_grad():
        B.normal_(std=0.02)
    h = x @ W0.T + b0 + (cfg.lora_alpha / cfg.lora_r) * (x @ A.T) @ B.T  # h = W0 x + (alpha/r) B A x
    assert (h - (x @ W0.T + b0)).abs().max() > 1e-3  # the side path now changes the output
    torch.testing.assert_close(q(x), h)
    merged = model.merge_and_unload().model.decoder.layers[0].self_attn.q_proj
    assert type(merged) is torch.nn.Linear
    torch.testing.assert_close(merged.weight, W0 + (cfg.lora_alpha / cfg.lora_r) * B.detach() @ A.detach())
    torch.testing.assert_close(merged(x), h)


def nf4_levels(delta: float = 0.9677083) -> torch.Tensor:
    """The notebook's cell: 8 positive and 7 negative normal quantiles, an exact 0, in [-1, 1]."""
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(0.5, delta, 9)[1:])
    neg = -normal.icdf(torch.linspace(0.5, delta, 8)[1:])
    return torch.cat([neg.flip(0), torch.zeros(1), pos]) / pos.max()


@needs_bnb
def test_nf4_levels_and_one_weight_quantized_by_hand_equal_bitsandbytes():
    import bitsandbytes.functional as F

    nf4 = F.get_4bit_type("nf4", device="cpu")
    torch.testing.assert_close(nf4_levels(), nf4, rtol=0, atol=1e-6)
    assert not torch.allclose(nf4_levels(0.99), nf4, rtol=0, atol=1e-3)  # the offset matters
    W = models.load_model("tiny-opt", device="cpu").model.decoder.layers[0].self_attn.q_proj.weight.detach()
    blocks = W.reshape(-1, 64)  # (blocks, 64)
    absmax = blocks.abs().amax(1, keepdim=True)  # (blocks, 1)
    idx = (blocks / absmax).unsqueeze(-1).sub(nf4).abs().argmin(-1)  # nearest level, (blocks, 64)
    W_hat = (nf4[idx] * absmax).reshape(W.shape)
    packed, state = F.quantize_4bit(W, blocksize=64, quant_type="nf4")
    assert torch.equal(absmax.flatten(), state.absmax)
    codes = torch.stack([packed.flatten() >> 4, packed.flatten() & 15], 1).flatten()  # two per byte, high first
    assert torch.equal(idx.flatten().to(torch.uint8), codes)
    assert torch.equal(W_hat, F.dequantize_4bit(packed, state))
    layer = models.load_model("tiny-opt", device="cpu", quantization="nf4").model.decoder.layers[0].self_attn.q_proj
    assert torch.equal(W_hat, F.dequantize_4bit(layer.weight.data, layer.weight.quant_state))  # the model's path


def dynamic_map() -> torch.Tensor:
    """The notebook's cell: per decade 10^(i-6), i = 0..6, the 2^i midpoints of linspace(0.1, 1), both signs, 0, 1."""
    mags = torch.cat([10.0 ** (i - 6) * ((b[:-1] + b[1:]) / 2) for i in range(7) for b in [torch.linspace(0.1, 1, 2**i + 1)]])
    return torch.cat([-mags, mags, torch.tensor([0.0, 1.0])]).sort().values


@needs_bnb
def test_8bit_adam_state_by_hand_equals_bitsandbytes_after_one_step():
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    code = dynamic_map()
    assert code.numel() == 256 and torch.equal(code, F.create_dynamic_map(signed=True))
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 256))  # 16,384 values: over bitsandbytes' 4,096 for 8-bit state
    g = torch.randn_like(p) * torch.logspace(-4, -1, 256)  # columns of very different size
    p.grad = g.clone()
    opt = bnb.optim.AdamW8bit([p], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    opt.step()
    state = opt.state[p]
    assert torch.equal(state["qmap1"], code) and state["state1"].dtype == torch.uint8
    m = ((1 - 0.9) * g).reshape(-1, 256)  # first moment after step 1, in blocks of 256
    absmax = m.abs().amax(1, keepdim=True)  # (blocks, 1)
    idx = (m / absmax).unsqueeze(-1).sub(code).abs().argmin(-1)  # nearest of the 256 levels
    stored = state["state1"].reshape(idx.shape).long()
    assert torch.equal(absmax.flatten(), state["absmax1"])
    q8, qstate = F.quantize_blockwise(m.flatten(), code=code, blocksize=256)
    assert torch.equal(q8, state["state1"].flatten()) and torch.equal(qstate.absmax, state["absmax1"])
    # bitsandbytes' CPU search (an approximate lookup table, then two neighbours compared) can land
    # a few levels from the nearest, mostly among small values where the levels are densest
    assert (idx == stored).float().mean() > 0.95
    assert (idx - stored).abs().max() <= 3
    mine, theirs = code[idx] * absmax, code[stored] * absmax
    assert ((mine - m).abs() <= (theirs - m).abs()).all()  # the nearest level is never farther
    assert ((mine - theirs).abs() / absmax).max() < 0.05


def test_a_checkpointed_layer_keeps_only_its_input():
    model = models.load_model("tiny-opt", device="cpu", dtype="float32").train()
    layer = model.model.decoder.layers[0]
    x = torch.randn(2, 32, 256, requires_grad=True)  # (B, T, d)
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x)
    kept = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
            if t.untyped_storage().data_ptr() not in params}
    with memory.SavedActivations(model) as lib:
        layer(x)
    assert sum(kept.values()) == lib.bytes > 10 * x.nbytes
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
    assert [t.data_ptr() for t in saved] == [x.data_ptr()]  # the checkpoint keeps its input, nothing inside
    model.activation_checkpointing_enable({"use_reentrant": False})  # as recipes.prepare does
    with memory.SavedActivations(model) as lib:
        layer(x)
    assert lib.bytes == x.nbytes


def shard_by_hand(W: torch.Tensor, N: int) -> list[torch.Tensor]:
    """The notebook's cell: pad dim 0 to a multiple of N, one equal chunk of rows per rank."""
    rows = -(-W.shape[0] // N)  # ceil
    padded = torch.cat([W, W.new_zeros(N * rows - W.shape[0], *W.shape[1:])])
    return list(padded.chunk(N))


def test_sharding_by_hand_pads_rows_and_gathers_back():
    W = torch.arange(10 * 3.0).reshape(10, 3)
    shards = shard_by_hand(W, 4)
    assert [tuple(s.shape) for s in shards] == [(3, 3)] * 4
    assert torch.equal(torch.cat(shards)[:10], W) and not shards[3][1:].any()  # rank 3: one row, two of padding
    assert all(torch.equal(s[: len(c)], c) for s, c in zip(shards, W.chunk(4)))


@pytest.mark.slow  # ~15 s: two gloo ranks
def test_fsdp_shards_of_one_weight_equal_the_shards_by_hand(tmp_path):
    from safetensors.torch import load_file

    from peakllm.train import distributed

    r = distributed.launch("fsdp", 2, out=tmp_path / "fsdp.json", steps=1, batch_size=2, seq_len=16,
                           shard_file=str(tmp_path / "shard.safetensors"))
    shard = r["shard"]
    assert shard["param"] == "model.decoder.layers.0.self_attn.k_proj.weight"
    W = models.load_model("tiny-opt", device="cpu").get_parameter(shard["param"]).detach()
    fsdp = load_file(shard["file"])
    assert shard["local_shapes"] == [[128, 256], [128, 256]]
    for rank, mine in enumerate(shard_by_hand(W, 2)):
        assert torch.equal(fsdp[f"rank{rank}"], mine)
    assert torch.equal(torch.cat([fsdp["rank0"], fsdp["rank1"]]), W)  # the all-gather
