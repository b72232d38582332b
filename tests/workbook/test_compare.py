"""Paper-vs-ours tables (peakllm.workbook.compare) over the published figures."""
import pandas as pd
import pytest

from peakllm.core.reference import paper_numbers, paper_value
from peakllm.workbook import compare


def test_paper_value_is_one_figure_or_none():
    assert paper_value(metric="perplexity", model="facebook/opt-125m", method="dense", dataset="wikitext2",
                       pattern="dense") == 27.66
    assert paper_value(metric="perplexity", model="no/such-model") is None
    with pytest.raises(ValueError, match="published figures match"):
        paper_value(metric="perplexity", model="facebook/opt-125m")


def test_a_tuple_matches_any_of_its_values():
    both = paper_numbers(metric="perplexity", model="facebook/opt-125m", dataset="wikitext2",
                         pattern=("dense", "unstructured"), sparsity=(0.0, 0.5))
    assert {e["pattern"] for e in both} == {"dense", "unstructured"}


def test_paper_table_lays_out_rows_and_columns_and_adds_ours():
    t = compare.paper_table({m: {"method": m} for m in ["dense", "magnitude", "sparsegpt"]},
                            {ds: {"dataset": ds} for ds in ["wikitext2", "ptb", "c4"]}, index="method",
                            metric="perplexity", model="facebook/opt-125m", pattern=("dense", "unstructured"),
                            sparsity=(0.0, 0.5))
    assert list(t.index) == ["dense", "magnitude", "sparsegpt"] and list(t.columns) == ["wikitext2", "ptb", "c4"]
    assert t.loc["dense", "wikitext2"] == 27.66
    assert t.loc["magnitude", "wikitext2"] > t.loc["sparsegpt", "wikitext2"] > t.loc["dense", "wikitext2"]
    both = compare.with_ours(t, {"ours": {"dense": 114.2, "sparsegpt": 115.0}})
    assert both.loc["dense", "ours"] == 114.2 and pd.isna(both.loc["magnitude", "ours"])
    assert "ours" not in t  # the paper's table is left as it was
