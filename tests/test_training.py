"""Efficient fine-tuning (peakllm.train.recipes) and scale-out (peakllm.train.distributed)."""
import importlib.util

import pytest
import torch

from peakllm.train import distributed

from peakllm.core import memory

from peakllm import models

from peakllm.train import recipes as training

BNB = importlib.util.find_spec("bitsandbytes") is not None


def random_opt(d=128, layers=2):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=64, hidden_size=d, num_hidden_layers=layers, ffn_dim=4 * d,
                    num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=d,
                    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    return OPTForCausalLM(cfg)


def one_step(model, optimizer, **kw):
    x = torch.randint(0, 64, (2, 16))
    return memory.training_step_anatomy(model, optimizer, {"input_ids": x, "labels": x}, **kw)


def test_adamw_fp32_state_is_8_bytes_per_trainable_parameter():
    m = random_opt()
    n = sum(p.numel() for p in m.parameters())
    parts = one_step(m, torch.optim.AdamW(m.parameters()))
    steps = 4 * len(list(m.parameters()))  # one fp32 step counter per tensor
    assert parts["optimizer"] - steps == 8 * n
    assert parts["gradients"] == 4 * n


@pytest.mark.skipif(not BNB, reason="bitsandbytes not installed")
def test_adamw8bit_state_is_close_to_2_bytes_per_parameter():
    import bitsandbytes as bnb

    m = random_opt(d=128)
    n = sum(p.numel() for p in m.parameters())
    parts = one_step(m, bnb.optim.AdamW8bit(m.parameters()))
    per_param = parts["optimizer"] / n
    # two uint8 moments + one fp32 absmax per 256-weight block; tensors under 4,096 weights
    # (biases, norms) keep 32-bit state, which adds a little
    assert 2.0 < per_param < 2.3, per_param


def test_lora_trainable_count_is_r_times_din_plus_dout_per_matrix():
    from peft import LoraConfig, get_peft_model

    m, r = random_opt(d=128, layers=3), 4
    targets = training.attention_projections(m)
    assert targets == ["k_proj", "out_proj", "q_proj", "v_proj"]
    expected = 3 * 4 * r * (128 + 128)  # 3 layers x 4 projections of 128 -> 128
    assert training.lora_trainable(m, r) == expected
    pm = get_peft_model(m, LoraConfig(r=r, lora_alpha=8, target_modules=targets))
    assert sum(p.numel() for p in pm.parameters() if p.requires_grad) == expected


def test_checkpointing_keeps_layer_inputs_only():
    full, ckpt = random_opt(layers=3), random_opt(layers=3)
    ckpt.activation_checkpointing_enable({"use_reentrant": False})
    a = one_step(full, torch.optim.AdamW(full.parameters()))["activations"]
    b = one_step(ckpt, torch.optim.AdamW(ckpt.parameters()))["activations"]
    assert b < a / 2
    assert b >= 3 * 2 * 16 * 128 * 4  # at least each layer's (B, T, d) fp32 input is kept


def test_amp_dtype_falls_back_with_a_stated_reason(monkeypatch):
    monkeypatch.setattr(training, "bf16_native", lambda dev: False)
    dtype, why = training.amp_dtype("cpu")
    assert dtype == torch.bfloat16 and "emulated" in why


@pytest.mark.parametrize("kw, word", [({"method": "sgd"}, "method"), ({"lora_r": 0}, "lora_r"),
                                      ({"steps": 0}, "steps"), ({"model_name": "no/such-model!"}, "model_name"),
                                      ({"lora_alpha": -1}, "lora_alpha")])
def test_bad_settings_fail_before_loading(kw, word):
    with pytest.raises(ValueError, match=word):
        training.FinetuneConfig(**kw).check()


def test_bad_method_list_fails_before_the_first_method_runs():
    with pytest.raises(ValueError, match="methods='adam'"):
        training.compare(["full", "adam"], training.FinetuneConfig(), None, None)


def test_four_bit_where_bitsandbytes_cannot_run_is_an_error():
    with pytest.raises(RuntimeError, match="bitsandbytes"):
        models.require_bitsandbytes("method", "qlora", torch.device("mps"))


@pytest.mark.skipif(not BNB, reason="bitsandbytes not installed")
def test_qlora_needs_at_least_3x_less_memory_than_full_finetuning():
    ids = torch.randint(0, 4096, (4000,))
    runs = {m: training.finetune(training.FinetuneConfig(method=m, steps=2, batch_size=2, seq_len=64),
                                 ids, ids[:256], progress=False) for m in ("full", "qlora")}
    full, q = runs["full"], runs["qlora"]
    assert full["parts"]["total"] / q["parts"]["total"] >= 3
    bits = 8 * q["linear_bytes"] / q["linear_params"]
    assert 4.0 < bits < 4.3, bits  # NF4 + double-quantized block constants
    assert q["trainable_params"] == training.lora_trainable(models.load_model("tiny-opt", "cpu"), 8)
    assert q["val_loss"] == pytest.approx(q["val_loss"]) and q["tokens_per_s"] > 0


def test_two_gloo_ranks_follow_the_single_process_loss(tmp_path):
    kw = dict(steps=3, batch_size=4, seq_len=32)
    one = distributed.launch("single", 1, out=tmp_path / "one.json", **kw)
    for strategy in ("ddp", "fsdp"):
        two = distributed.launch(strategy, 2, out=tmp_path / f"{strategy}.json", **kw)
        assert two["world_size"] == 2 and two["backend"] == "gloo"
        assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) < 1e-4
    full, shard = one["state_bytes_per_rank"][0], two["state_bytes_per_rank"]
    assert all(abs(s["total"] - full["total"] / 2) < 0.01 * full["total"] for s in shard)
    assert two["comm_bytes_per_step"]["reduce_scatter"] == full["gradients"]


def test_launch_checks_its_arguments():
    with pytest.raises(ValueError, match="strategy"):
        distributed.launch_command("zero3")
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        distributed.launch_command("ddp", nproc=8, nnodes=2)
    cmd = distributed.launch_command("fsdp", nproc=8, nnodes=2, rdzv_endpoint="node0:29500", steps=5)
    assert "--rdzv-endpoint=node0:29500" in cmd and cmd[-2:] == ["--steps", "5"]


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
