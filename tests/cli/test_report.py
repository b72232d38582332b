"""The results page: records joined with the published figures, by setting, never by prose."""
import json

import pytest

from peakllm.cli import report
from peakllm.core.records import Recorder
from peakllm.core.reference import paper_value

SPARSEGPT = "Frantar & Alistarh, SparseGPT, ICML 2023, arXiv 2301.00774"


def pruning_records(device="cpu"):
    rec = Recorder("10_sparsegpt_one_shot_pruning", {"model_name": "tiny-opt", "seeds": [0, 1, 2]}, device=device)
    rec.add("perplexity", 100.0, "ppl", method="dense", pattern="dense", sparsity=0.0, dataset="shakespeare")
    rec.add("perplexity", 150.0, "ppl", method="magnitude", pattern="unstructured", sparsity=0.5, dataset="shakespeare")
    for seed, v in enumerate([110.0, 112.0, 114.0]):
        rec.add("perplexity", v, "ppl", method="sparsegpt", pattern="unstructured", sparsity=0.5,
                dataset="shakespeare", seed=seed)
    rec.add("perplexity", 300.0, "ppl", method="wanda", pattern="unstructured", sparsity=0.8, dataset="shakespeare")
    return rec.records


def test_a_record_meets_the_published_figure_of_its_setting():
    dense = {"metric": "perplexity", "method": "dense", "bits": 16}
    assert report.matches(dense, {"metric": "perplexity", "method": "dense", "bits": "32"})
    entry = {"metric": "loss", "method": "gptq", "bits": "ternary"}
    assert report.matches(entry, {"metric": "loss", "method": "gptq", "bits": "ternary", "seed": 2})
    assert not report.matches(entry, {"metric": "loss", "method": "rtn", "bits": "ternary"})
    assert report.matches({"metric": "loss", "method": "gptq", "bits": 2}, {"metric": "loss", "method": "gptq", "bits": "2"})
    assert not report.matches({"metric": "train_bytes", "method": "qlora"},
                              {"metric": "train_bytes", "method": "qlora", "part": "weights"})
    assert report.matches({"metric": "train_bytes", "method": "qlora"},
                          {"metric": "train_bytes", "method": "qlora", "part": "total"})
    assert report.label((("method", "sparsegpt"), ("pattern", "unstructured"), ("sparsity", 0.5))) == \
        "sparsegpt · unstructured · 50%"
    assert report.label((("method", "gptq"), ("bits", 4.0))) == "gptq · 4-bit"


def test_the_comparison_sets_the_papers_smallest_model_beside_our_seeds():
    [comp] = report.comparisons(pruning_records())
    assert comp["paper"] == SPARSEGPT and comp["model"] == "facebook/opt-125m"
    assert comp["columns"] == ["paper opt-125m wikitext2", "paper opt-125m ptb", "paper opt-125m c4",
                               "ours tiny-opt shakespeare"]
    rows = dict(comp["rows"])
    assert list(rows) == ["dense · 0%", "magnitude · unstructured · 50%", "sparsegpt · unstructured · 50%"]
    assert comp["common"] == ""  # the rows differ in every field
    sgpt = rows["sparsegpt · unstructured · 50%"]
    assert sgpt["ours tiny-opt shakespeare"] == [110.0, 112.0, 114.0]
    assert sgpt["paper opt-125m wikitext2"] == [paper_value(metric="perplexity", paper=SPARSEGPT, where="Table 1",
                                                            model="facebook/opt-125m", method="sparsegpt",
                                                            dataset="wikitext2", pattern="unstructured")]
    assert report.cell(sgpt["ours tiny-opt shakespeare"]) == "112 ± 2 (3 seeds)"
    assert len(comp["records"]) == 5  # the 80% Wanda run has no published figure


def test_a_model_the_paper_reports_is_compared_with_itself():
    recs = pruning_records()
    for r in recs:
        r["params"] = {"model_name": "facebook/opt-350m"}
    [comp] = report.comparisons(recs)
    assert comp["model"] == "facebook/opt-350m" and comp["columns"][-1] == "ours facebook/opt-350m shakespeare"


def test_only_dense_rows_make_no_table():
    assert report.comparisons(pruning_records()[:1]) == []


def test_the_page_holds_each_table_its_plot_and_the_versions_behind_it(tmp_path):
    recs = pruning_records(device="cuda")
    text, n = report.page(recs, ["00_orientation", "10_sparsegpt_one_shot_pruning"], tmp_path / "img", "img", "`runs/x/`")
    assert n == 1 and (tmp_path / "img" / "10_sparsegpt_one_shot_pruning_1.png").read_bytes().startswith(b"\x89PNG")
    assert "](img/10_sparsegpt_one_shot_pruning_1.png)" in text and "## [](notebooks/10_sparsegpt_one_shot_pruning.ipynb)" in text
    assert "device `cuda`" in text and f"torch {recs[0]['versions']['torch']}" in text
    assert "| sparsegpt · unstructured · 50% | 36.85 |" in text
    assert "00_orientation" not in text  # a notebook without records gets no section
    assert "All 6 records of this notebook" in text


def test_without_records_the_page_says_there_is_no_run(tmp_path):
    text, n = report.page(None, ["10_sparsegpt_one_shot_pruning"], tmp_path, "img", "`notebooks/`")
    assert n == 0 and "No run of the workbook was found" in text and "make workbook" in text
    assert not list(tmp_path.iterdir())


def test_records_come_from_results_json_else_from_each_notebooks_file(tmp_path):
    assert report.load_records(tmp_path) is None
    recs = pruning_records()
    (tmp_path / "10_sparsegpt_one_shot_pruning.results.json").write_text(json.dumps(recs[:2]))
    assert report.load_records(tmp_path) == recs[:2]
    (tmp_path / "results.json").write_text(json.dumps(recs))
    assert report.load_records(tmp_path) == recs


def test_a_pipe_inside_a_cell_does_not_break_the_table():
    assert report.md_table(["a", "b"], [["x|y", 1]]).splitlines()[-1] == "| x\\|y | 1 |"


@pytest.mark.parametrize("value", [None, "", True])
def test_no_value_is_not_a_setting(value):
    assert report.setting({"method": value, "bits": 4}) == (("bits", 4.0),)
