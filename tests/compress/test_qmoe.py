"""QMoE (peakllm.compress.qmoe.algorithm): expert-only GPTQ through the router, ternary storage below one bit."""
import pytest
import torch

from peakllm.compress.qmoe import algorithm as qmoe
from peakllm.models.structure import all_linear_layers


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
    experts = qmoe.expert_layers(model)
    assert out["params"] == sum(layer.weight.numel() for layer in experts.values())
    for fb in out["coders"].values():
        assert fb.verified == len(experts)
        assert fb.bits_per_param("all") >= fb.bits_per_param("rows") > fb.bits_per_param("codes") > 0
        assert fb.code_bits == sum(e.code_bits for e in fb.encoded.values())
    assert out["coders"]["qmoe"].row_bits == 64 * out["rows"]  # QMoE: 32-bit offset + bf16 min, max
    assert out["coders"]["dictionary"].row_bits < 64 * out["rows"]  # ours: bf16 min, max + a count


def test_encode_refuses_weights_that_are_not_ternary(tiny_model):
    with pytest.raises(ValueError, match="not ternary"):
        qmoe.encode_experts(tiny_model("mixtral", preset="compress"))


def test_special_mask_marks_what_the_statistics_leave_out():
    class Tok:
        all_special_ids = [0, 1]
    ids = torch.tensor([5, 0, 7, 1, 1, 9])
    assert qmoe.special_mask(ids, Tok()).tolist() == [False, True, False, True, True, False]


def test_eval_loss_runs_on_both_kinds_of_model(tiny_model):
    ids = torch.randint(0, 60, (1, 64), generator=torch.Generator().manual_seed(0))
    for family in ("mixtral", "switch"):
        loss = qmoe.eval_loss(tiny_model(family, preset="compress"), ids, seqlen=16)
        assert 2.0 < loss < 8.0  # near log(64) = 4.16 for random weights


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



def test_batched_experts_give_the_one_at_a_time_result(tiny_model):
    runs = {}
    for batch in (False, True):
        model = tiny_model("switch", preset="compress")
        report = qmoe.compress(model, calib(n=8, seqlen=16), bits="ternary", blocksize=16, batch_size=4,
                               progress=False, batch_experts=batch)
        runs[batch] = (report, {n: m.weight.clone() for n, m in qmoe.expert_layers(model).items()})
    assert [r["layer"] for r in runs[True][0]] == [r["layer"] for r in runs[False][0]]
    assert [r["method"] for r in runs[True][0]] == [r["method"] for r in runs[False][0]]
    for name, W in runs[False][1].items():
        assert torch.allclose(runs[True][1][name], W, atol=1e-5), name


def test_switch_protocol_masks_sentinels_and_drops_no_token(tiny_model):
    from peakllm.compress.obs import Hessian
    from peakllm.compress.sequential import compress_sequentially

    model = tiny_model("switch", preset="compress", expert_capacity=2)
    windows = torch.randint(2, 50, (6, 24), generator=torch.Generator().manual_seed(0))

    class Tok:  # ids 0, 1: eos, pad; 63 = <extra_id_0> counting down
        all_special_ids = [0, 1, *range(54, 64)]

        def get_vocab(self):
            return {"<extra_id_0>": 63}

    pairs = qmoe.calibration_pairs(windows, Tok(), model)
    # round(24 x 0.15) = 4 tokens hidden in round(4 / 3) = 1 span; EOS (config: 1) ends input and target
    assert pairs["input_ids"].shape == (6, 24 - 4 + 1 + 1) and pairs["decoder_input_ids"].shape == (6, 4 + 1 + 1)
    assert (pairs["input_ids"][:, -1] == 1).all() and (pairs["decoder_input_ids"][:, :2] == torch.tensor([0, 63])).all()
    # the decoder reads start, <extra_id_0>, 4 hidden tokens: only the sentinel and the first 3 hidden
    # tokens predict a hidden token (the start predicts the sentinel, the last one EOS)
    assert pairs["decoder_token_mask"].tolist() == [[False, True, True, True, True, False]] * 6
    assert pairs["token_mask"].sum(1).tolist() == [24 - 4] * 6  # the sentinel and EOS skipped in the encoder
    assert qmoe.stack_tokens(model, pairs) == {"encoder.block": 6 * 22, "decoder.block": 6 * 6}  # the cap counts all
    assert qmoe.dropped_tokens(model, pairs)["dropped"] > 0  # capacity 2 per expert and sequence
    assert qmoe.no_token_dropped(model) == 4 and qmoe.dropped_tokens(model, pairs)["dropped"] == 0
    seen = {}

    def make(name, layer):
        seen[name] = Hessian(layer.weight.shape[1])
        return seen[name]

    compress_sequentially(model, pairs, make, lambda name, c: None, batch_size=4, progress=False)
    for stack, key in (("encoder", "token_mask"), ("decoder", "decoder_token_mask")):
        wi = [c.n for n, c in seen.items() if n.startswith(stack) and ".experts." in n and n.endswith(".wi")]
        per_layer = len(wi) // 4  # 4 experts per MoE layer: every kept token reaches exactly one
        assert per_layer >= 1 and sum(wi[:4]) == int(pairs[key].sum()) < pairs[key].numel()


def test_decoder_mask_skips_the_token_before_each_special_token():
    """QMoE section 3.3: skip "the token directly before such a special token as this is the one used
    to predict the latter"; the reference code also drops the last position."""
    class Tok:
        all_special_ids = [0, 1, 62, 63]  # eos, pad / decoder start, <extra_id_1>, <extra_id_0>

    dec = torch.tensor([[1, 63, 20, 21, 62, 30, 31, 32]])  # start, s0, span 0, s1, span 1 (target then EOS)
    expected = [[False, True, True, False, True, True, True, False]]
    assert qmoe.decoder_token_mask(dec, Tok()).tolist() == expected
    assert (~qmoe.special_mask(dec, Tok())).tolist() != expected  # not the encoder's rule


@pytest.mark.parametrize("batch_experts", [False, True])
def test_an_expert_without_a_cholesky_factor_is_rounded_and_counted(batch_experts, tiny_model, monkeypatch, capsys):
    """The first expert matrix gets an H that is not positive definite: QMoE rounds it (RTN on its
    grid, the paper's "vanilla rounding"), solves the others, and reports one fallback -- one
    matrix at a time, or batched (the poisoned H is then the first of its stack)."""
    from peakllm.compress import obs
    from peakllm.compress.quant import rtn

    model = tiny_model("switch", preset="compress")
    first = next(iter(qmoe.expert_layers(model).values()))
    W0 = first.weight.detach().clone()
    real, calls = obs.dampened, []

    def indefinite_once(H, percdamp=0.01, keep_dead=False):
        D = real(H, percdamp, keep_dead)
        calls.append(1)
        if len(calls) == 1:
            D.view(-1, D.shape[-1], D.shape[-1])[0, 0, 0] = -1.0  # a negative pivot
        return D

    monkeypatch.setattr(obs, "dampened", indefinite_once)
    report = qmoe.compress(model, calib(), bits="ternary", blocksize=16, batch_size=4, progress=False,
                           batch_experts=batch_experts)
    assert [r["method"] for r in report].count("rtn (no Cholesky)") == 1 and report[0]["method"] == "rtn (no Cholesky)"
    assert {r["method"] for r in report[1:]} == {"gptq"}
    expected = rtn(W0, "ternary")
    qmoe.snap_ternary_scales(expected)
    assert torch.equal(first.weight.detach(), expected)
    assert f"1 of {len(report)} expert matrices" in capsys.readouterr().out


def test_zero_share_by_column_brackets_the_zero_share(tiny_model):
    model = tiny_model("mixtral", preset="compress")
    qmoe.compress(model, None, bits="ternary", method="rtn", progress=False)
    z = qmoe.zero_share_by_column(model, bins=4)
    assert len(z) == 4 and min(z) <= qmoe.zero_share(model) <= max(z) and 0.5 < min(z)


def test_checkpoint_bits_weighs_the_dense_part_at_bf16():
    share = {"total": 100, "experts": 80, "dense": 20}
    assert qmoe.checkpoint_bits(share, 0.5) == pytest.approx((20 * 16 + 80 * 0.5) / 100)
    assert qmoe.checkpoint_bits({"total": 1, "experts": 1, "dense": 0}, 0.8) == pytest.approx(0.8)


@pytest.mark.parametrize("family", ["mixtral", "switch"])
def test_experts_removed_zeroes_every_expert_and_restores_it(family, tiny_model):
    model = tiny_model(family, preset="compress")
    ids = torch.randint(0, 60, (1, 64), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    dense = qmoe.eval_loss(model, ids, seqlen=16)
    with qmoe.experts_removed(model):
        assert all(int(layer.weight.count_nonzero()) == 0 for layer in qmoe.expert_layers(model).values())
        removed = qmoe.eval_loss(model, ids, seqlen=16)
    assert removed != dense
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())  # every weight back
    with pytest.raises(RuntimeError), qmoe.experts_removed(model):
        raise RuntimeError("restored on error too")
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())


def test_zero_share_by_row_length_weighs_each_shape(tiny_model):
    model = tiny_model("switch", preset="compress")
    qmoe.compress(model, calib(), bits="ternary", method="rtn", progress=False)
    by = qmoe.zero_share(model, by_row_length=True)
    layers = qmoe.expert_layers(model).values()
    assert set(by) == {m.weight.shape[1] for m in layers}
    n = {c: sum(m.weight.numel() for m in layers if m.weight.shape[1] == c) for c in by}
    assert sum(by[c] * n[c] for c in by) / sum(n.values()) == pytest.approx(qmoe.zero_share(model))


def test_gaussian_rows_leave_more_zeros_the_longer_they_are():
    from peakllm.compress import quant

    shares = [quant.gaussian_zero_share(c, rows=512) for c in (192, 768, 3072)]
    assert shares == sorted(shares) and 0.78 < shares[0] < 0.86 and 0.90 < shares[-1] < 0.94, shares
