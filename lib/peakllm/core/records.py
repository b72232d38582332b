"""One way to record: every notebook ends by writing its key figures as flat JSON records.

A record is ``{"notebook", "metric", "value", "unit", <qualifiers>..., "device", "versions",
"params"}``:
the qualifiers (``method``, ``sparsity``, ``pattern``, ``bits``, ``dataset``, ``part``, ...) tell
figures of the same metric apart, ``params`` holds the notebook's parameters. A run directory
holds one ``<notebook>.results.json`` per executed notebook; ``gather`` joins them into the
run's ``results.json``.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from .paths import atomic_write_text, relative
from .units import format_value

QUALIFIERS = ("method", "sparsity", "pattern", "bits", "dataset", "part", "scope", "coder",
              "counts", "batch", "kv_cache", "attn", "dtype", "strategy", "model")


def _plain(v):
    """JSON-safe scalars: numpy / torch numbers become Python numbers, NaN becomes None."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Python and the packages a figure depends on, as installed (stored with every record)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("peakllm", "torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Recorder:
    def __init__(self, notebook: str, params: dict, device: str = ""):
        self.notebook, self.params, self.device = notebook, dict(params), str(device)
        self.records: list[dict] = []

    def add(self, metric: str, value, unit: str, **fields) -> None:
        rec = {"notebook": self.notebook, "metric": metric, "value": _plain(value), "unit": unit}
        rec |= {k: _plain(v) for k, v in fields.items()}
        rec |= {"device": self.device, "versions": versions(), "params": self.params}
        self.records.append(rec)

    def table(self):
        return to_frame(self.records)

    def find(self, metric: str, **qualifiers) -> list[dict]:
        """The records of ``metric`` whose fields equal every one of ``qualifiers``."""
        return find(self.records, metric, **qualifiers)

    def value(self, metric: str, **qualifiers):
        """The one recorded value of ``metric`` with these qualifiers (what rendered prose quotes);
        KeyError when none or several match, naming what was recorded."""
        found = self.find(metric, **qualifiers)
        if len(found) != 1:
            seen = sorted({tuple((k, r.get(k)) for k in QUALIFIERS if r.get(k) is not None)
                           for r in self.records if r["metric"] == metric})
            raise KeyError(f"{len(found)} records of {metric!r} with {qualifiers}; recorded: {seen[:12]}")
        return found[0]["value"]

    def save(self, results_path: str = "") -> str:
        """Write the records (atomically) to ``results_path``; "" keeps them in the notebook only."""
        if not results_path:
            return f"{len(self.records)} records (not written: results_path is empty)"
        atomic_write_text(Path(results_path), json.dumps(self.records, indent=1) + "\n")
        return f"{len(self.records)} records written to {relative(results_path)}"


def find(records: list[dict], metric: str, **qualifiers) -> list[dict]:
    """The records of ``metric`` whose fields equal every one of ``qualifiers``."""
    return [r for r in records if r["metric"] == metric and all(r.get(k) == v for k, v in qualifiers.items())]


def to_frame(records: list[dict], raw: bool = False):
    """Records as a DataFrame: metric, the qualifiers in use, value.

    By default the value is one formatted string with its unit (what a reader wants and what
    the notebook sanitizer can mask when it is a time or a size); ``raw=True`` keeps the
    numbers and a separate ``unit`` column.
    """
    import pandas as pd

    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("params", "versions")} for r in records])
    if df.empty:
        return df
    used = [q for q in QUALIFIERS if q in df and df[q].notna().any()]
    extra = [c for c in df.columns if c not in ("notebook", "metric", "value", "unit", "device", *used)]
    df = df[["notebook", "metric", *used, *extra, "value", "unit"]]
    if raw:
        return df
    df = df.assign(value=[format_value(v, u) for v, u in zip(df["value"], df["unit"])])
    return df.drop(columns="unit").fillna("")


def gather(run_dir: str | Path) -> list[dict]:
    """All ``*.results.json`` of a run directory, in notebook order, as one list."""
    out = []
    for path in sorted(Path(run_dir).glob("*.results.json")):
        out += json.loads(path.read_text())
    return out
