"""``python -m peakllm student OUT_DIR``: the notebooks as handed to students.

Two kinds of exercise, both checked in every notebook before anything is written:

* **Questions** (at least two per notebook): a markdown cell tagged ``exercise`` and, after it,
  a cell tagged ``solution``. The student copy drops every solution cell.
* **Coding exercises** (at least one per notebook), in nbgrader's convention so that nbgrader
  or otter-grader take the notebooks unchanged: a code cell holding a *solution region*, the
  lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (each marker alone on its line,
  indented like the code it encloses), and, as the **next code cell**, a *check cell* tagged
  ``check`` whose asserts pass with the solution in place. The student copy replaces each region
  by nbgrader's stub at the region's indentation::

      # YOUR CODE HERE
      raise NotImplementedError()

  and keeps the code before and after the region and the check cell as they are. For
  ``nbgrader generate_assignment`` (which refuses regions in cells without its metadata) give the
  solution cell ``metadata.nbgrader = {"solution": true, "grade": false, ...}`` and the check
  cell ``{"grade": true, "solution": false, "points": ...}``; this module needs only the tag.

Every output and execution count is dropped, so nothing of the answers or of the instructor's
run is left. A malformed region (an unclosed, unopened or nested marker, a marker in a markdown
cell, a misspelt marker, a region without a check cell after it) fails naming the notebook and
the cell. Existing files in ``OUT_DIR`` are never replaced unless ``overwrite=True``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from .run import notebooks

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")  # nbgrader's Python stub
MARKER_LIKE = re.compile(r"^\s*#+\s*(BEGIN|END)\s+SOLUTION\b", re.I)


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


def _where(name: str, i: int, cell) -> str:
    cid = cell.get("id")
    return f"{name}, cell {i}" + (f" (id {cid})" if cid else "")


def solution_regions(source: str, where: str = "cell") -> list[tuple[int, int]]:
    """(BEGIN line, END line) index pairs of ``source``'s solution regions; malformed markers
    raise ``ValueError`` naming ``where`` and the line."""
    regions, begin = [], None
    for j, line in enumerate(source.split("\n")):
        text = line.strip()
        if text not in (BEGIN, END):
            if MARKER_LIKE.match(line):
                raise ValueError(f"{where}, line {j + 1}: {text!r} is not a marker; write {BEGIN!r} / {END!r}")
            continue
        if text == BEGIN:
            if begin is not None:
                raise ValueError(f"{where}, line {j + 1}: {BEGIN!r} inside the region opened on line {begin + 1}")
            begin = j
        else:
            if begin is None:
                raise ValueError(f"{where}, line {j + 1}: {END!r} with no {BEGIN!r} before it")
            if j == begin + 1:
                raise ValueError(f"{where}, line {j + 1}: the region opened on line {begin + 1} is empty")
            regions.append((begin, j))
            begin = None
    if begin is not None:
        raise ValueError(f"{where}, line {begin + 1}: {BEGIN!r} is never closed by {END!r}")
    return regions


def coding_exercises(nb, name: str = "notebook") -> list[tuple[int, int]]:
    """(solution cell index, check cell index) of every coding exercise in ``nb``: a code cell
    with solution regions, then a next code cell tagged ``check``. Raises ``ValueError`` naming
    ``name`` and the cell for any malformed region or a missing or stray check cell."""
    pairs, previous = [], None  # previous: index of the last code cell and whether it held a region
    for i, c in enumerate(nb.cells):
        where = _where(name, i, c)
        if c.cell_type != "code":
            if c.cell_type == "markdown" and any(MARKER_LIKE.match(line) for line in c.source.split("\n")):
                raise ValueError(f"{where}: a solution marker in a markdown cell; regions belong in code cells")
            continue
        regions = solution_regions(c.source, where)
        is_check = "check" in tags(c)
        if previous is not None and previous[1] and not is_check:
            j = previous[0]
            raise ValueError(f"{_where(name, j, nb.cells[j])}: the code cell after this solution region "
                             f"(cell {i}) must be its check cell, tagged 'check'")
        if is_check:
            if regions:
                raise ValueError(f"{where}: a check cell must not hold a solution region")
            if previous is None or not previous[1]:
                raise ValueError(f"{where}: tagged 'check' but the code cell before it holds no solution region")
            pairs.append((previous[0], i))
        previous = (i, bool(regions))
    if previous is not None and previous[1]:
        j = previous[0]
        raise ValueError(f"{_where(name, j, nb.cells[j])}: a solution region with no check cell after it")
    return pairs


def stub(source: str, where: str = "cell") -> str:
    """``source`` with each solution region (markers included) replaced by nbgrader's stub,
    indented like the region's ``### BEGIN SOLUTION`` line."""
    lines = source.split("\n")
    out, last = [], 0
    for begin, end in solution_regions(source, where):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out += lines[last:begin] + [indent + s for s in STUB]
        last = end + 1
    return "\n".join(out + lines[last:])


def student_copy(nb, name: str = "notebook"):
    """A copy without solution cells, solution regions, outputs or execution counts."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "solution" not in tags(c)]
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            c.source = stub(c.source, _where(name, i, c))
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("papermill", None)
    return nb


def check(nb, name: str) -> None:
    """``nb`` holds two question exercises with solutions and one well-formed coding exercise."""
    if len(exercises(nb)) < 2:
        raise ValueError(f"{name} has fewer than two tagged exercise/solution pairs")
    if not coding_exercises(nb, name):
        raise ValueError(f"{name} has no coding exercise: a code cell with a {BEGIN!r} ... {END!r} region, "
                         "then a code cell tagged 'check'")


def write(out_dir: str | Path, overwrite: bool = False, only: list[str] | None = None) -> list[Path]:
    """Student copies of the notebooks in ``out_dir``; every notebook is checked before any is
    written, and existing files are not replaced unless asked."""
    import nbformat

    out = Path(out_dir)
    sources = notebooks(only)
    books = {src: nbformat.read(src, as_version=4) for src in sources}
    for src, nb in books.items():
        check(nb, src.name)
    targets = [out / p.name for p in sources]
    existing = [t.name for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"out_dir={out} already holds {existing}; pass --overwrite or choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    for (src, nb), dst in zip(books.items(), targets):
        nbformat.write(student_copy(nb, src.name), dst)
    return targets


def add(sub) -> None:
    """``python -m peakllm student OUT_DIR [--overwrite]``."""
    st = sub.add_parser("student", help="copies of the notebooks without solutions or outputs")
    st.add_argument("out_dir")
    st.add_argument("--overwrite", action="store_true", help="replace notebooks already in OUT_DIR")
    st.set_defaults(func=main)


def main(a) -> int:
    from ..core.paths import relative

    for path in write(a.out_dir, a.overwrite):
        print(relative(path))
    return 0
