"""The cross-check with llm-compressor, the part that runs in the workbook's venv
(peakllm.cli.crosscheck and tools/crosscheck.py; the notebooks' rows: peakllm.workbook.crosscheck): measures, the gap rule, the results file and
the notebooks' "production library" rows. None of it needs llm-compressor."""
import importlib.util
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from peakllm.cli import crosscheck as cc
from peakllm.core.paths import REPO
from peakllm.models import structure
from peakllm.workbook import crosscheck as results


def _tool():
    spec = importlib.util.spec_from_file_location("crosscheck_tool", REPO / "tools" / "crosscheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(ours=(20.0, 20.4, 19.6), theirs=(20.1, 20.3, 19.9)) -> dict:
    side = lambda p: {"perplexity": list(p), "seconds": [3.0, 5.0, 4.0]}  # noqa: E731
    methods = {name: {"setting": spec["setting"], "ours": side(ours), "llmcompressor": side(theirs),
                      "gap": cc.gap_check(list(ours), list(theirs)),
                      "agreement": {"kind": "grid" if spec["family"] == "gptq" else "mask",
                                    "overall": [0.9, 0.8, 0.85], "per_layer": {}}}
               for name, spec in cc.METHODS.items()}
    methods["sparsegpt 50%"]["variants"] = {"its default targets": {"perplexity": [31.0, 30.0, 32.0],
                                                                     "seconds": [1.0, 1.0, 1.0],
                                                                     "ours (same seeds)": list(ours)}}
    return {"methods": methods, "evaluation": {"dataset": "shakespeare"},
            "versions": {"llmcompressor": {"llmcompressor": "9.9"}}}


def test_a_missing_results_file_says_how_to_make_one(tmp_path, capsys):
    assert results.production_rows("sparsegpt", tmp_path / "results.json") is None
    out = capsys.readouterr().out
    assert "make crosscheck" in out and "results.json not found" in out
    assert results.load(tmp_path / "results.json") is None


def test_the_notebooks_read_the_file_the_environment_names(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(_results()))
    monkeypatch.setenv(results.ENV, str(path))
    assert results.results_path() == path and results.production_rows("gptq") is not None
    monkeypatch.delenv(results.ENV)
    assert results.results_path() == results.RESULTS


def test_production_rows_show_both_libraries_per_setting(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    t = results.production_rows("sparsegpt", path)
    assert isinstance(t, pd.DataFrame) and len(t) == 5  # 50% and 2:4, ours and llm-compressor each; one variant
    assert list(t["setting"]) == ["50% unstructured"] * 3 + ["2:4"] * 2
    assert t["implementation"].str.contains("llm-compressor 9.9").sum() == 3
    assert t.loc[0, "ppl shakespeare"] == "20.00 ± 0.40" and t.loc[1, "ppl shakespeare"] == "20.10 ± 0.20"
    assert t.loc[0, "vs ours"] == "" and t.loc[1, "vs ours"] == "+0.10 (tie)"  # 20.1 ± 0.2 overlaps 20.0 ± 0.4
    assert t.loc[1, "agreement with ours"] == "85.00% of mask" and t.loc[1, "time"] == "4.0 s"
    assert t.loc[2, "implementation"].endswith("its default targets") and t.loc[2, "vs ours"] == "+11.00 (worse)"
    assert len(results.production_rows("sparsegpt", path, variants=False)) == 4
    g = results.production_rows("gptq", path)
    assert list(g["setting"]) == ["4-bit per-channel"] * 2 and g.loc[1, "agreement with ours"].endswith("of grid")


def test_bad_family_and_foreign_files_fail_with_their_names(tmp_path):
    with pytest.raises(ValueError, match="family"):
        results.production_rows("wanda", tmp_path / "results.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="methods"):
        results.load(tmp_path / "other.json")
    with pytest.raises(ValueError, match="method="):
        cc.check_method("awq")


def test_gap_rule_compares_each_seed_with_two_sds_of_ours():
    inside = cc.gap_check([10.0, 11.0, 12.0], [10.5, 11.5, 11.0])   # sd 1, gaps <= 1
    assert inside["within"] and inside["two_sd"] == pytest.approx(2.0) and inside["max_gap"] == pytest.approx(1.0)
    outside = cc.gap_check([10.0, 10.1, 10.2], [10.0, 10.1, 11.0])
    assert not outside["within"] and outside["max_gap"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="same seeds"):
        cc.gap_check([1.0, 2.0], [1.0])
    assert cc.mean_abs_change([1.0, 2.0], [1.5, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same length"):
        cc.mean_abs_change([1.0], [])


def test_reorder_is_a_fixed_permutation_per_seed():
    p = cc.reorder(128, 0)
    assert sorted(p.tolist()) == list(range(128)) and not torch.equal(p, torch.arange(128))
    assert torch.equal(p, cc.reorder(128, 0)) and not torch.equal(p, cc.reorder(128, 1))


def test_mask_and_grid_agreement_count_equal_entries():
    a = {"l": torch.tensor([[0.0, 1.0, 0.0, 2.0]]), "m": torch.tensor([[0.0, 1.0]])}
    b = {"l": torch.tensor([[0.0, 0.0, 3.0, 2.0]]), "m": torch.tensor([[0.0, 5.0]])}
    agree = cc.mask_agreement(a, b)
    assert agree["per_layer"] == {"l": 0.5, "m": 1.0} and agree["overall"] == pytest.approx(4 / 6)
    dense = {"l": torch.linspace(-1, 1, 32).reshape(2, 16)}
    from peakllm.compress.quant import rtn

    q = {"l": rtn(dense["l"], 4)}
    assert cc.grid_agreement(dense, q, q)["overall"] == 1.0
    shifted = q["l"].clone()
    shifted[0, 0] += (dense["l"][0].max() - dense["l"][0].min()) / 15  # one level up on row 0's 4-bit grid
    g = cc.grid_agreement(dense, q, {"l": shifted})
    assert g["overall"] == pytest.approx(31 / 32)


def test_layer_errors_are_relative_to_the_dense_layer():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 8, generator=g)
    H = 2 * X.T @ X / 64
    W = torch.randn(4, 8, generator=g)
    e = cc.layer_errors({"l": W}, {"l": W.clone()}, {"l": H})["l"]
    assert e["output"] == pytest.approx(0, abs=1e-6) and e["weight"] == 0
    e = cc.layer_errors({"l": W}, {"l": torch.zeros_like(W)}, {"l": H})["l"]
    assert e["output"] == pytest.approx(1.0) and e["weight"] == pytest.approx(1.0)
    half = cc.layer_errors({"l": W}, {"l": W / 2}, {"l": H})["l"]
    assert half["output"] == pytest.approx(0.5, rel=1e-5) and half["weight"] == pytest.approx(0.5)


@pytest.mark.slow
def test_input_hessians_match_the_one_layer_calibration():
    from peakllm.compress import obs, sequential
    from peakllm.models import load

    model, tok = load("tiny-opt", device="cpu")
    calib = cc.calibration_sets(tok, 32, seeds=[0], samples=4)[0]
    assert calib.shape == (4, 32) and cc.digest(calib) == cc.digest(calib.clone())
    assert cc.digest(calib) != cc.digest(cc.calibration_sets(tok, 32, seeds=[1], samples=4)[1])
    H = cc.input_hessians(model, calib)
    assert set(H) == set(structure.all_linear_layers(model))
    name = "model.decoder.layers.1.fc2"
    one = sequential.calibrate_layer(model, calib, name, lambda layer: obs.Hessian(layer.weight.shape[1]))
    torch.testing.assert_close(H[name], one.H)


def test_the_compare_half_says_what_to_run_first(tmp_path):
    with pytest.raises(SystemExit, match="crosscheck_llmcompressor.py"):
        _tool().main(["--results", str(tmp_path / "results.json"), "--weights", str(tmp_path)])


@pytest.mark.slow
def test_compare_half_end_to_end_with_our_own_weights_standing_in(tmp_path):
    """With our own compressed weights in llm-compressor's place, every gap is 0 and every
    agreement 1: the whole compare path, from meta.json to results.json, without llm-compressor."""
    tool = _tool()
    from peakllm.models import load

    model, tok = load("tiny-opt", device="cpu")
    ctx = 256
    seeds, samples = [0, 1], 4
    calibs = cc.calibration_sets(tok, ctx, seeds, samples)
    texts, _ = cc.eval_texts(tok, ctx)
    src = tmp_path / "llmcompressor"
    src.mkdir()
    runs = []
    for method in cc.METHODS:
        for s in seeds:
            m, secs = tool.ours(method, calibs[s])
            file = f"{method.replace(' ', '_').replace(':', 'of').replace('%', 'pct')}-{s}.safetensors"
            save_file(cc.linear_weights(m), str(src / file))
            runs.append({"method": method, "variant": "matched", "seed": s, "seconds": secs, "file": file,
                         "perplexity_here": {"shakespeare": 0.0}, "modifier": {}})
    fields = lambda *names: {n: "'x'" for n in names}  # noqa: E731
    meta = {"versions": {"llmcompressor": "stand-in"}, "calib_samples": samples, "batch_size": 8,
            "calibration_sha256": {str(s): cc.digest(c) for s, c in calibs.items()},
            "eval_sha256": {d: cc.digest(t) for d, t in texts.items()}, "runs": runs,
            "defaults": {"SparseGPTModifier": fields("block_size", "dampening_frac", "targets", "ignore"),
                         "GPTQModifier": fields("block_size", "dampening_frac", "actorder"),
                         "QuantizationArgs": fields("symmetric", "observer"),
                         "W4A16": fields("symmetric", "strategy", "group_size"),
                         "oneshot": fields("pipeline", "num_calibration_samples", "batch_size",
                                           "shuffle_calibration_samples")}}
    (src / "meta.json").write_text(json.dumps(meta))
    assert tool.main(["--results", str(tmp_path / "results.json"), "--weights", str(tmp_path)]) == 0
    res = results.load(tmp_path / "results.json")
    assert set(res["methods"]) == set(cc.METHODS) and res["protocol"]["calib_samples"] == samples
    assert not list(src.glob("*.safetensors")) and (src / "meta.json").exists()  # weights removed once measured
    for m in res["methods"].values():
        assert m["ours"]["perplexity"] == m["llmcompressor"]["perplexity"] and m["gap"]["within"]
        assert m["agreement"]["overall"] == [1.0, 1.0]
        assert m["ours"]["errors"] == m["llmcompressor"]["errors"]
    sparse = res["methods"]["sparsegpt 50%"]
    assert all(0.5 <= s < 0.51 for s in sparse["ours"]["sparsity"])
    layer = next(iter(sparse["ours"]["errors"].values()))
    assert 0 < layer["output"] < 1 and 0 < layer["weight"] < 1
    assert len(results.production_rows("gptq", tmp_path / "results.json")) == 2


# ---- MiniLM (notebook 13) ----------------------------------------------------------------------

def _minilm_part(ours=(0.085, 0.086, 0.084), theirs=(0.0855, 0.0858, 0.0845)) -> dict:
    side = lambda c: {"1 - cos": list(c), "recall@1": [0.56, 0.57, 0.55], "seconds": [6.0, 8.0, 7.0]}  # noqa: E731
    methods = {}
    for name, spec in cc.MINILM_METHODS.items():
        o, t = side(ours), side(theirs)
        methods[name] = {"setting": spec["setting"], "ours": o, "llmcompressor": t,
                         "gap": {k: cc.gap_check(o[k], t[k]) for k in results.SCORES},
                         "agreement": {"kind": "grid" if cc.solver(spec) == "gptq" else "mask",
                                       "overall": [0.9, 0.9, 0.9]}}
    v = side((0.2, 0.21, 0.22)) | {f"ours (same seeds) {k}": side(ours)[k] for k in results.SCORES}
    methods["minilm sparsegpt 50%"]["variants"] = {cc.UNPADDED: v}
    return {"versions": {"llmcompressor": {"llmcompressor": "9.9"}}, "methods": methods}


def test_minilm_rows_show_both_scores_per_setting(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"minilm": _minilm_part()}))
    t = results.production_rows("minilm", path)
    assert len(t) == 7 and list(t["setting"][:3]) == ["SparseGPT 50% unstructured"] * 3
    assert t.loc[0, "1 - cos"] == "0.0850 ± 0.0010" and t.loc[0, "recall@1"] == "0.560 ± 0.010"
    assert t.loc[1, "1 - cos vs ours"] == "+0.0003 (tie)" and t.loc[1, "recall@1 vs ours"] == "tie"
    assert t.loc[1, "agreement with ours"] == "90.00% of mask"
    assert t.loc[2, "implementation"].endswith(cc.UNPADDED) and t.loc[2, "1 - cos vs ours"].endswith("(worse)")
    assert t.loc[1, "time"] == "7.0 s" and t["agreement with ours"].str.endswith("of grid").sum() == 1
    assert len(results.production_rows("minilm", path, variants=False)) == 6
    # a file with only the minilm part has no tiny-opt rows yet: it says how to make them
    assert results.production_rows("gptq", path) is None and "make crosscheck " in capsys.readouterr().out
    # and the other way round
    path.write_text(json.dumps(_results()))
    assert results.production_rows("minilm", path) is None and "make crosscheck-minilm" in capsys.readouterr().out
    assert len(results.production_rows("sparsegpt", path)) == 5


def test_a_minilm_gap_outside_two_sds_stays_in_the_file_not_in_the_notebooks_rows(tmp_path):
    path = tmp_path / "results.json"
    part = _minilm_part(theirs=(0.095, 0.096, 0.094))
    path.write_text(json.dumps({"minilm": part}))
    assert part["methods"]["minilm gptq 4-bit"]["gap"]["1 - cos"]["within"] is False
    t = results.production_rows("minilm", path, variants=False)
    assert "within 2 sd" not in t.columns  # the notebooks read ties with the workbook's noise rule only
    assert set(t.loc[t["implementation"].str.startswith("production"), "1 - cos vs ours"].str.endswith("(worse)")) == {True}


def test_methods_name_their_solver():
    assert {cc.solver(s) for s in cc.METHODS.values()} == {"sparsegpt", "gptq"}
    assert [cc.solver(cc.check_method(n)) for n in cc.MINILM_METHODS] == ["sparsegpt", "sparsegpt", "gptq"]
    assert all(s["family"] == "minilm" for s in cc.MINILM_METHODS.values())


def test_unpad_keeps_each_lines_real_tokens():
    calib = {"input_ids": torch.tensor([[101, 7, 8, 102], [101, 9, 102, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    assert cc.unpad(calib) == [[101, 7, 8, 102], [101, 9, 102]]
    assert cc.padding_share(calib) == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="right padding"):
        cc.unpad({"input_ids": calib["input_ids"], "attention_mask": torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])})
    d = cc.lines_digest(calib)
    other = dict(calib, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1]]))
    assert d == cc.lines_digest({k: v.clone() for k, v in calib.items()}) and d != cc.lines_digest(other)
    assert cc.text_digest(["a", "b"]) != cc.text_digest(["a b"]) and len(cc.text_digest([])) == 64


def test_embedding_scores_are_notebook_13s():
    g = torch.Generator().manual_seed(0)
    dense = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    same = cc.embedding_scores(dense, dense.clone())
    assert same["1 - cos"] == pytest.approx(0, abs=1e-6) and same["recall@1"] == 1.0
    moved = cc.embedding_scores(dense, torch.nn.functional.normalize(dense + torch.randn(16, 8, generator=g), dim=1))
    assert 0 < moved["1 - cos"] < 1 and 0 <= moved["recall@1"] < 1


def test_input_hessians_leave_the_padding_out_unless_asked():
    """On padded lines our H takes the real tokens only, llm-compressor's every position."""
    from peakllm.compress import obs

    class Tiny(torch.nn.Module):  # one "block" with one linear layer, as find_stacks sees a stack
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"is_encoder_decoder": False})()
            self.emb = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(4, 3))])

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            return self.layers[0](self.emb(input_ids))

    torch.manual_seed(0)
    model = Tiny()
    calib = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    X = model.emb(calib["input_ids"]).detach()                           # (2, 3, 4)
    real = obs.Hessian(4)
    real.add_batch(X[calib["attention_mask"].bool()])
    every = obs.Hessian(4)
    every.add_batch(X)
    (name,) = cc.input_hessians(model, calib)
    torch.testing.assert_close(cc.input_hessians(model, calib)[name], real.H)
    torch.testing.assert_close(cc.input_hessians(model, calib, padding=True)[name], every.H)


def test_the_minilm_compare_half_says_what_to_run_first(tmp_path):
    with pytest.raises(SystemExit, match="--model minilm"):
        _tool().main(["--results", str(tmp_path / "results.json"), "--weights", str(tmp_path), "--model", "minilm"])


def test_solve_is_our_solver_on_a_given_hessian():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 16, generator=g)
    X = torch.randn(64, 16, generator=g)
    H = 2 * X.t() @ X / 64
    pruned = cc.solve(W, H, cc.METHODS["sparsegpt 2:4"], 16, 0.01)
    assert pruned.shape == W.shape and (pruned == 0).float().mean().item() == 0.5
    assert ((pruned.view(8, 4, 4) == 0).sum(-1) == 2).all()  # 2 zeros in every group of 4
    q = cc.solve(W, H, cc.METHODS["gptq 4-bit"], 16, 0.01)
    assert all(len(torch.unique(r)) <= 16 for r in q) and not torch.equal(q, W)
