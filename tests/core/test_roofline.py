"""Naming a measured step's regime from its roofline times."""
import pytest

from peakllm.core.roofline import regime


def test_regime_is_named_from_the_figures():
    # 1 GB at 10 GB/s takes 0.1 s at least: 0.12 s is memory-bound, 0.5 s spends most of it elsewhere
    assert regime(0.12, 1e9, 2e9, 10e9, 1e12)["regime"] == "memory-bound"
    r = regime(0.5, 1e9, 2e9, 10e9, 1e12)
    assert r["regime"] == "launch-bound" and abs(r["fraction"] - 0.2) < 1e-12
    assert regime(0.12, 1e6, 1e11, 10e9, 1e12)["regime"] == "compute-bound"  # 0.1 s of arithmetic
    assert regime(0.12, 1e9, 2e9, 10e9, None)["t_comp"] == 0.0
    with pytest.raises(ValueError, match="seconds"):
        regime(0.0, 1e9, 2e9, 10e9, 1e12)


def test_a_step_at_the_matrix_vector_rate_is_memory_bound_and_says_so():
    # the read bandwidth says 0.1 s; the kernel streams at 40% of it: 0.25 s is its memory time
    r = regime(0.3, 1e9, 2e9, 10e9, 1e12, gemv_bandwidth=4e9)
    assert (r["regime"], r["at"]) == ("memory-bound", "matrix-vector rate")
    assert regime(0.6, 1e9, 2e9, 10e9, 1e12, gemv_bandwidth=4e9)["regime"] == "launch-bound"


def test_the_matrix_vector_rate_is_measured_and_below_a_plain_read():
    from peakllm.core.roofline import measure_bandwidth, measure_gemv

    read = measure_bandwidth("cpu", 64 * 2**20, repeats=3)["bandwidth"]
    gemv = measure_gemv("cpu", 64 * 2**20, repeats=3)
    assert gemv["gemv_bytes"] == 64 * 2**20 and 0 < gemv["gemv_bandwidth"] < 3 * read
