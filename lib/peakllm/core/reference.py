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


def paper_model(model_name: str, **where) -> tuple[str, bool]:
    """The paper's model to set beside ``model_name``: itself when the paper reports figures for
    it (``facebook/opt-350m`` gets OPT-350M's rows), else the smallest model the paper reports
    (``where`` narrows the entries, e.g. ``metric="perplexity", paper=...``). Returns
    ``(model, same)``; ``same`` is False when the paper's model is a stand-in for a model it never
    measured, and tables must say so."""
    found = paper_numbers(**where)
    models = {e["model"] for e in found}
    if model_name in models:
        return model_name, True
    if not models:
        raise ValueError(f"no published figures match {where}")
    sizes = {m: model_size(m) for m in models}
    return min(models, key=lambda m: (sizes[m], m)), False


def model_size(model: str) -> float:
    """Parameters from a Hub id's size tag: "facebook/opt-1.3b" -> 1.3e9 (inf without a tag)."""
    import re

    m = re.search(r"(\d+(?:\.\d+)?)([mbt])\b", model.lower())
    return float(m.group(1)) * {"m": 1e6, "b": 1e9, "t": 1e12}[m.group(2)] if m else float("inf")
