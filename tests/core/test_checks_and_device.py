import pytest
import torch

from peakllm.core import checks, roofline
from peakllm.core import hardware as device


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


def test_the_papers_dtype_per_device(monkeypatch):
    """fp32 on a CPU; on CUDA the checkpoint's half dtype, else fp16 (OPT, as SparseGPT/GPTQ load
    it) or bf16 (the T5 family, where the GPU has it natively; fp32 where not)."""
    import torch

    from peakllm.core import hardware

    assert hardware.default_dtype("cpu") == torch.float32
    assert hardware.default_dtype("cpu", stored=torch.float16) == torch.float32
    assert hardware.compute_dtype("cpu") == torch.float32
    for native, t5 in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(hardware, "bf16_native", lambda dev, n=native: n)
        assert hardware.default_dtype("cuda") == torch.float16
        assert hardware.default_dtype("cuda", stored="bfloat16") == torch.bfloat16
        assert hardware.default_dtype("cuda", encoder_decoder=True) == t5
        assert hardware.compute_dtype("cuda") == (torch.bfloat16 if native else torch.float16)


def test_auto_dtype_loads_fp32_on_the_cpu_and_unknown_dtypes_fail_first():
    import torch

    from peakllm import models

    assert next(models.load_model("tiny-opt", device="cpu").parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype='fp8'.*auto.*float32.*bfloat16.*float16"):
        models.load_model("tiny-opt", device="cpu", dtype="fp8")


@pytest.mark.parametrize("bad", [[], [0, 0], [-1], [1.5], "x"])
def test_seeds_are_distinct_non_negative_integers(bad):
    assert checks.seeds("seeds", [0, 1, 2]) == [0, 1, 2] and checks.seeds("seeds", "[3, 4]") == [3, 4]
    with pytest.raises(ValueError, match="seeds=.*distinct non-negative integers"):
        checks.seeds("seeds", bad)
