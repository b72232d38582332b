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
