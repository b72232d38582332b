import json

import pytest
import torch

from peakllm import models
from peakllm.core.perplexity import span_pairs, windows
from peakllm.data import evaldata, spans
from peakllm.models.pretraining import PretrainConfig, flops_per_token, lr_at, pretrain, rms_scaled


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = PretrainConfig(steps=100, warmup=10, lr=1.0, min_lr_frac=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_bad_config_fails_before_training():
    with pytest.raises(ValueError, match="model_name='tiny-gpt'"):
        pretrain(PretrainConfig(model_name="tiny-gpt"))
    with pytest.raises(ValueError, match="seq_len=512 exceeds"):
        pretrain(PretrainConfig(seq_len=512))


def test_refuses_to_overwrite_a_checkpoint():
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pretrain(PretrainConfig(steps=1), out_dir=models.MODELS / "tiny-opt")


@pytest.mark.slow  # ~11 s: two short pretraining runs
def test_short_run_learns_and_is_reproducible():
    cfg = PretrainConfig(steps=8, batch_size=4, seq_len=64, warmup=2, eval_every=8, eval_windows=4)
    a, b = pretrain(cfg, progress=False), pretrain(cfg, progress=False)
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    assert a["log"][-1]["train_loss"] < a["log"][0]["train_loss"]
    assert a["train_flops"] == a["flops_per_token"] * 8 * 4 * 64


@pytest.mark.slow  # ~8 s: two steps of span corruption on tiny-switch
def test_tiny_switch_learns_span_corruption():
    cfg = PretrainConfig.for_model("tiny-switch", steps=3, batch_size=2, warmup=1, eval_every=3, eval_windows=2)
    assert cfg.seq_len == 128  # the shipped recipe's windows
    r = pretrain(cfg, progress=False)
    assert r["log"][-1]["train_loss"] < r["log"][0]["train_loss"]
    assert 0 < r["log"][-1]["val_loss"] < r["log"][0]["train_loss"]
    assert r["params"]["experts"] == 2 * 16 * 2 * 256 * 256  # 2 MoE layers x 16 experts x (wi, wo)


def test_rms_scaling_gives_each_tensor_a_step_relative_to_its_size():
    big, small, zero = torch.nn.Parameter(torch.full((4, 4), 2.0)), torch.nn.Parameter(torch.full((3,), 0.01)), \
        torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p]} for p in (big, small, zero)], lr=1.0)
    rms_scaled(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.005, 0.0005])  # floor: 1e-3 x lr
    with pytest.raises(ValueError, match="lr_scale='adafactor' is not allowed; choose one of \\['none', 'rms'\\]"):
        pretrain(PretrainConfig(lr_scale="adafactor"))


def test_moe_flops_count_only_active_experts():
    moe = models.new_tiny("tiny-moe")
    n_moe = sum(p.numel() for p in moe.parameters())
    experts = models.count_params(moe)["experts"]
    # the tied token table is a lookup (left out) and the LM head (counted): net zero for tiny-moe
    assert flops_per_token(moe) == int(6 * (n_moe - experts * 6 / 8))


def test_embedding_lookups_are_not_matmul_flops():
    """OPT: the learned position table is left out, the tied token table counts once (the head)."""
    dense = models.new_tiny("tiny-opt")
    n = sum(p.numel() for p in dense.parameters())
    pos = dense.model.decoder.embed_positions.weight.numel()
    assert flops_per_token(dense) == 6 * (n - pos)


def test_shipped_recipes_are_recorded():
    for name in models.SHORT_NAMES:
        meta = json.loads((models.MODELS / name / "pretrain.json").read_text())
        assert meta["config"]["model_name"] == name and meta["seconds"] < 60 * 60  # on 2 CPU cores
        assert (models.MODELS / name / "train_log.csv").exists()
        assert (models.MODELS / name / "loss_curve.png").exists()


@pytest.mark.slow  # ~3 s: two forward passes of the shipped tiny-switch
def test_shipped_tiny_switch_reads_its_encoder():
    """The span tokens are predicted from the encoder's text: the loss rises when the encoder reads
    another window's corrupted text (a decoder that ignored its encoder would not notice)."""
    model, tok = models.load("tiny-switch", device="cpu")
    pair = span_pairs(windows(evaldata.eval_ids("shakespeare", tok), 128)[:32], spans.first_sentinel(tok), seed=0)
    with torch.no_grad():
        right = model(**pair).loss.item()
        wrong = model(input_ids=pair["input_ids"].roll(1, dims=0), labels=pair["labels"]).loss.item()
    assert wrong - right > 0.03, (right, wrong)  # 0.07 nats at the shipped checkpoint, 0.00 for a decoder that ignores it
