"""``python -m peakllm student OUT_DIR``: the notebooks as handed to students.

Every notebook holds at least two exercises: a cell tagged ``exercise`` (the question) and,
after it, a cell tagged ``solution``. The student copy drops every solution cell and every
output (and execution count), so nothing of the answers or of the instructor's run is left.
Existing files in ``OUT_DIR`` are never replaced unless ``overwrite=True``.
"""
from __future__ import annotations

from pathlib import Path

from .run import notebooks

TAGS = ("exercise", "solution")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercises(nb) -> list[tuple[int, int]]:
    """(exercise cell index, solution cell index) pairs; a solution must follow its exercise."""
    pairs, open_ex = [], None
    for i, c in enumerate(nb.cells):
        if "exercise" in tags(c):
            open_ex = i
        elif "solution" in tags(c):
            if open_ex is None:
                raise ValueError(f"cell {i} is a solution with no exercise before it")
            pairs.append((open_ex, i))
            open_ex = None
    return pairs


def student_copy(nb):
    """A copy without solution cells, outputs or execution counts."""
    import copy

    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "solution" not in tags(c)]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("papermill", None)
    return nb


def write(out_dir: str | Path, overwrite: bool = False, only: list[str] | None = None) -> list[Path]:
    """Student copies of the notebooks in ``out_dir``; refuses to replace files unless asked."""
    import nbformat

    out = Path(out_dir)
    sources = notebooks(only)
    targets = [out / p.name for p in sources]
    existing = [t.name for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"out_dir={out} already holds {existing}; pass --overwrite or choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(sources, targets):
        nb = nbformat.read(src, as_version=4)
        if len(exercises(nb)) < 2:
            raise ValueError(f"{src.name} has fewer than two tagged exercise/solution pairs")
        nbformat.write(student_copy(nb), dst)
    return targets
