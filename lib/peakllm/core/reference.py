"""Published numbers (``data/reference/paper_numbers.json``) for the "paper vs ours" tables."""
from __future__ import annotations

import json

from .paths import DATA

PAPER_NUMBERS = DATA / "reference" / "paper_numbers.json"


def paper_numbers(**where) -> list[dict]:
    """Entries whose fields equal every given value, e.g. ``paper_numbers(metric="perplexity",
    model="facebook/opt-125m", dataset="wikitext2")``."""
    entries = json.loads(PAPER_NUMBERS.read_text())["entries"]
    return [e for e in entries if all(e.get(k) == v for k, v in where.items())]
