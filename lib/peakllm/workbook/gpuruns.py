"""The GPU runs on record, as the notebooks read them: ``data/results/gpu/<card>.json``, one file
per CUDA card, written by ``python -m peakllm gpucheck`` (``peakllm.cli.gpucheck``).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.paths import GPU_RESULTS


def stored_records(notebook: str, metrics: list[str], folder=None):
    """The records of ``metrics`` that ``notebook`` wrote on every GPU run on record, as a table
    with the card named; None when no run holds any."""
    import pandas as pd

    rows = []
    for path in sorted(Path(folder or GPU_RESULTS).glob("*.json")):
        run = json.loads(path.read_text())
        records = run.get("notebooks", {}).get(notebook, {}).get("records") or []
        rows += [{"card": run.get("card", path.stem), **r} for r in records if r.get("metric") in metrics]
    return pd.DataFrame(rows) if rows else None
