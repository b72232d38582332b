import pytest
import torch

from peakllm.core import checks

from peakllm.core import hardware as device

from peakllm.core import roofline


def test_choice_names_parameter_and_allowed_values():
    with pytest.raises(ValueError, match=r"method='foo'.*\['a', 'b'\]"):
        checks.choice("method", "foo", ["a", "b"])
    checks.choice("method", "a", ["a", "b"])


def test_in_range_is_half_open():
    checks.in_range("sparsity", 0.0, 0, 1)
    with pytest.raises(ValueError, match="sparsity=1"):
        checks.in_range("sparsity", 1, 0, 1)


@pytest.mark.parametrize("bad", ["gpu", "tpu", ""])
def test_unknown_device_fails_with_allowed_values(bad):
    with pytest.raises(ValueError, match="device=.*auto.*cuda.*mps.*cpu"):
        device.resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_fails_at_once():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        device.resolve_device("cuda")


def test_auto_falls_back_to_an_available_device():
    dev = device.resolve_device("auto")
    assert dev.type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert dev.type != "cuda"


def test_report_has_roofline_ceilings():
    r = roofline.describe("cpu")
    assert r["device"] == "cpu" and r["memory_bytes"] > 0
    assert r["peak_flops_fp32"] > 1e8 and r["bandwidth"] > 1e8
    assert isinstance(r["bf16_native"], bool)


def test_known_gpu_table_matches_longest_names_first():
    names = [k for k, *_ in roofline.KNOWN_GPUS]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert a not in b, f"{b!r} would be shadowed by {a!r}"


def test_roofline_attainable_and_ridge():
    assert roofline.ridge_point(100.0, 10.0) == 10.0
    assert roofline.attainable(1.0, 100.0, 10.0) == 10.0  # memory-bound
    assert roofline.attainable(50.0, 100.0, 10.0) == 100.0  # compute-bound


def test_format_report_lines_have_units():
    text = roofline.format_description(roofline.describe("cpu"))
    assert "GFLOP/s" in text and "GB/s" in text and "bf16 native" in text


def test_list_parameters_accept_papermill_strings():
    assert checks.as_list("eval_datasets", '["wikitext2","ptb","c4"]') == ["wikitext2", "ptb", "c4"]
    assert checks.as_list("methods", "wanda, sparsegpt") == ["wanda", "sparsegpt"]
    assert checks.as_list("sweep", [0.5]) == [0.5]
    with pytest.raises(ValueError, match="sweep=5"):
        checks.as_list("sweep", 5)
