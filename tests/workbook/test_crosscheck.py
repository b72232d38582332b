"""The cross-check with llm-compressor, the part that runs in the workbook's venv
(peakllm.workbook.crosscheck, tools/crosscheck.py): measures, the gap rule, the results file and
the notebooks' "production library" rows. None of it needs llm-compressor."""
import importlib.util
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from peakllm.core.paths import REPO
from peakllm.workbook import crosscheck as cc


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
    assert cc.production_rows("sparsegpt", tmp_path / "results.json") is None
    out = capsys.readouterr().out
    assert "make crosscheck" in out and "results.json not found" in out
    assert cc.load(tmp_path / "results.json") is None


def test_the_notebooks_read_the_file_the_environment_names(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(_results()))
    monkeypatch.setenv(cc.ENV, str(path))
    assert cc.results_path() == path and cc.production_rows("gptq") is not None
    monkeypatch.delenv(cc.ENV)
    assert cc.results_path() == cc.RESULTS


def test_production_rows_show_both_libraries_per_setting(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    t = cc.production_rows("sparsegpt", path)
    assert isinstance(t, pd.DataFrame) and len(t) == 5  # 50% and 2:4, ours and llm-compressor each; one variant
    assert list(t["setting"]) == ["50% unstructured"] * 3 + ["2:4"] * 2
    assert t["implementation"].str.contains("llm-compressor 9.9").sum() == 3
    assert t.loc[0, "ppl shakespeare"] == "20.00 ± 0.40" and t.loc[1, "ppl shakespeare"] == "20.10 ± 0.20"
    assert t.loc[0, "vs ours"] == "" and t.loc[1, "vs ours"] == "+0.10 (tie)"  # 20.1 ± 0.2 overlaps 20.0 ± 0.4
    assert t.loc[1, "agreement with ours"] == "85.00% of mask" and t.loc[1, "time"] == "4.0 s"
    assert t.loc[2, "implementation"].endswith("its default targets") and t.loc[2, "vs ours"] == "+11.00 (worse)"
    assert len(cc.production_rows("sparsegpt", path, variants=False)) == 4
    g = cc.production_rows("gptq", path)
    assert list(g["setting"]) == ["4-bit per-channel"] * 2 and g.loc[1, "agreement with ours"].endswith("of grid")


def test_bad_family_and_foreign_files_fail_with_their_names(tmp_path):
    with pytest.raises(ValueError, match="family"):
        cc.production_rows("wanda", tmp_path / "results.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="methods"):
        cc.load(tmp_path / "other.json")
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
    assert set(H) == set(sequential.all_linear_layers(model))
    name = "model.decoder.layers.1.fc2"
    one = sequential.calibrate_layer(model, calib, name, lambda layer: obs.Hessian(layer.weight.shape[1]))
    torch.testing.assert_close(H[name], one.H)


def test_the_compare_half_says_what_to_run_first(tmp_path):
    with pytest.raises(SystemExit, match="crosscheck_llmcompressor.py"):
        _tool().main(["--results", str(tmp_path / "results.json")])


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
    assert tool.main(["--results", str(tmp_path / "results.json")]) == 0
    res = cc.load(tmp_path / "results.json")
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
    assert len(cc.production_rows("gptq", tmp_path / "results.json")) == 2
