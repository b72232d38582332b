import pandas as pd
import pytest

from peakllm.core import reference, spread


def test_summary_uses_the_sample_standard_deviation():
    s = spread.summarize([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert spread.summarize([5])["sd"] == 0.0
    with pytest.raises(ValueError, match="values"):
        spread.summarize([])


def test_overlapping_intervals_are_a_tie():
    assert spread.verdict([10.0, 10.2, 10.4], [10.3, 10.5, 10.7]) == "tie"
    assert spread.verdict([10.0, 10.1, 10.2], [12.0, 12.1, 12.2]) == "better"
    assert spread.verdict([12.0, 12.1, 12.2], [10.0, 10.1, 10.2]) == "worse"
    assert spread.verdict([0.9, 0.91], [0.5, 0.52], lower_is_better=False) == "better"


def test_table_groups_and_formats():
    df = pd.DataFrame({"method": ["a", "a", "a", "b"], "ppl": [1.0, 2.0, 3.0, 7.0]})
    t = spread.table(df, ["method"], "ppl")
    assert t.loc["a", "mean ± sd"] == "2.00 ± 1.00" and t.loc["b", "mean ± sd"] == "7.00" and t.loc["b", "n"] == 1
    assert spread.fmt([1.0, 2.0, 3.0], 1) == "2.0 ± 1.0"


def test_the_papers_own_rows_or_its_smallest_model_as_a_labelled_stand_in():
    assert reference.paper_model("facebook/opt-1.3b", metric="perplexity") == ("facebook/opt-1.3b", True)
    assert reference.paper_model("tiny-opt", metric="perplexity") == ("facebook/opt-125m", False)
    with pytest.raises(ValueError, match="no published figures"):
        reference.paper_model("tiny-opt", metric="no-such-metric")


def test_the_papers_seed_spread_is_recorded():
    (e,) = reference.paper_numbers(metric="perplexity", model="facebook/opt-2.7b", method="sparsegpt",
                                   where="section 4 (seed variance)")
    assert e["sd"] == 0.075 and e["seeds"] == 5
