"""Published numbers (``data/reference/paper_numbers.json``) for the "paper vs ours" tables."""
from __future__ import annotations

import json

from .paths import DATA

PAPER_NUMBERS = DATA / "reference" / "paper_numbers.json"


def _matches(entry: dict, key: str, want) -> bool:
    return entry.get(key) in want if isinstance(want, tuple) else entry.get(key) == want


def paper_numbers(**where) -> list[dict]:
    """Entries whose fields equal every given value (a tuple: any of its values), e.g.
    ``paper_numbers(metric="perplexity", model="facebook/opt-125m", pattern=("dense", "unstructured"))``."""
    entries = json.loads(PAPER_NUMBERS.read_text())["entries"]
    return [e for e in entries if all(_matches(e, k, v) for k, v in where.items())]


def paper_value(**where):
    """The one published value matching ``where``; None when the paper has none.
    Several matches are an error: the filter must name one figure."""
    found = paper_numbers(**where)
    if len(found) > 1:
        raise ValueError(f"{len(found)} published figures match {where}; add a field that tells them apart")
    return found[0]["value"] if found else None
