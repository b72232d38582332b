"""The results page of the book (``make book``): every "paper vs ours" table, from the records.

A run's records (``results.json``, see ``peakllm.core.records``) are joined with the published
figures (``data/reference/paper_numbers.json``): a record and a published entry of the same metric
meet when they agree on every setting the entry names (method, pattern, sparsity, bits, scope,
coder, part; the dense baseline meets the dense baseline whatever its precision). For each
notebook and paper this gives one table (a row per setting; the paper's smallest model beside
ours, a column per dataset; our calibration seeds as mean ± sd), one plot, and the device and
package versions of the records behind it. Nothing is read from the notebooks' prose.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.records import gather, to_frame
from ..core.spread import summarize

SETTING = ("method", "pattern", "sparsity", "bits", "scope", "coder", "part")


def load_records(run_dir: str | Path) -> list[dict] | None:
    """The records of a run: ``results.json``, else every ``*.results.json``; None without any."""
    run_dir = Path(run_dir)
    if (run_dir / "results.json").exists():
        return json.loads((run_dir / "results.json").read_text())
    return gather(run_dir) if list(run_dir.glob("*.results.json")) else None


def _norm(v):
    """One spelling per value: 2, "2" and 2.0 are one bit width; "" and None are no value."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v).lower()


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def setting(rec: dict) -> tuple:
    """The settings a record names, as ((field, value), ...) in SETTING order."""
    return tuple((f, _norm(rec.get(f))) for f in SETTING if _norm(rec.get(f)) is not None)


def matches(entry: dict, rec: dict) -> bool:
    """Does the published ``entry`` report the figure that ``rec`` measured?"""
    if entry["metric"] != rec["metric"]:
        return False
    if _norm(entry.get("method")) == "dense" == _norm(rec.get("method")):
        return True
    if _norm(entry.get("part")) is None and _norm(rec.get("part")) not in (None, "total"):
        return False  # a figure without a part is of the whole: it meets our total, not a piece
    return all(_norm(rec.get(f)) == _norm(entry[f]) for f in SETTING if _norm(entry.get(f)) is not None)


def label(key: tuple) -> str:
    """A row's name: ``sparsegpt · unstructured · 50%``, ``gptq · 4-bit``."""
    parts = []
    for f, v in key:
        if f == "sparsity" and isinstance(v, float):
            text = f"{v:.0%}"
        elif f == "bits" and isinstance(v, float):
            text = f"{v:g}-bit"
        else:
            text = f"{v:g}" if isinstance(v, float) else str(v)
        if text not in parts:  # dense · dense -> dense
            parts.append(text)
    return " · ".join(parts)


def _ours_name(rec: dict) -> str:
    params = rec.get("params") or {}
    model = rec.get("model") or params.get("model_name") or "?"
    dataset = rec.get("dataset") or ""
    return f"ours {model} {dataset}".strip()


def _short(model: str) -> str:
    return model.split("/")[-1]


def comparisons(records: list[dict], entries: list[dict] | None = None,
                order: list[str] | None = None) -> list[dict]:
    """One dict per (notebook, paper, metric) where our records meet published figures: ``rows``
    (label, {column: [values]}), ``columns`` (paper's first, then ours), ``records`` behind it."""
    from ..core.reference import model_size, paper_numbers

    entries = [e for e in (paper_numbers() if entries is None else entries) if _number(e.get("value"))]
    notebooks = order or list(dict.fromkeys(r["notebook"] for r in records))
    groups = list(dict.fromkeys((e["paper"], e["metric"]) for e in entries))
    found = []
    for nb in notebooks:
        recs = [r for r in records if r.get("notebook") == nb and _number(r.get("value"))]
        for paper, metric in groups:
            group = [e for e in entries if e["paper"] == paper and e["metric"] == metric]
            hits = [(r, [e for e in group if matches(e, r)]) for r in recs]
            hits = [(r, es) for r, es in hits if es]
            if not any(_norm(r.get("method")) != "dense" for r, _ in hits):
                continue
            ours_models = {(r.get("model") or (r.get("params") or {}).get("model_name")) for r, _ in hits}
            models = {e["model"] for _, es in hits for e in es}
            same = sorted(models & ours_models)
            model = same[0] if same else min(models, key=lambda m: (model_size(m), m))
            rows: dict[tuple, dict[str, list]] = {}
            behind = []
            for r, es in hits:
                mine = [e for e in es if e["model"] == model]
                if not mine:
                    continue
                row = rows.setdefault(setting(r), {})
                for e in mine:  # the most specific entry per dataset (it names the most settings)
                    col = f"paper {_short(model)} {e.get('dataset', '')}".strip()
                    best = max((x for x in mine if x.get("dataset") == e.get("dataset")),
                               key=lambda x: sum(_norm(x.get(f)) is not None for f in SETTING))
                    row[col] = [best["value"]]
                row.setdefault(_ours_name(r), []).append(r["value"])
                behind.append(r)
            if not any(dict(k).get("method") != "dense" for k in rows):
                continue
            cols = list(dict.fromkeys(c for row in rows.values() for c in row))
            cols = [c for c in cols if c.startswith("paper ")] + [c for c in cols if not c.startswith("paper ")]
            wheres = sorted({e["where"] for _, es in hits for e in es if e["model"] == model})
            common = set.intersection(*(set(k) for k in rows)) if len(rows) > 1 else set()
            found.append({"notebook": nb, "paper": paper, "metric": metric, "where": wheres,
                          "unit": group[0].get("unit", ""), "model": model, "columns": cols,
                          "rows": [(label(tuple(x for x in k if x not in common)), v) for k, v in rows.items()],
                          "common": label(tuple(x for x in next(iter(rows)) if x in common)),
                          "records": behind})
    return found


def cell(values: list | None) -> str:
    """One table cell: a published figure, or our mean ± sd over seeds."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    s = summarize(values)
    return f"{s['mean']:.4g} ± {s['sd']:.2g} ({s['n']} seeds)"


def frame(comp: dict):
    """The comparison as a DataFrame of plain numbers (means), rows by setting."""
    import pandas as pd

    return pd.DataFrame([{c: summarize(v[c])["mean"] if v.get(c) else None for c in comp["columns"]}
                         for _, v in comp["rows"]], index=[lab for lab, _ in comp["rows"]])


def plot(comp: dict, path: Path) -> Path:
    """Bars per setting and column; relative to the dense row when there is one (the papers' models
    and ours differ in size, their ratios to dense compare), else the figures, on a log axis when
    they span more than two decades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = frame(comp)
    dense = [lab for lab in df.index if lab.split(" · ")[0] == "dense"]
    relative = bool(dense) and df.loc[dense[0]].notna().all()
    if relative:
        df = (df / df.loc[dense[0]]).drop(index=dense[0])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(df) * len(df.columns) ** 0.5 + 1.4), dpi=100)
    df.iloc[::-1].plot.barh(ax=ax, width=0.8)
    values = df.to_numpy().ravel()
    values = values[values == values]
    if not relative and len(values) and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_xscale("log")
    unit = f" ({comp['unit']})" if comp["unit"] else ""
    ax.set_xlabel(f"{comp['metric']} / dense" if relative else f"{comp['metric']}{unit}")
    if relative:
        ax.axvline(1.0, color="0.4", lw=0.8, ls="--")
    paper = comp["paper"].split(",")
    ax.set_title(f"{comp['metric']}: {(paper[1] if len(paper) > 1 else paper[0]).strip()} vs ours", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def provenance(records: list[dict]) -> str:
    """The device and package versions behind ``records`` (each distinct combination once)."""
    seen = []
    for r in records:
        v = ", ".join(f"{k} {x}" for k, x in (r.get("versions") or {}).items()) or "versions not recorded"
        item = f"device `{r.get('device') or 'not recorded'}`; {v}"
        if item not in seen:
            seen.append(item)
    return "; ".join(seen)


def md_table(columns: list[str], rows: list[list]) -> str:
    """A MyST (pipe) table; ``|`` inside a cell is escaped."""
    esc = [[str(x).replace("|", "\\|").replace("\n", " ") for x in row] for row in rows]
    head = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
    return "\n".join([head, "|" + "---|" * len(columns)] + ["| " + " | ".join(r) + " |" for r in esc])


def page(records: list[dict] | None, notebooks: list[str], image_dir: Path, image_prefix: str,
         source: str) -> tuple[str, int]:
    """The results page (MyST markdown) and how many paper-vs-ours tables it holds; writes one
    PNG per table into ``image_dir`` (linked as ``image_prefix/<name>.png``)."""
    out = ["# Results: paper vs ours", ""]
    if not records:
        out += ["```{important}", f"No run of the workbook was found: {source} holds no records "
                "(`results.json`). The notebook pages show the outputs stored with the notebooks, each "
                "with its own paper-vs-ours section. Run `make workbook`, then `make book`, for this page.",
                "```", ""]
        return "\n".join(out), 0
    out += [f"Every table below joins the records of {source} with the published figures of "
            "`data/reference/paper_numbers.json`: a row for each setting both report, the paper's smallest "
            "model (or ours, when the paper reports it) beside ours. Where we ran several calibration seeds "
            "the cell holds their mean ± sd. The plot shows each setting relative to the dense model of the "
            "same column when the table has one. Under each table: the device and package versions of the "
            "records behind our figures.", ""]
    comps = comparisons(records, order=notebooks)
    n = 0
    for nb in notebooks:
        mine = [c for c in comps if c["notebook"] == nb]
        recs = [r for r in records if r.get("notebook") == nb]
        if not recs:
            continue
        out += [f"## [](notebooks/{nb}.ipynb)", ""]
        for comp in mine:
            n += 1
            name = f"{nb}_{n}"
            plot(comp, image_dir / f"{name}.png")
            where = "; ".join(comp["where"])
            unit = f" ({comp['unit']})" if comp["unit"] else ""
            common = f" Every row: {comp['common']}." if comp["common"] else ""
            out += [f"### {comp['metric']}{unit}: {comp['paper']}", "", f"Published figures: {where}.{common}", "",
                    md_table(["setting", *comp["columns"]],
                             [[lab, *(cell(v.get(c)) for c in comp["columns"])] for lab, v in comp["rows"]]),
                    "", f"![{comp['metric']}, paper vs ours]({image_prefix}/{name}.png)", "",
                    f"Behind our figures: {provenance(comp['records'])}.", ""]
        if not mine:
            out += ["No published figure matches a setting of this notebook's records.", ""]
        params = ", ".join(f"`{k}={v!r}`" for k, v in (recs[0].get("params") or {}).items())
        df = to_frame(recs)
        out += [f":::{{dropdown}} All {len(recs)} records of this notebook", "",
                f"Parameters: {params or 'not recorded'}.", "", f"Recorded on: {provenance(recs)}.", "",
                md_table(list(df.columns), df.astype(str).values.tolist()), "", ":::", ""]
    return "\n".join(out), n
