"""``make book`` / ``python -m peakllm report``: the executed workbook as a static Jupyter Book site.

The site is built from executed notebooks, never by executing them: ``runs/default/`` after
``make workbook``, else the outputs stored in ``notebooks/`` (a fresh clone has no run). Its
sources are generated under ``runs/book/src/`` (``_config.yml``, ``_toc.yml``, the landing page
from ``docs/book/landing.md``, copies of the notebooks, the results page of
``peakllm.cli.report`` with its plots, the course plan ``docs/teaching.md``) and Jupyter Book
1.x (Sphinx, pure Python) writes the HTML to ``runs/book/_build/html/``. The table of contents
follows ``peakllm.cli.run.notebooks()``, grouped by the first digit of each notebook's number
(0: foundations, 1: case study 1, 2: case study 2). Nothing is fetched at build time, and the
pages need nothing from the network to render: MathJax is served from the site itself.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..core.paths import REPO, atomic_write_text, relative
from . import report
from . import run as workbook

BINDER = "https://mybinder.org/v2/gh/peakllm/peakllm/HEAD"  # the README's badge
REPOSITORY = "https://github.com/peakllm/peakllm"
LANDING = REPO / "docs" / "book" / "landing.md"
TEACHING = REPO / "docs" / "teaching.md"
FAVICON = REPO / "docs" / "book" / "favicon.svg"
PARTS = {"0": "Foundations: how we measure", "1": "Case study 1: optimizing model training",
         "2": "Case study 2: enhancing inference efficiency"}
MARKER = ".peakllm-book"  # marks a folder this module made (and may clear)


def _executed(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def sources(run_dir: str | Path | None = None) -> tuple[Path, dict[str, Path]]:
    """The folder the site is built from and, for each notebook of the workbook, the executed copy
    to show: the run's, or the stored one where the run lacks that notebook."""
    default = REPO / "runs" / "default"
    folder = (Path(run_dir) if run_dir else (default if _executed(default) else workbook.NOTEBOOKS)).resolve()
    if not _executed(folder):
        raise FileNotFoundError(f"run_dir={relative(folder)} holds no executed notebooks (NN_name.ipynb): "
                                "run `make workbook`, or name notebooks/ for the stored outputs")
    return folder, {nb.stem: (folder / nb.name if (folder / nb.name).exists() else nb) for nb in workbook.notebooks()}


def copy_notebook(src: Path, dst: Path) -> None:
    """The notebook as the site shows it: worked solutions folded in a dropdown, and no absolute
    path of this machine (papermill's injected ``results_path``)."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and "solution" in cell.get("metadata", {}).get("tags", []):
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = f"::::{{dropdown}} Solution\n{text}\n::::"
    text = json.dumps(nb, indent=1, ensure_ascii=False).replace(f"{REPO}{os.sep}", "")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text + "\n")


def toc(stems: list[str]) -> dict:
    """The book's ``_toc.yml``: the landing page, one part per group of notebooks, then the
    results and the course plan."""
    parts = []
    for digit, caption in PARTS.items():
        chapters = [{"file": f"notebooks/{s}"} for s in stems if s[0] == digit]
        if chapters:
            parts.append({"caption": caption, "chapters": chapters})
    others = [{"file": f"notebooks/{s}"} for s in stems if s[0] not in PARTS]
    if others:
        parts.append({"caption": "More notebooks", "chapters": others})
    parts.append({"caption": "Results and teaching", "chapters": [{"file": "results"}, {"file": "teaching"}]})
    return {"format": "jb-book", "root": "index", "parts": parts}


# Jupyter Book's default extensions less sphinx_thebe (it declares a const twice per page, a
# JavaScript error, for live code we do not offer) and intersphinx (nothing to fetch).
EXTENSIONS = ["sphinx_togglebutton", "sphinx_copybutton", "myst_nb", "jupyter_book", "sphinx_comments",
              "sphinx_external_toc", "sphinx_design", "sphinx_book_theme"]


def config(mathjax: bool) -> dict:
    """The book's ``_config.yml``: no execution, Binder launch buttons, nothing fetched."""
    sphinx = {"extensions": EXTENSIONS, "nb_merge_streams": True,  # a progress bar's updates as one block
              "html_show_sourcelink": False, "html_context": {"default_mode": "light"},
              "suppress_warnings": ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]}
    if mathjax:  # _mathjax/ lands in the site's _static/ (not src/_static: Jupyter Book would load it twice)
        sphinx |= {"mathjax_path": "mathjax/tex-chtml.js", "html_static_path": ["_mathjax"]}
    return {
        "title": "peakllm workbook", "author": "the peakllm project", "copyright": "2024-2026",
        "only_build_toc_files": True, "exclude_patterns": ["_build"],
        "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["colon_fence", "dollarmath"]},
        "repository": {"url": REPOSITORY, "branch": "HEAD", "path_to_book": ""},
        "launch_buttons": {"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"},
        "html": {"favicon": "favicon.svg", "use_repository_button": True, "home_page_in_navbar": True,
                 "use_multitoc_numbering": False},
        "latex": {"use_jupyterbook_latex": False},
        "sphinx": {"recursive_update": True, "config": sphinx},
    }


def mathjax_files() -> tuple[Path, list[Path]] | None:
    """MathJax 3's TeX-to-HTML bundle and its fonts, from the ``sphinx-mathjax-offline`` wheel
    (pinned in requirements/): the one formula of notebook 20 renders without the network."""
    import importlib.metadata as md

    try:
        files = md.distribution("sphinx-mathjax-offline").files or []
    except md.PackageNotFoundError:
        return None
    found = {str(f): Path(f.locate()) for f in files if "/static/mathjax/" in str(f)}
    entry = next((p for k, p in found.items() if k.endswith("/static/mathjax/tex-chtml.js")), None)
    fonts = [p for k, p in found.items() if "/output/chtml/fonts/woff-v2/" in k]
    return (entry, fonts) if entry and entry.exists() else None


def _describe(folder: Path, chosen: dict[str, Path], records) -> str:
    stored = [s for s, p in chosen.items() if p.parent == workbook.NOTEBOOKS]
    if folder == workbook.NOTEBOOKS:
        what = ("Built from the outputs stored with the notebooks in `notebooks/` (no run of the workbook "
                "was found in `runs/default/`): `make workbook`, then `make book`, shows your own run.")
    else:
        what = f"Built from the executed notebooks of `{relative(folder)}/` and their records."
        if stored:
            what += f" Not in that run, shown with their stored outputs: {', '.join(f'`{s}`' for s in stored)}."
    found = "records found" if records else "no records"
    return (f"{what} No notebook was executed to build it ({found}; see the results page). Generated by "
            "`python -m peakllm report` (`make book`) with Jupyter Book 1.x.")


def write_sources(run_dir: str | Path | None, out: Path) -> dict:
    """Generate the book's sources under ``out/src`` (cleared first); returns what went in."""
    folder, chosen = sources(run_dir)
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    for stem, path in chosen.items():
        copy_notebook(path, src / "notebooks" / f"{stem}.ipynb")
    records = report.load_records(folder)
    if records is None and folder == workbook.NOTEBOOKS:  # the stored outputs' own run
        records = report.load_records(workbook.REPO / "data" / "results" / "default")
    stems = list(chosen)
    results, n_tables = report.page(records, stems, src / "results", "results",
                                    f"`{relative(folder)}/`")
    atomic_write_text(src / "results.md", results + "\n")
    shutil.copy(TEACHING, src / "teaching.md")
    landing = LANDING.read_text().replace("@@BINDER@@", f"{BINDER}?urlpath=lab/tree/notebooks/{stems[0]}.ipynb")
    atomic_write_text(src / "index.md", landing.replace("@@SOURCE@@", _describe(folder, chosen, records)))
    shutil.copy(FAVICON, src / "favicon.svg")
    mj = mathjax_files()
    if mj:
        entry, fonts = mj
        dest = src / "_mathjax" / "mathjax"
        (dest / "output" / "chtml" / "fonts" / "woff-v2").mkdir(parents=True)
        shutil.copy(entry, dest / entry.name)
        for f in fonts:
            shutil.copy(f, dest / "output" / "chtml" / "fonts" / "woff-v2" / f.name)
    import yaml

    cfg = config(mathjax=bool(mj))
    atomic_write_text(src / "_config.yml", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    atomic_write_text(src / "_toc.yml", yaml.safe_dump(toc(stems), sort_keys=False, allow_unicode=True))
    return {"source": folder, "notebooks": chosen, "records": len(records or []), "tables": n_tables,
            "mathjax": bool(mj)}


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(f"out={out} exists and was not made by `python -m peakllm report`; "
                         "name a new or empty folder (default runs/book)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m peakllm report; cleared and rebuilt by it\n")


def build(run_dir: str | Path | None = None, out: str | Path | None = None) -> dict:
    """Write the sources and build the site; returns ``{"html": index.html, "seconds", ...}``.
    Raises with Sphinx's own output when the build fails."""
    out = Path(out) if out else REPO / "runs" / "book"
    _prepare(out)
    t0 = time.perf_counter()
    info = write_sources(run_dir, out)
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(out / "src"),
           "--path-output", str(out), "--builder", "html", "--all", "-q"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode or not (html / "index.html").exists():
        raise RuntimeError(f"jupyter-book build failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return {**info, "html": html / "index.html", "seconds": time.perf_counter() - t0,
            "warnings": [w for w in done.stderr.splitlines() if "WARNING" in w]}


HREF = re.compile(r"""<(a|link|img|script|source)\b[^>]*?\b(href|src)=["']([^"']+)["']""", re.I)


def verify(html_dir: str | Path) -> dict:
    """Check the built site without a browser: every local image, script, style sheet and link
    resolves to a file of the site, and no page loads a script, style sheet, font or image from
    another host. Returns counts; raises ValueError naming what is broken."""
    from urllib.parse import unquote, urlsplit

    html_dir = Path(html_dir)
    pages = sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    broken, remote, n_img = [], [], 0
    for page in pages:
        text = page.read_text(errors="replace")
        for tag, _, url in HREF.findall(text):
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                if tag.lower() != "a":
                    remote.append(f"{page.relative_to(html_dir)}: <{tag} {url}>")
                continue
            if parts.scheme or not parts.path:  # mailto:, javascript:, #anchor
                continue
            n_img += tag.lower() == "img"
            if not (page.parent / unquote(parts.path)).resolve().exists():
                broken.append(f"{page.relative_to(html_dir)}: {url}")
    if broken or remote:
        raise ValueError(f"broken local references: {broken[:20]}; assets from another host: {remote[:20]}")
    return {"pages": len(pages), "images": n_img}


def add(sub) -> None:
    """``python -m peakllm report`` (alias ``book``) ``[--run-dir DIR] [--out DIR]``."""
    r = sub.add_parser("report", aliases=["book"], help="the executed workbook as a static Jupyter Book site "
                                                        "(notebooks, paper-vs-ours results, course plan), built offline")
    r.add_argument("--run-dir", default=None, help="executed notebooks (default runs/default, else notebooks/)")
    r.add_argument("--out", default=None, help="folder of the book's sources and build (default runs/book)")
    r.set_defaults(func=main)


def main(a) -> int:
    built = build(a.run_dir, a.out)
    found = verify(built["html"].parent)
    where = relative(built["html"]) if built["html"].resolve().is_relative_to(REPO) else built["html"]
    print(f"{where}: {found['pages']} pages, {found['images']} images, "
          f"{built['tables']} paper-vs-ours tables from {built['records']} records of "
          f"{relative(built['source'])}/, built in {built['seconds']:.0f} s")
    return 0
