"""``python -m peakllm report``: one self-contained HTML page of everything the workbook measured.

The page is built from executed notebooks (``runs/default/`` after ``make workbook``, or the
outputs stored in ``notebooks/``) and their records: for every notebook its goal, each "paper
vs ours" table, each plot (PNG, embedded as data URIs: the file opens anywhere, offline), the
table of recorded figures, and the device and package versions the numbers came from.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from ..core.paths import REPO, atomic_write_text, relative

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2.2em;border-bottom:1px solid #ccc}h3{margin-top:1.4em;color:#333}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}.tbl{overflow-x:auto}
code{background:#f1f1f1;padding:0 3px;border-radius:3px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.meta{color:#666;font-size:13px}
nav a{margin-right:1em}.goal{background:#f8f8f2;padding:.5em 1em;border-left:3px solid #aa8}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}
"""


def _title(nb) -> str:
    first = nb.cells[0].source if nb.cells else ""
    m = re.search(r"^#\s+(.+)$", first, re.M)
    return m.group(1).strip() if m else "notebook"


def _goal(nb) -> str:
    m = re.search(r"\*\*Goal\.\*\*(.+?)(\n\n|$)", nb.cells[0].source, re.S) if nb.cells else None
    return " ".join(m.group(1).split()) if m else ""


def _outputs(cell) -> list[tuple[str, str]]:
    """(kind, html) of a code cell's displayable outputs: tables (HTML) and PNG images."""
    out = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if "image/png" in data:
            png = data["image/png"].replace("\n", "")
            out.append(("image", f'<img alt="plot" src="data:image/png;base64,{png}">'))
        elif "text/html" in data and "<table" in data["text/html"]:
            out.append(("table", f'<div class="tbl">{data["text/html"]}</div>'))
    return out


def sections(nb) -> list[dict]:
    """The notebook cut at its ``##`` headings, keeping the sections with tables or plots."""
    found, current = [], {"heading": "", "items": []}
    for cell in nb.cells[1:]:
        if cell.cell_type == "markdown":
            m = re.search(r"^##\s+(.+)$", cell.source, re.M)
            if m:
                if current["items"]:
                    found.append(current)
                current = {"heading": m.group(1).strip(), "items": []}
        elif cell.cell_type == "code" and "peakllm.finish(" not in cell.source:  # the closing cell
            current["items"] += _outputs(cell)
    if current["items"]:
        found.append(current)
    return found


def provenance(records: list[dict]) -> str:
    devices = sorted({r.get("device", "") for r in records if r.get("device")})
    versions = next((r["versions"] for r in records if r.get("versions")), None)
    parts = [f"device: {', '.join(devices) or 'n/a'}"]
    if versions:
        parts.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return " · ".join(parts)


def build(run_dir: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write the report for ``run_dir`` (default ``runs/default`` if it holds executed
    notebooks, else the stored outputs of ``notebooks/``); returns the HTML path."""
    import nbformat

    from ..core.records import to_frame

    default = REPO / "runs" / "default"
    src = Path(run_dir) if run_dir else (default if list(default.glob("[0-9][0-9]_*.ipynb")) else REPO / "notebooks")
    paths = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"run_dir={relative(src)} holds no executed notebooks; run `make workbook` first")
    out = Path(out) if out else src / "report.html"
    body, nav = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        anchor = path.stem
        nav.append(f'<a href="#{anchor}">{html.escape(path.stem[:2])}</a>')
        recs_path = src / f"{path.stem}.results.json"
        records = json.loads(recs_path.read_text()) if recs_path.exists() else []
        body.append(f'<h2 id="{anchor}">{html.escape(_title(nb))}</h2>')
        body.append(f'<p class="meta">{html.escape(path.name)} · {html.escape(provenance(records))}</p>')
        if _goal(nb):
            goal = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(_goal(nb)))
            body.append(f'<p class="goal">{goal}</p>')
        for sec in sections(nb):
            body.append(f"<h3>{html.escape(sec['heading'])}</h3>")
            body += [h for _, h in sec["items"]]
        if records:
            body.append("<h3>Recorded figures</h3>")
            body.append(f'<div class="tbl">{to_frame(records).to_html(index=False, border=0)}</div>')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>peakllm report</title>"
            f"<style>{CSS}</style></head><body><h1>peakllm: paper vs ours</h1>"
            f"<p class='meta'>source: {html.escape(relative(src))} · {len(paths)} notebooks</p>"
            f"<nav>{' '.join(nav)}</nav>{''.join(body)}</body></html>\n")
    atomic_write_text(out, page)
    return out


def verify(path: str | Path) -> dict:
    """What the page references and holds: every image a valid embedded PNG, tables counted."""
    text = Path(path).read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', text)
    for src in images:
        if not src.startswith("data:image/png;base64,"):
            raise ValueError(f"image {src[:60]!r} is not embedded: the report would not be self-contained")
        if not base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("an embedded image is not a PNG")
    anchors = set(re.findall(r'id="([^"]+)"', text))
    links = re.findall(r'href="#([^"]+)"', text)
    missing = [a for a in links if a not in anchors]
    if missing:
        raise ValueError(f"links to missing sections: {missing}")
    return {"images": len(images), "tables": text.count("<table"), "sections": len(anchors),
            "paper_vs_ours": len(re.findall(r"<h3>[^<]*[Pp]aper vs ours", text))}
