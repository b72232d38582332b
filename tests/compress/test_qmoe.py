"""QMoE (peakllm.compress.qmoe): expert-only GPTQ through the router, ternary storage below one bit."""
import pytest
import torch

from peakllm.compress import qmoe
from peakllm.compress.sequential import all_linear_layers


def calib(vocab=64, n=8, seqlen=16):
    return torch.randint(0, vocab, (n, seqlen), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["mixtral", "switch"])
@pytest.mark.parametrize("bits", ["ternary", 2])
def test_qmoe_quantizes_experts_only_on_both_layouts(family, bits, tiny_model):
    model = tiny_model(family, preset="compress")
    before = {n: layer.weight.detach().clone() for n, layer in all_linear_layers(model).items()}
    report = qmoe.compress(model, calib(), bits=bits, blocksize=16, batch_size=4, progress=False)
    experts = qmoe.expert_layers(model)
    assert [r["layer"] for r in report] == list(experts) and len(experts) > 0
    for name, layer in all_linear_layers(model).items():
        W = layer.weight
        if name in experts:
            levels = {len(torch.unique(row)) for row in W}
            assert max(levels) <= (3 if bits == "ternary" else 4), (name, levels)
            assert not torch.equal(W, before[name])
        else:  # attention, routers' neighbours, everything dense: untouched
            assert torch.equal(W, before[name]), name
    assert sum(r["routed"] for r in report) > 0


def test_token_cap_limits_each_experts_calibration(tiny_model):
    model = tiny_model("mixtral", preset="compress")
    c = calib(n=8, seqlen=16)
    cap = qmoe.token_cap(model.config, c.numel(), 1.0)  # 128 tokens x 2 / 4 experts = 64
    assert cap == 64
    report = qmoe.compress(model, c, max_tokens_mult=1.0, blocksize=16, batch_size=4, progress=False)
    assert all(r["tokens"] == min(r["routed"], cap) for r in report)
    assert any(r["routed"] > cap for r in report)


@pytest.mark.parametrize("family, name", [("mixtral", "model.layers.0.mlp.experts.down_proj.1"),
                                          ("switch", "encoder.block.1.layer.1.mlp.experts.expert_0.wi")])
@pytest.mark.parametrize("bits", ["ternary", 2])
def test_gptq_reconstructs_an_expert_better_than_rtn(family, name, bits, tiny_model):
    from peakllm.compress.obs import layer_error
    from peakllm.compress.quant import rtn

    model = tiny_model(family, preset="compress")
    probe = qmoe.calibrate_expert(model, calib(n=16), name, batch_size=4)
    assert probe.n > 0
    W0 = probe.layer.weight.clone()
    W_rtn = rtn(W0, bits)
    probe.quantize(bits, blocksize=16, percdamp=0.1)
    assert layer_error(W0, probe.layer.weight, probe.H) < layer_error(W0, W_rtn, probe.H)


def test_dense_model_is_refused(tiny_model):
    with pytest.raises(ValueError, match="has no experts"):
        qmoe.compress(tiny_model("opt", preset="compress"), calib())


@pytest.mark.parametrize("kw, word", [({"bits": 5}, "bits"), ({"method": "awq"}, "method"), ({"percdamp": -1}, "percdamp")])
def test_bad_arguments_fail_before_any_work(kw, word, tiny_model):
    model = tiny_model("mixtral", preset="compress")
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=word):
        qmoe.compress(model, calib(), **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_encode_experts_round_trips_bit_exactly_and_counts_bits(tiny_model):
    model = tiny_model("mixtral", preset="compress")
    qmoe.compress(model, calib(), bits="ternary", blocksize=16, batch_size=4, progress=False)
    out = qmoe.encode_experts(model, size=64)
    assert out["verified"] == len(qmoe.expert_layers(model))
    assert out["all"] > out["codes"] > 0
    assert out["code_bits"] == sum(e.code_bits for e in out["encoded"].values())
    assert out["params"] == sum(layer.weight.numel() for layer in qmoe.expert_layers(model).values())


def test_encode_refuses_weights_that_are_not_ternary(tiny_model):
    with pytest.raises(ValueError, match="not ternary"):
        qmoe.encode_experts(tiny_model("mixtral", preset="compress"))


def test_without_special_tokens():
    class Tok:
        all_special_ids = [0, 1]
    ids = torch.tensor([5, 0, 7, 1, 1, 9])
    assert qmoe.without_special_tokens(ids, Tok()).tolist() == [5, 7, 9]


def test_span_corruption_hides_spans_behind_sentinels():
    ids = torch.arange(10, 50)  # 40 tokens; <extra_id_0> = 63, <extra_id_1> = 62, ...
    x, y = qmoe.span_corruption(ids, 63, noise=0.15, mean_span=3)
    sentinels = [t for t in x.tolist() if t >= 60]
    assert sentinels == [63, 62] and len(x) == 40 - 6 + 2 and len(y) == 2 * 4
    assert y[0] == 63 and set(y.tolist()) - {63, 62} <= set(ids.tolist())


def test_eval_loss_runs_on_both_kinds_of_model(tiny_model):
    ids = torch.randint(0, 60, (1, 64), generator=torch.Generator().manual_seed(0))
    for family in ("mixtral", "switch"):
        loss = qmoe.eval_loss(tiny_model(family, preset="compress"), ids, seqlen=16)
        assert 2.0 < loss < 8.0  # near log(64) = 4.16 for random weights


def test_bits_at_scale_fall_toward_the_codes():
    rows = qmoe.bits_at_scale((0.06, 0.88, 0.06), [64, 512], rows=32, size=256)
    assert rows[0]["codes + rows"] - rows[0]["codes"] == pytest.approx(1.0)  # 64 bits / 64 columns
    assert rows[1]["codes + rows"] - rows[1]["codes"] == pytest.approx(0.125)


def test_first_sentinel_is_t5s_extra_id_0():
    class T5Like:
        def get_vocab(self):
            return {"a": 1, "<extra_id_0>": 32099, "<extra_id_1>": 32098}

    class Plain:
        def get_vocab(self):
            return {"a": 1}

    assert qmoe.first_sentinel(T5Like()) == 32099 and qmoe.first_sentinel(Plain()) is None


def test_routing_histogram_reads_both_expert_layouts():
    rows = [{"layer": "model.layers.0.mlp.experts.gate_up_proj.3", "routed": 10, "tokens": 8},
            {"layer": "model.layers.0.mlp.experts.down_proj.3", "routed": 10, "tokens": 8},
            {"layer": "encoder.block.1.layer.1.mlp.experts.expert_2.wi", "routed": 5, "tokens": 5},
            {"layer": "encoder.block.1.layer.1.mlp.experts.expert_2.wo", "routed": 5, "tokens": 5}]
    h = qmoe.routing_histogram(rows)
    assert h.to_dict("records") == [
        {"layer": "model.layers.0.mlp.experts", "expert": 3, "routed": 10, "used": 8},
        {"layer": "encoder.block.1.layer.1.mlp.experts", "expert": "expert_2", "routed": 5, "used": 5}]
    assert list(qmoe.routing_histogram([]).columns) == ["layer", "expert", "routed", "used"]

