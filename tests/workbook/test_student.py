"""Student copies: notebooks without solutions or outputs."""
import json

import nbformat
import pytest

from peakllm.workbook import run as workbook
from peakllm.workbook import student


@pytest.mark.parametrize("path", workbook.notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_two_tagged_exercises_with_solutions(path):
    assert len(student.exercises(nbformat.read(path, as_version=4))) >= 2


@pytest.mark.notebooks  # executes 00_orientation up to its first exercise
def test_student_copies_hold_no_solutions_and_run_to_the_first_exercise(tmp_path):
    from nbclient import NotebookClient

    written = student.write(tmp_path)
    assert len(written) == len(workbook.notebooks())
    for src, dst in zip(workbook.notebooks(), written):
        full, copy = nbformat.read(src, as_version=4), nbformat.read(dst, as_version=4)
        solutions = [c.source for c in full.cells if "solution" in student.tags(c)]
        text = json.dumps([c.source for c in copy.cells])
        assert solutions and not any(json.dumps(s)[1:-1] in text for s in solutions)
        assert all(not c.get("outputs") for c in copy.cells if c.cell_type == "code")
    with pytest.raises(FileExistsError, match="overwrite"):
        student.write(tmp_path)
    nb = nbformat.read(written[0], as_version=4)  # 00_orientation, up to its first exercise
    first = next(i for i, c in enumerate(nb.cells) if "exercise" in student.tags(c))
    nb.cells = nb.cells[:first]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workbook.NOTEBOOKS)}}).execute()
    assert all(o.output_type != "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
