import importlib.util
import time

import pytest
import torch

from peakllm import models
from peakllm.core import memory

BNB = importlib.util.find_spec("bitsandbytes") is not None


def test_unknown_short_style_name_is_rejected_before_loading():
    with pytest.raises(ValueError, match="model_name='not a model!'.*tiny-opt"):
        models.resolve("not a model!")


def test_hub_id_offline_fails_fast_with_one_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(models.HubUnavailable, match="model_name='facebook/opt-125m'.*Hub"):
        models.load_model("facebook/opt-125m")
    assert time.perf_counter() - t0 < 10


def test_unreachable_hub_is_detected_without_the_offline_flag(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(models.HubUnavailable):
        models.load_tokenizer("google/switch-base-8")
    assert time.perf_counter() - t0 < 10


def test_bad_dtype_fails_before_loading():
    with pytest.raises(ValueError, match="dtype='int3'"):
        models.load_model("tiny-opt", dtype="int3")


@pytest.mark.parametrize("name,cls,experts", [("tiny-opt", "OPTForCausalLM", 0),
                                               ("tiny-moe", "MixtralForCausalLM", 8)])
def test_shipped_models_load_offline(name, cls, experts):
    model, tok = models.load(name, device="cpu")
    assert type(model).__name__ == cls
    assert models.context_length(model) == 256
    assert getattr(model.config, "num_local_experts", 0) == experts
    ids = tok("Good night, sweet prince", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], 4096)


def test_checkpoints_are_safetensors_under_their_size_limits():
    limits = {"tiny-opt": 25e6, "tiny-moe": 25e6, "tiny-switch": 15e6}  # the repository travels to GPU machines (64 MiB)
    for name in models.SHORT_NAMES:
        d = models.MODELS / name
        assert (d / "model.safetensors").stat().st_size <= limits[name]
        assert not list(d.glob("*.bin")) and not list(d.glob("*.pt"))


def test_local_directory_loads(tmp_path, tiny_random_opt):
    tiny_random_opt.save_pretrained(tmp_path)
    m = models.load_model(str(tmp_path), device="cpu")
    assert type(m).__name__ == "OPTForCausalLM" and models.context_length(m) == 32


def test_new_tiny_is_seeded():
    a, b = models.new_tiny("tiny-opt", seed=1), models.new_tiny("tiny-opt", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_four_bit_where_bitsandbytes_cannot_run_is_an_error():
    with pytest.raises(RuntimeError, match="bitsandbytes"):
        models.require_bitsandbytes("method", "qlora", torch.device("mps"))


@pytest.mark.skipif(not BNB, reason="bitsandbytes not installed")
@pytest.mark.parametrize("quantization, bits", [("int8", (8.0, 8.3)), ("nf4", (4.0, 4.6)), ("nf4-dq", (4.0, 4.3)),
                                                ("fp4", (4.0, 4.6))])
def test_bitsandbytes_weights_are_counted_with_their_constants(quantization, bits):
    m = models.load_model("tiny-opt", device="cpu", quantization=quantization)
    b, n = memory.linear_weights(m)
    assert bits[0] < 8 * b / n < bits[1]


def test_bad_quantization_fails_before_loading():
    with pytest.raises(ValueError, match="quantization='int3'"):
        models.load_model("tiny-opt", device="cpu", quantization="int3")
    with pytest.raises(RuntimeError, match="bitsandbytes has no kernels"):
        models.bnb_config("nf4", "mps")

