"""Paper vs ours: tables that set a published figure beside the one this run measured.

The published figures live in ``data/reference/paper_numbers.json`` (each with its paper and
table); ``paper_table`` lays them out, one row per setting and one column per figure, so a
notebook only adds its own columns from its records.
"""
from __future__ import annotations

from ..core.reference import paper_value


def paper_table(rows: dict[str, dict], columns: dict[str, dict], index: str = "setting", **where):
    """A DataFrame: row ``label`` x column ``name`` holds ``paper_value(**where, **rows[label],
    **columns[name])`` (None where the paper has no such figure).

    >>> paper_table({"dense": {"method": "dense"}}, {"wikitext2": {"dataset": "wikitext2"}},
    ...             metric="perplexity", model="facebook/opt-125m", pattern="dense")
    """
    import pandas as pd

    data = [{index: label, **{name: paper_value(**where, **r, **c) for name, c in columns.items()}}
            for label, r in rows.items()]
    return pd.DataFrame(data).set_index(index)


def with_ours(table, ours: dict[str, dict]):
    """``table`` with one column per entry of ``ours`` (column -> {row label: value}); a row
    this run did not measure gets None."""
    table = table.copy()
    for column, values in ours.items():
        table[column] = [values.get(label) for label in table.index]
    return table
