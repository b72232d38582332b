"""Prefill and decode timed apart, and the bandwidth measurement they are set against."""
import pytest
import torch

from peakllm.core import roofline
from peakllm.infer import latency
from peakllm.models import shapes


def test_prefill_and_decode_are_timed_apart(tiny_model):
    m = tiny_model("opt")
    r = latency.prefill_and_decode(m, 64, prompt_len=8, new_tokens=4, repeats=2)
    assert r["prefill_ms"] > 0 and r["decode_tokens_per_s"] > 0 and r["dtype"] == "float32"
    assert r["bytes_per_token"] > 0 and r["threads"] == torch.get_num_threads()
    with pytest.raises(ValueError, match="new_tokens=1"):
        latency.prefill_and_decode(m, 64, new_tokens=1)


def test_roofline_fraction_is_decode_over_bandwidth_per_bytes():
    r = latency.roofline_fraction({"decode_tokens_per_s": 5.0, "bytes_per_token": 2e9}, bandwidth=20e9)
    assert r["bound_tokens_per_s"] == 10.0 and r["fraction"] == 0.5


def test_bandwidth_buffer_is_four_times_the_cache_within_a_quarter_of_memory():
    size, what = roofline.bandwidth_buffer_bytes("cpu", llc=300 * 2**20, available=64 * 2**30)
    assert size == 1200 * 2**20 and "4.0x the 300.0 MiB" in what
    size, what = roofline.bandwidth_buffer_bytes("cpu", llc=300 * 2**20, available=2 * 2**30)
    assert size == 512 * 2**20 and "less than 4x" in what


def test_bandwidth_is_measured_on_the_buffer_it_names():
    r = roofline.measure_bandwidth("cpu", nbytes=8 * 2**20, repeats=2)
    assert r["buffer_bytes"] == 8 * 2**20 and r["bandwidth"] > 1e8


def test_shape_only_models_have_the_real_parameter_counts():
    """Sizes of the published checkpoints (Zhang et al. 2022): 125.2 M and 331.2 M parameters."""
    m = shapes.shape_only("opt-125m")
    assert sum(p.numel() for p in m.parameters()) == 125_239_296
    with pytest.raises(ValueError, match="shape='opt-66b'"):
        shapes.shape_only("opt-66b")


def test_the_flops_ceiling_alone_skips_the_large_bandwidth_buffer(monkeypatch):
    monkeypatch.setattr(roofline, "measure_bandwidth", lambda *a, **k: pytest.fail("bandwidth measured"))
    c = roofline.ceilings("cpu", bandwidth=False)
    assert c["peak_flops_fp32"] > 0 and c["bandwidth"] is None
