"""Where the shipped data lives: ``data/`` beside ``lib/`` (override with PEAKLLM_DATA)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("PEAKLLM_DATA", REPO / "data"))
NOTEBOOKS = REPO / "notebooks"  # the workbook: notebooks/NN_name.ipynb
GPU_RESULTS = DATA / "results" / "gpu"  # python -m peakllm gpucheck: one JSON per CUDA card


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def relative(path) -> str:
    """A path as shown to the reader: relative to the repository when inside it, never absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return p.name
