"""``python -m peakllm pair``: a jupytext percent script for every notebook, in ``paired/``.

``paired/NN_name.py`` holds the cells of ``notebooks/NN_name.ipynb`` -- code, markdown and
their tags (``parameters``, ``exercise``, ``solution``) -- without outputs or any other metadata,
so that a review reads a notebook change as a plain Python diff. The ``.ipynb`` with its stored
outputs stays the source of truth (nbval compares against it); the ``.py`` is derived from it and
regenerated with ``make pair``. The script has no header (no kernelspec, no jupytext version),
so regenerating it changes nothing unless a cell did.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Cells keep only their tags; the notebook's metadata (kernelspec, language_info, papermill) is dropped.
FORMAT = {"extension": ".py", "format_name": "percent",
          "notebook_metadata_filter": "-all", "cell_metadata_filter": "tags,-all"}


def _notebooks(notebooks: Iterable[str | Path] | None) -> list[Path]:
    if notebooks is None:
        from .run import notebooks as shipped

        return shipped()
    return [Path(p) for p in notebooks]


PAIRED = "paired"  # the scripts' folder, beside the notebooks' folder: a learner's notebooks/ lists notebooks only


def script_path(ipynb_path: str | Path) -> Path:
    """Where the paired script of a notebook lives: ``<folder>/NN.ipynb`` -> ``<folder>/../paired/NN.py``."""
    p = Path(ipynb_path)
    return p.parent.parent / PAIRED / p.with_suffix(".py").name


def script_for(ipynb_path: str | Path) -> str:
    """The jupytext percent text of a notebook: every cell and its tags, no outputs, no header."""
    import jupytext
    import nbformat

    nb = nbformat.read(Path(ipynb_path), as_version=4)
    text = jupytext.writes(nb, fmt=dict(FORMAT))
    return text if text.endswith("\n") else text + "\n"


def write_pairs(notebooks: Iterable[str | Path] | None = None) -> list[Path]:
    """Write the ``.py`` of every notebook (default: the shipped ``notebooks/NN_*.ipynb``);
    a script already up to date is left untouched. Returns every script's path."""
    written = []
    for nb in _notebooks(notebooks):
        path, text = script_path(nb), script_for(nb)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def out_of_sync(notebooks: Iterable[str | Path] | None = None) -> list[str]:
    """Names (``NN_name.ipynb``) of the notebooks whose ``.py`` is missing or differs from
    ``script_for`` the notebook: run ``make pair`` to bring them in sync."""
    stale = []
    for nb in _notebooks(notebooks):
        path = script_path(nb)
        if not path.exists() or path.read_text(encoding="utf-8") != script_for(nb):
            stale.append(Path(nb).name)
    return stale
