"""Noise: the spread of a measurement over seeds, and the rule that reads a comparison.

A method comparison is run over several calibration seeds; each side is summarised by its mean
and its sample standard deviation (``n - 1`` in the denominator, as the SparseGPT paper's
"13.52 ± 0.075 over 5 seeds"). Two sides whose intervals mean ± sd overlap are a **tie**: the
difference lies inside the noise this run measured.
"""
from __future__ import annotations

from statistics import mean, stdev


def summarize(values) -> dict:
    """``{"mean", "sd", "n"}`` of a list of numbers; sd is 0 for one value (a deterministic
    method, e.g. magnitude pruning, needs no seeds)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must not be empty")
    return {"mean": mean(values), "sd": stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def verdict(a, b, lower_is_better: bool = True) -> str:
    """How side ``a`` compares with side ``b`` (each a list of per-seed values): "better",
    "worse" or "tie" (their mean ± sd intervals overlap)."""
    sa, sb = summarize(a), summarize(b)
    if abs(sa["mean"] - sb["mean"]) <= sa["sd"] + sb["sd"]:
        return "tie"
    a_lower = sa["mean"] < sb["mean"]
    return "better" if a_lower == lower_is_better else "worse"


def fmt(values, digits: int = 2) -> str:
    """"mean ± sd" rounded to ``digits``; one value (a method that reads no data) prints alone."""
    s = summarize(values)
    return _text(s["mean"], s["sd"], s["n"], digits)


def _text(mean_: float, sd: float, n: int, digits: int) -> str:
    return f"{mean_:.{digits}f}" if n == 1 else f"{mean_:.{digits}f} ± {sd:.{digits}f}"


def table(df, by: list[str], value: str, digits: int = 2):
    """``df`` grouped by ``by``: columns mean, sd, n and "mean ± sd" of ``value``."""
    g = df.groupby(by, sort=False)[value]
    out = g.agg(["mean", "std", "count"]).rename(columns={"std": "sd", "count": "n"})
    out["sd"] = out["sd"].fillna(0.0)
    out["mean ± sd"] = [_text(m, sd, n, digits) for m, sd, n in zip(out["mean"], out["sd"], out["n"])]
    return out.round({"mean": digits, "sd": digits})
