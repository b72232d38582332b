"""The lessons check: a figure that drifts past its measured tolerance, a changed byte count, a
missing record or a broken ordering fails; times and rates never do."""
import json

import pytest

from peakllm.cli.run import notebooks
from peakllm.workbook import lessons


def record(metric, value, unit, **q):
    return {"notebook": "99_demo", "metric": metric, "value": value, "unit": unit, **q,
            "device": "cpu", "versions": {}, "params": {}}


REF = [record("perplexity", 110.56, "ppl", method="sparsegpt", sparsity=0.8, seed=0),
       record("bytes", 17_096_704, "B", part="weights"),
       record("prune_seconds", 12.0, "s", method="sparsegpt"),
       record("tokens_per_s", 400.0, "tok/s", batch=1)]


@pytest.fixture
def ref_root(tmp_path):
    (tmp_path / "99_demo.results.json").write_text(json.dumps(REF))
    return tmp_path


def fresh(**changes):
    out = [dict(r) for r in REF]
    for r in out:
        if r["metric"] in changes:
            r["value"] = changes[r["metric"]]
    return out


def test_the_reference_itself_and_small_machine_noise_pass(ref_root):
    assert lessons.check("99_demo", fresh(), ref_root) == []
    assert lessons.check("99_demo", fresh(perplexity=110.85), ref_root) == []  # Intel vs AMD, 0.26%


def test_a_figure_a_few_percent_off_fails_naming_it(ref_root):
    [failure] = lessons.check("99_demo", fresh(perplexity=110.56 * 1.03), ref_root)
    assert "perplexity" in failure and "sparsegpt" in failure and "113.877 vs reference 110.56" in failure


def test_counted_bytes_must_match_exactly_and_times_never_count(ref_root):
    assert len(lessons.check("99_demo", fresh(bytes=17_096_705), ref_root)) == 1
    assert lessons.check("99_demo", fresh(prune_seconds=99.0, tokens_per_s=1.0), ref_root) == []


def test_a_missing_record_fails(ref_root):
    assert "missing here" in lessons.check("99_demo", fresh()[1:], ref_root)[0]


def test_below_is_a_clear_win_not_a_tie():
    assert lessons.below("a", [1.0, 1.1, 0.9], "b", [2.0])[1]
    assert not lessons.below("a", [1.0, 2.0, 0.0], "b", [2.0])[1]  # inside a's seed spread: a tie
    assert not lessons.below("a", [], "b", [2.0])[1]
    assert not lessons.below("a", [3.0], "b", [2.0])[1]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_a_reference_run_and_properties(path):
    assert lessons.reference(path.stem), f"no data/results/default/{path.stem}.results.json: make workbook ARGS=--store"
    assert path.stem in lessons.PROPERTIES


def test_the_committed_reference_runs_show_their_lessons():
    for path in notebooks():
        assert lessons.check(path.stem, lessons.reference(path.stem)) == [], path.stem


@pytest.mark.parametrize("notebook, metric, match, factor, claim", [
    ("10_sparsegpt_one_shot_pruning", "perplexity", {"method": "sparsegpt", "sparsity": 0.8}, 2.0, "SparseGPT at"),
    ("21_weight_quantization", "perplexity", {"method": "gptq", "bits": "2"}, 1.1, "GPTQ at 2 bits"),
    ("20_qmoe_moe_compression", "layer_error", {"method": "gptq", "bits": "ternary"}, 100.0, "GPTQ's one-expert error"),
    ("20_qmoe_moe_compression", "loss", {"method": "gptq", "bits": "ternary"}, 1.05, "ternary GPTQ costs at most"),
    ("20_qmoe_moe_compression", "loss", {"method": "experts_removed"}, 0.8, "removing the experts costs"),
    ("22_fast_decoding", "roofline_fraction", {"dtype": "float32", "batch": 1}, 10.0, "no decode runs above"),
])
def test_a_run_that_loses_its_lesson_fails_the_property(notebook, metric, match, factor, claim):
    records = [dict(r) for r in lessons.reference(notebook)]
    hit = [r for r in records if r["metric"] == metric and all(r.get(k) == v for k, v in match.items())]
    assert hit
    for r in hit:
        r["value"] *= factor
    props = list(lessons.PROPERTIES[notebook](lessons.Figures(records)))
    assert [c for c, ok, _ in props if not ok and c.startswith(claim)], props
