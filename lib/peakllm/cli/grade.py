"""``python -m peakllm grade NOTEBOOK.ipynb [...]``: score a learner's notebooks by their check cells.

Each coding exercise (a code cell tagged ``check`` and the solution cell before it, also in a
student copy whose solution regions are stubs) is worth the ``points`` of its check cell's nbgrader metadata (1 without). The notebook
is executed with papermill on the workbook's kernel (``python3``), in ``notebooks/`` as the
workbook runs it, letting every cell run even after one fails; a check cell that ran without an
error scores its points, one that raised scores none and its first line of error is kept (the
lab helpers of ``labs`` put what differs there). ``execute=False`` grades the outputs already
stored in the notebook instead (an instructor's executed copy).

Per notebook a ``Grade`` lists the exercises (id, title, points, passed, message); ``report``
prints them with a total, ``to_json`` is the same for a course's records. The executed copy and
the JSON go to ``out`` (default ``runs/grade``); a file there is never replaced unless
``overwrite``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import student


@dataclass
class Exercise:
    id: str  # nbgrader grade_id of the check cell, else "cell N"
    title: str  # the nearest markdown heading or bold lead before the solution cell
    points: float
    score: float
    passed: bool
    message: str  # first line of the check's error ("" when it passed)


@dataclass
class Grade:
    notebook: str
    exercises: list[Exercise] = field(default_factory=list)
    executed: bool = True

    score = property(lambda self: sum(e.score for e in self.exercises))
    points = property(lambda self: sum(e.points for e in self.exercises))

    def to_dict(self) -> dict:
        return {"notebook": self.notebook, "executed": self.executed, "score": self.score,
                "points": self.points, "exercises": [asdict(e) for e in self.exercises]}


def _title(nb, i: int) -> str:
    for c in reversed(nb.cells[:i]):
        if c.cell_type != "markdown":
            continue
        for line in c.source.split("\n"):
            line = line.strip()
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.startswith("**") and "**" in line[2:]:
                return line[2:line.index("**", 2)].strip()
    return ""


def _first_line(cell) -> str | None:
    """None when the cell ran cleanly; else the first line of its error; "did not run" if it never ran."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        e = errors[0]
        text = (e.get("evalue") or "").strip().split("\n")[0]
        return f"{e.get('ename', 'Error')}: {text}" if text else e.get("ename", "Error")
    return "did not run" if cell.get("execution_count") is None else None


def exercises(nb) -> list[tuple[int, int]]:
    """(solution cell, check cell) of every exercise: each code cell tagged ``check`` and the code
    cell before it -- in the instructor's notebook and in a student copy, whose solution regions
    are stubs by then."""
    pairs, previous = [], None
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        if "check" in student.tags(c) and previous is not None:
            pairs.append((previous, i))
        previous = i
    return pairs


def score(nb, name: str = "notebook", executed: bool = True) -> Grade:
    """The grade of an executed notebook ``nb`` (its check cells' outputs)."""
    g = Grade(name, executed=executed)
    for solved, check in exercises(nb):
        meta = nb.cells[check].metadata.get("nbgrader", {})
        points = float(meta.get("points", 1))
        failure = _first_line(nb.cells[check])
        g.exercises.append(Exercise(meta.get("grade_id") or f"cell {check}", _title(nb, solved), points,
                                    0.0 if failure else points, failure is None, failure or ""))
    return g


def execute(path: Path, out: Path, timeout: int = 1200):
    """Run ``path`` with papermill into ``out``; every cell runs even when one fails."""
    import nbformat
    import papermill as pm

    from .run import NOTEBOOKS

    try:
        pm.execute_notebook(str(path), str(out), cwd=str(NOTEBOOKS), kernel_name="python3",
                            progress_bar=False, allow_errors=True, execution_timeout=timeout)
    except pm.PapermillExecutionError:
        pass  # a failed cell is what grading reads; the executed copy holds it
    return nbformat.read(out, as_version=4)


def grade(paths, out: str | Path | None = None, execute_cells: bool = True, overwrite: bool = False,
          timeout: int = 1200) -> list[Grade]:
    """Grade each notebook; executed copies and ``<stem>.grade.json`` land in ``out``."""
    import nbformat

    from ..core.paths import REPO

    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        raise FileNotFoundError(f"notebooks={missing}: not .ipynb files")
    out = Path(out) if out else REPO / "runs" / "grade"
    targets = [t for p in paths for t in (out / p.name, out / f"{p.stem}.grade.json")]
    existing = [t.name for t in targets if t.exists() and (execute_cells or t.suffix == ".json")]
    if existing and not overwrite:
        raise FileExistsError(f"out={out} already holds {existing}; pass --overwrite or choose another folder")
    for p in paths:  # malformed solution regions fail before anything runs (a student copy has none left)
        nb = nbformat.read(p, as_version=4)
        if any(student.BEGIN in c.source for c in nb.cells if c.cell_type == "code"):
            student.coding_exercises(nb, p.name)
        if not exercises(nb):
            raise ValueError(f"{p.name} has no exercise to grade (no code cell tagged 'check')")
    out.mkdir(parents=True, exist_ok=True)
    grades = []
    for p in paths:
        nb = execute(p.resolve(), (out / p.name).resolve(), timeout) if execute_cells else nbformat.read(p, as_version=4)
        g = score(nb, p.name, execute_cells)
        (out / f"{p.stem}.grade.json").write_text(json.dumps(g.to_dict(), indent=1) + "\n")
        grades.append(g)
    return grades


def report(grades: list[Grade]) -> str:
    lines = []
    for g in grades:
        lines.append(f"{g.notebook}: {g.score:g} / {g.points:g} points"
                     + ("" if g.executed else " (stored outputs, not executed)"))
        for e in g.exercises:
            verdict = "passed" if e.passed else "failed"
            lines.append(f"  {e.id:<28} {e.score:g}/{e.points:g}  {verdict}"
                         + (f"  {e.title}" if e.title else "") + (f"\n      {e.message}" if e.message else ""))
    total, points = sum(g.score for g in grades), sum(g.points for g in grades)
    lines.append(f"total: {total:g} / {points:g} points")
    return "\n".join(lines)


def add(sub) -> None:
    """``python -m peakllm grade NOTEBOOK ... [--out DIR] [--stored] [--overwrite] [--timeout S]``."""
    gr = sub.add_parser("grade", help="execute learners' notebooks and score their labs by the check cells")
    gr.add_argument("notebooks", nargs="+", help="the learner's .ipynb files")
    gr.add_argument("--out", default=None, help="folder of the executed copies and <stem>.grade.json (default runs/grade)")
    gr.add_argument("--stored", action="store_true", help="grade the outputs stored in the notebooks, execute nothing")
    gr.add_argument("--overwrite", action="store_true", help="replace executed copies and grades already in OUT")
    gr.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run (default 1200)")
    gr.set_defaults(func=main)


def main(a) -> int:
    print(report(grade(a.notebooks, a.out, not a.stored, a.overwrite, a.timeout)))
    return 0
