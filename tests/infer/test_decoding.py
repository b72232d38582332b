import math

import pytest
import torch

from peakllm.core.records import Recorder
from peakllm.infer import decoding as D

CEILING = {"peak_flops_16bit": None, "peak_flops_fp32": 1e12, "bandwidth": 1e9, "source": "given"}


@pytest.fixture(scope="module")
def opt():
    from peakllm.models import load_model, load_tokenizer

    return load_model("tiny-opt", device="cpu"), load_tokenizer("tiny-opt")


# --- KV cache bytes --------------------------------------------------------------------------

def test_kv_cache_formula_matches_the_cache_generate_returns(opt):
    model, tok = opt
    r = D.benchmark_generate(model, tok, batch=2, prompt_len=8, new_tokens=4, repeats=1)
    # the last generated token is never fed back: the cache holds 8 + 4 - 1 positions
    assert r["kv_cache_bytes"] == D.kv_cache_bytes(model.config, 2, 11) == 2 * 4 * 4 * 64 * 11 * 2 * 4


@pytest.mark.parametrize("kind", ["opt", "llama", "mixtral"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kv_cache_formula_matches_a_forward_cache(kind, dtype, tiny_model):
    model = tiny_model(kind).to(D.DTYPES[dtype])
    ids = torch.randint(2, 64, (3, 6))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    assert D.cache_bytes(cache) == D.kv_cache_bytes(model.config, 3, 6, dtype)
    if kind != "opt":  # grouped-query attention: 2 kv heads of 8, not 4
        assert D.cache_bytes(cache) == 2 * 2 * 2 * 8 * 6 * 3 * D.DTYPES[dtype].itemsize


def test_no_cache_means_zero_kv_bytes(tiny_model):
    r = D.benchmark_generate(tiny_model("opt"), 64, batch=1, prompt_len=4, new_tokens=2,
                             use_cache=False, repeats=1)
    assert r["kv_cache_bytes"] == 0 and r["kv_cache"] is False


# --- generation ---------------------------------------------------------------------------------

def test_greedy_tokens_same_with_and_without_cache_and_static_cache(opt):
    model, tok = opt
    ids = D.prompt_ids(tok, 2, 8)
    cached = D.generate(model, ids, 4, use_cache=True, pad_id=1).sequences
    assert torch.equal(cached, D.generate(model, ids, 4, use_cache=False, pad_id=1).sequences)
    assert torch.equal(cached, D.generate(model, ids, 4, static=True, pad_id=1).sequences)


def test_eager_and_sdpa_switch_and_give_the_same_tokens(opt, monkeypatch):
    import transformers.models.opt.modeling_opt as modeling_opt

    model, tok = opt
    calls = []
    eager = modeling_opt.eager_attention_forward
    monkeypatch.setattr(modeling_opt, "eager_attention_forward",
                        lambda *a, **k: calls.append(1) or eager(*a, **k))
    ids = D.prompt_ids(tok, 2, 8)
    D.set_attention(model, "eager")
    out_eager = D.generate(model, ids, 4, pad_id=1).sequences
    assert calls, "eager attention was not called"
    calls.clear()
    D.set_attention(model, "sdpa")
    out_sdpa = D.generate(model, ids, 4, pad_id=1).sequences
    assert not calls and model.config._attn_implementation == "sdpa"
    assert torch.equal(out_eager, out_sdpa)


def test_tokens_counted_exactly_even_when_eos_is_the_greedy_choice(tiny_model):
    model = tiny_model("opt")
    ids = D.prompt_ids(64, 1, 5)
    first = D.generate(model, ids, 1).sequences[0, -1].item()
    model.generation_config.eos_token_id = first  # greedy would stop after one token
    r = D.benchmark_generate(model, 64, batch=1, prompt_len=5, new_tokens=6, repeats=2)
    assert r["tokens"] == 6
    assert r["tokens_per_s"] == pytest.approx(6 / r["seconds"])
    assert r["ms_per_token"] == pytest.approx(1e3 * r["seconds"] / 6)
    r = D.benchmark_generate(model, 64, batch=3, prompt_len=5, new_tokens=4, repeats=1)
    assert r["tokens"] == 12 and r["dtype"] == "float32"


def test_prompts_are_seeded_and_avoid_special_ids(opt):
    _, tok = opt
    ids = D.prompt_ids(tok, 4, 32, seed=3)
    assert torch.equal(ids, D.prompt_ids(tok, 4, 32, seed=3))
    assert ids.shape == (4, 32) and ids.min() > max(tok.pad_token_id, tok.eos_token_id)


# --- weight bytes --------------------------------------------------------------------------------

def test_weight_bytes_per_token_on_a_known_config(tiny_model):
    d, ffn, L, V = 16, 32, 2, 64
    linear = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d)  # q k v out, fc1, fc2 (+ biases)
    norms = 2 * 2 * d  # two LayerNorms (weight, bias) per layer
    per_token = L * (linear + norms) + 2 * d + V * d  # + final LayerNorm + lm_head (V x d)
    rows = d + d  # one row of the token table, one of the position table
    untied = tiny_model("opt", tie_word_embeddings=False)
    assert D.weight_bytes_read_per_token(untied) == 4 * (per_token + rows)
    tied = tiny_model("opt")  # lm_head shares the token table: still read in full every token
    assert D.weight_bytes_read_per_token(tied) == 4 * (per_token + rows)
    assert D.weight_bytes_read_per_token(tied.to(torch.bfloat16)) == 2 * (per_token + rows)


def test_moe_reads_top_k_of_the_experts(tiny_model):
    model = tiny_model("mixtral", tie_word_embeddings=False)  # 4 experts, top-2
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    total = sum(p.numel() for p in model.parameters())
    bytes_, weights = D._weights_read(model)
    assert weights == total - 64 * 32 - experts // 2  # the (V x d) token table is not read in full
    assert bytes_ == 4 * (weights + 32)  # but one row of d = 32 per token


def test_bitsandbytes_weights_counted_at_stored_size(tmp_path, tiny_model):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = tiny_model("opt")
    model.save_pretrained(tmp_path)
    q8 = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    w, out = sum(m.weight.numel() for m in linears), sum(m.out_features for m in linears)
    # int8 weights: 1 byte instead of 4, plus one fp32 scale (SCB) per output row
    assert D.dtype_label(q8) == "int8"
    assert D.weight_bytes_read_per_token(q8) == D.weight_bytes_read_per_token(model) - 3 * w + 4 * out
    ids = D.prompt_ids(64, 2, 4)
    D.set_attention(q8, "eager")
    assert D.generate(q8, ids, 3).sequences.shape == (2, 7)


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(batch=0), "batch=0"), (dict(new_tokens=0), "new_tokens=0"),
    (dict(prompt_len=-1), "prompt_len=-1"), (dict(attn="flash"), "attn='flash'.*eager"),
    (dict(static=True, use_cache=False), "static=True needs use_cache"),
    (dict(compiled=True), "compiled=True needs static"), (dict(repeats=0), "repeats=0"),
])
def test_bad_arguments_fail_before_generating(kwargs, message, tiny_model):
    model = tiny_model("opt")
    model.generate = lambda *a, **k: pytest.fail("generate ran")
    with pytest.raises(ValueError, match=message):
        D.benchmark_generate(model, 64, **kwargs)


def test_bad_sweep_and_dtype_fail_before_any_run(tiny_model):
    model = tiny_model("opt")
    model.generate = lambda *a, **k: pytest.fail("generate ran")
    with pytest.raises(ValueError, match="batch=0"):
        D.throughput_grid(model, 64, batches=[1, 0], progress=False)
    with pytest.raises(ValueError, match="settings key='cache'"):
        D.throughput_grid(model, 64, settings=[{"cache": True}], progress=False)
    with pytest.raises(ValueError, match="attn='flash'"):
        D.throughput_grid(model, 64, settings=[{"use_cache": True}, {"attn": "flash"}], progress=False)
    with pytest.raises(ValueError, match="dtype='int3'.*float32"):
        D.kv_cache_bytes(model.config, 1, 8, "int3")


def test_compile_without_a_compiler_is_a_skipped_row(monkeypatch, tiny_model):
    monkeypatch.setattr(D.shutil, "which", lambda name: None)
    model = tiny_model("opt")
    model.generate = lambda *a, **k: pytest.fail("generate ran")
    r = D.benchmark_generate(model, 64, static=True, compiled=True, device="cpu")
    assert "C++ compiler" in r["skipped"] and math.isnan(r["tokens_per_s"])


# --- roofline, sweep, plot ------------------------------------------------------------------------

def test_roofline_arithmetic_on_given_numbers(tiny_model):
    model = tiny_model("opt")
    W, N = D._weights_read(model)
    r = D.decode_roofline(model, achieved_tokens_per_s=500.0, ceiling=CEILING)
    assert r["bytes_per_token"] == W and r["bandwidth"] == 1e9
    assert r["ideal_tokens_per_s"] == pytest.approx(1e9 / W)
    assert r["fraction"] == pytest.approx(500.0 * W / 1e9)
    assert r["compute_tokens_per_s"] == pytest.approx(1e12 / (2 * N))
    assert D.roofline_tokens_per_s(4, r) == pytest.approx(4e9 / W)
    capped = r | {"compute_tokens_per_s": 10.0}
    assert D.roofline_tokens_per_s(1, capped) == 10.0


def test_sweep_rows_and_plot(tiny_model):
    import matplotlib

    matplotlib.use("Agg")
    model = tiny_model("opt")
    rows = D.throughput_grid(model, 64, batches=(1, 2), settings=[{}, {"use_cache": False, "attn": "eager"}],
                   prompt_len=4, new_tokens=2, progress=False)
    assert [(r["batch"], r["kv_cache"], r["attn"]) for r in rows] == [
        (1, True, "sdpa"), (2, True, "sdpa"), (1, False, "eager"), (2, False, "eager")]
    assert all(r["tokens"] == 2 * r["batch"] and r["tokens_per_s"] > 0 for r in rows)
    roof = D.decode_roofline(model, ceiling=CEILING)
    ax = D.plot_throughput(rows, roof)
    assert len(ax.get_lines()) == 3 and ax.get_xscale() == "log"


def bench_row(**kw):
    row = dict(batch=1, kv_cache=True, attn="sdpa", dtype="fp32", static=False, compiled=False,
               tokens_per_s=123.4, ms_per_token=8.1, kv_cache_bytes=2048, skipped="")
    return row | kw


def test_throughput_table_prints_units_and_na_for_skipped_rows():
    df = D.throughput_table([bench_row(), bench_row(tokens_per_s=float("nan"), ms_per_token=float("nan"),
                                                           skipped="no compiler", compiled=True, static=True)])
    assert list(df.columns) == D.TABLE_COLUMNS
    assert df["tokens_per_s"].tolist() == ["123 tok/s", "n/a"] and df["ms_per_token"].tolist() == ["8.10 ms", "n/a"]
    assert df["kv_cache_bytes"].tolist() == ["2.0 KiB", "2.0 KiB"]


def test_record_throughput_skips_skipped_rows_and_names_the_setting():
    rec = Recorder("22_fast_decoding", {})
    D.record_throughput(rec, [bench_row(static=True, compiled=True), bench_row(skipped="why")])
    assert len(rec.records) == 1
    r = rec.records[0]
    assert (r["metric"], r["value"], r["dtype"], r["kv_cache"]) == ("tokens_per_s", 123, "fp32 static compiled", True)



def test_decode_regime_reads_the_step_time_against_its_roofline_times(opt):
    from peakllm.infer.decoding import decode_regime, decode_roofline

    model, _ = opt
    ceiling = {"bandwidth": 10e9, "peak_flops_fp32": 1e12, "source": "given"}
    bound = decode_roofline(model, ceiling=ceiling)["ideal_tokens_per_s"]
    assert decode_regime(model, 0.9 * bound, ceiling)["regime"] == "memory-bound"
    slow = decode_regime(model, 0.1 * bound, ceiling)
    assert slow["regime"] == "launch-bound" and abs(slow["fraction"] - 0.1) < 1e-9
