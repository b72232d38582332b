import json

import pytest
import torch
from safetensors import safe_open

from peakllm import cli, models
from peakllm.data import evaldata, spans
from peakllm.models import checkpointing, pretraining
from peakllm.models.pretraining import PretrainConfig, flops_per_token, lr_at, pretrain, read_log, rms_scaled


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
    assert r["params"]["experts"] == 2 * 8 * 2 * 192 * 768  # 2 MoE layers x 8 experts x (wi, wo)


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
        assert meta["config"]["model_name"] == name and meta["seconds"] < 4 * 60 * 60  # on 2 CPU cores (tiny-switch: the longest)
        assert (models.MODELS / name / "train_log.csv").exists()
        assert (models.MODELS / name / "loss_curve.png").exists()


@pytest.mark.slow  # ~5 s: forward passes of the shipped tiny-switch on 64 test windows
def test_shipped_tiny_switch_reads_its_encoder_and_beats_the_bigram():
    """The span tokens are predicted from the encoder's text: the loss on them rises when the
    encoder reads another window's corrupted text (a decoder that ignored its encoder would not
    notice), and the model beats a bigram that sees the token left of each hidden one."""
    from peakllm.models import probes

    model, tok = models.load("tiny-switch", device="cpu")
    sentinel = spans.first_sentinel(tok)
    pairs = spans.objective(model.config, sentinel)  # T5 span corruption, EOS of the config
    test = evaldata.eval_ids("shakespeare", tok)
    kw = dict(seqlen=128, pairs=pairs, first_sentinel=sentinel, max_windows=64)
    right = probes.span_token_nll(model, test, **kw)
    other = probes.span_token_nll(model, test, encoder="other", **kw)
    bigram = probes.left_bigram_nll(evaldata.eval_ids("shakespeare", tok, split="train"), test, 128, max_windows=64)
    assert other - right > 0.3, (right, other)
    assert right < bigram["nll"], (right, bigram)


# Resumable runs: a few steps of narrow versions of the shipped architectures (same vocabulary,
# same layout) on the first 100,000 characters of each split, tokenized once per test session.
NARROW = {"tiny-opt": dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                           num_attention_heads=2),
          "tiny-switch": dict(d_model=32, d_ff=32, d_kv=8, num_heads=2, num_experts=4)}
TINY_RUN = dict(batch_size=2, seq_len=32, warmup=2, eval_every=2, eval_windows=2, device="cpu")
TOKEN_IDS = {}


@pytest.fixture
def quick(monkeypatch):
    from peakllm.data import corpus
    from peakllm.data.tokenizer import encode

    for name, narrow in NARROW.items():
        monkeypatch.setitem(models.TINY_CONFIGS, name, models.TINY_CONFIGS[name] | narrow)

    def token_ids(split, tok):
        if (split, len(tok)) not in TOKEN_IDS:
            TOKEN_IDS[split, len(tok)] = torch.tensor(encode(tok, corpus.load_split(split)[:100_000]))
        return TOKEN_IDS[split, len(tok)]
    monkeypatch.setattr(pretraining, "token_ids", token_ids)


def run(tmp_path, name, steps, model_name="tiny-opt", save_every=2, **kw):
    cfg = PretrainConfig(model_name=model_name, steps=steps, **TINY_RUN)
    return pretrain(cfg, tmp_path / name, progress=False, state_dir=tmp_path / name / "state",
                    save_every=save_every, **kw)


def interrupt(monkeypatch, at: int):
    """A Ctrl-C as step ``at`` (0-based) begins, once."""
    real = pretraining.lr_at

    def lr_at(step, cfg):
        if step == at:
            monkeypatch.setattr(pretraining, "lr_at", real)
            raise KeyboardInterrupt
        return real(step, cfg)
    monkeypatch.setattr(pretraining, "lr_at", lr_at)


def without_seconds(log):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in log]


def same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model_name", ["tiny-opt",  # ~4 s; tiny-switch: span corruption, router jitter (RNG)
                                        pytest.param("tiny-switch", marks=pytest.mark.slow)])
def test_an_interrupted_run_resumed_ends_as_an_uninterrupted_one(tmp_path, quick, monkeypatch, model_name):
    straight = run(tmp_path, "straight", 6, model_name, save_every=3)
    interrupt(monkeypatch, at=4)  # 4 steps taken, the state saved after 3: step 4 is lost and redone
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "stopped", 6, model_name, save_every=3)
    assert checkpointing.read_meta(tmp_path / "stopped" / "state")["step"] == 3
    assert not (tmp_path / "stopped" / "model.safetensors").exists()
    resumed = run(tmp_path, "stopped", 6, model_name, save_every=3, resume=True)
    assert same_weights(straight["model"], resumed["model"])
    assert len(resumed["log"]) == 6 and without_seconds(resumed["log"]) == without_seconds(straight["log"])
    assert resumed["tokens"] == straight["tokens"] == 6 * 2 * 32
    # the written log and the last saved state hold the whole history
    assert without_seconds(read_log(tmp_path / "stopped" / "train_log.csv")) == \
        without_seconds(read_log(tmp_path / "straight" / "train_log.csv"))
    assert (tmp_path / "stopped" / "loss_curve.png").exists()
    final = checkpointing.read_meta(tmp_path / "stopped" / "state")
    assert final["step"] == 6 and without_seconds(final["log"]) == without_seconds(straight["log"])


def test_the_state_is_one_safetensors_file_of_fp32_weights_and_adamw(tmp_path, quick):
    r = run(tmp_path, "r", 2)
    path = checkpointing.state_file(tmp_path / "r" / "state")
    assert sorted(p.name for p in path.parent.iterdir()) == [checkpointing.STATE_FILE]  # no temporary left
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.model.decoder.embed_tokens.weight").dtype == torch.float32
    n = len(list(r["model"].parameters()))
    assert {k for k in keys if k.startswith("optimizer.")} == {
        f"optimizer.{i}.{k}" for i in range(n) for k in ("step", "exp_avg", "exp_avg_sq")}
    assert "rng.cpu" in keys


def small_state(tmp_path, step=1, meta=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95))
    for _ in range(step):
        model(torch.randn(2, 4)).square().sum().backward()
        opt.step()
    checkpointing.save_state(tmp_path, model, opt, meta or {"step": step})
    return model, opt


def test_a_state_restores_weights_adamw_and_the_random_stream(tmp_path):
    model, opt = small_state(tmp_path, step=2)
    after = torch.rand(3)  # the global stream right after the save
    torch.manual_seed(123)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    assert checkpointing.load_state(tmp_path, fresh, fresh_opt) == {"step": 2}
    assert torch.equal(torch.rand(3), after)
    assert same_weights(model, fresh)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"] and b["param_groups"][0]["betas"] == (0.9, 0.95)
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])
    with pytest.raises(ValueError, match=r"do not fit this model \(missing \['bias', 'weight'\]"):
        checkpointing.load_state(tmp_path, torch.nn.Linear(4, 3), fresh_opt)


def test_a_write_that_fails_leaves_the_previous_state(tmp_path, monkeypatch):
    small_state(tmp_path, step=1)

    def killed(tensors, path, metadata):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpointing, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        small_state(tmp_path, step=2)
    assert checkpointing.read_meta(tmp_path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == [checkpointing.STATE_FILE]


def test_resuming_refuses_a_changed_config_naming_the_fields(tmp_path, quick):
    run(tmp_path, "r", 2)
    cfg = PretrainConfig(steps=4, **TINY_RUN | {"lr": 1e-3, "seed": 1})
    with pytest.raises(ValueError, match=r"differs in lr \(saved 0.002, now 0.001\), seed \(saved 0, now 1\); "
                                          "only steps may change"):
        pretrain(cfg, tmp_path / "r", progress=False, state_dir=tmp_path / "r" / "state", resume=True)
    with pytest.raises(ValueError, match="steps=1: the run saved in .* has already taken 2 steps"):
        run(tmp_path, "r", 1, resume=True)
    with pytest.raises(FileNotFoundError, match="no training state to resume"):
        run(tmp_path, "none", 2, resume=True)


def test_an_existing_state_is_not_replaced_without_resume_or_overwrite(tmp_path, quick):
    run(tmp_path, "r", 2)
    (tmp_path / "r" / "model.safetensors").unlink()  # the state alone is enough to refuse
    with pytest.raises(FileExistsError, match=r"step 2 of 2\); pass resume=True \(--resume\) to continue it, "
                                              r"or overwrite=True \(--overwrite\)"):
        run(tmp_path, "r", 2)
    r = run(tmp_path, "r", 3, overwrite=True)  # starts over: 3 steps from step 0
    assert [row["step"] for row in r["log"]] == [1, 2, 3]
    assert checkpointing.read_meta(tmp_path / "r" / "state")["step"] == 3


def test_raising_steps_on_resume_trains_longer_on_the_new_schedule(tmp_path, quick):
    first = run(tmp_path, "r", 2)
    longer = run(tmp_path, "r", 4, resume=True)
    assert [row["step"] for row in longer["log"]] == [1, 2, 3, 4]
    assert without_seconds(longer["log"][:2]) == without_seconds(first["log"])
    cfg4 = PretrainConfig(steps=4, **TINY_RUN)
    assert [row["lr"] for row in longer["log"][2:]] == [round(lr_at(s, cfg4), 6) for s in (2, 3)]
    assert longer["tokens"] == 4 * 2 * 32 and longer["log"][-1]["val_loss"] is not None
    assert checkpointing.read_meta(tmp_path / "r" / "state")["config"]["steps"] == 4


def test_cli_resume_continues_the_saved_run(tmp_path, monkeypatch, capsys):
    from dataclasses import asdict

    calls = []
    monkeypatch.setattr(pretraining, "pretrain", lambda cfg, out, **kw: calls.append((cfg, out, kw)) or
                        {"seconds": 0.0, "log": [{"val_loss": 1.0}]})
    small_state(tmp_path / "r" / "state", meta={"step": 2, "config": asdict(PretrainConfig(steps=7))})
    cli.main(["pretrain", "tiny-opt", "--out", str(tmp_path / "r"), "--resume", "--save-every", "5"])
    cfg, out, kw = calls[-1]
    assert cfg.steps == 7 and kw == {"overwrite": False, "state_dir": tmp_path / "r" / "state",
                                     "resume": True, "save_every": 5}  # steps: the saved run's
    assert "resuming tiny-opt at step 2 of 7 from " in capsys.readouterr().out
    cli.main(["pretrain", "tiny-opt", "--out", str(tmp_path / "r"), "--resume", "--steps", "9"])
    assert calls[-1][0].steps == 9
    cli.main(["pretrain", "tiny-switch"])
    assert calls[-1][2]["state_dir"].parts[-4:] == ("runs", "pretrain", "tiny-switch", "state")
    cli.main(["pretrain", "tiny-switch", "--out", str(models.MODELS / "tiny-switch")])  # named: still not in data/
    assert calls[-1][2]["state_dir"].parts[-4:] == ("runs", "pretrain", "tiny-switch", "state")
    assert calls[-1][2]["resume"] is False and calls[-1][0].steps == pretraining.RECIPES["tiny-switch"]["steps"]

    def ctrl_c(cfg, out, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretraining, "pretrain", ctrl_c)
    assert cli.main(["pretrain", "tiny-opt", "--out", str(tmp_path / "r"), "--steps", "9"]) == 130
    assert f"`python -m peakllm pretrain tiny-opt --out {tmp_path / 'r'} --resume` continues from step 2" \
        in capsys.readouterr().err
