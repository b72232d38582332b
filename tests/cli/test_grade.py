"""``python -m peakllm grade``: a learner's notebook scored by its check cells."""
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from peakllm.cli import grade, student
from peakllm.cli import run as workbook
from peakllm.workbook import labs


def lab_notebook(answer: str):
    solved = new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n" + answer + "\n    ### END SOLUTION\nyours = double(3.0)")
    check = new_code_cell("from peakllm.workbook import labs\nlabs.close('double', yours, 6.0)\nlabs.passed('double')")
    check.metadata.update(tags=["check"], nbgrader={"grade": True, "points": 3, "grade_id": "lab-double"})
    later = new_code_cell("untagged = 1")
    return new_notebook(cells=[new_markdown_cell("## Lab: doubling"), solved, check, later])


def ran(nb):
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            c.execution_count = i
    return nb


def test_a_check_cell_that_raised_scores_nothing_and_keeps_the_first_line_of_its_error():
    nb = ran(lab_notebook("    return 2 * x"))
    g = grade.score(nb, "demo.ipynb")
    assert (g.score, g.points) == (3, 3) and g.exercises[0].passed and g.exercises[0].title == "Lab: doubling"
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="LabCheckFailed",
                                                  evalue="double: yours differs\nmore", traceback=[])]
    g = grade.score(nb, "demo.ipynb")
    assert (g.score, g.points) == (0, 3) and not g.exercises[0].passed
    assert g.exercises[0].message == "LabCheckFailed: double: yours differs"
    nb.cells[2].outputs, nb.cells[2].execution_count = [], None  # never ran: no points either
    assert grade.score(nb, "demo.ipynb").exercises[0].message == "did not run"
    assert "0 / 3 points" in grade.report([grade.score(nb, "demo.ipynb")])


def test_labs_fail_a_result_three_percent_off_and_say_what_differs():
    import torch

    ref = torch.linspace(-1, 1, 11)
    assert labs.close("W", ref * (1 + 1e-5), ref) < 1e-3
    with pytest.raises(AssertionError, match=r"W: yours differs .* by 0.03 .* allowed 0.001"):
        labs.close("W", ref * 1.03, ref)
    with pytest.raises(AssertionError, match="your shape is"):
        labs.close("W", ref[:3], ref)
    with pytest.raises(AssertionError, match="1 of 11 entries differ"):
        labs.equal("mask", ref.clone().index_fill_(0, torch.tensor([4]), 9.0), ref)
    with pytest.raises(AssertionError, match="1.03x the library's"):
        labs.ratio_at_most("error", 1.03, 1.0, 1.01)
    near = ref.clone()
    near[-1] += 0.2  # one entry of eleven rounded the other way: 90.9% agree
    assert labs.agree("Q", near, ref, at_least=0.9) == pytest.approx(10 / 11)
    with pytest.raises(AssertionError, match=r"Q: 90.91% of your entries equal the library's, fewer than 99.00%"):
        labs.agree("Q", near, ref)
    with pytest.raises(AssertionError, match=r"9.09% of your entries"):  # only the zero stays equal
        labs.agree("Q", ref * 1.03, ref)
    assert labs.agree("mask", ref > 0, ref > 0) == 1.0
    with pytest.raises(AssertionError, match="returned None"):
        labs.close("W", None, ref)


def test_grade_refuses_to_replace_files_and_names_what_is_not_a_notebook(tmp_path):
    p = tmp_path / "demo.ipynb"
    nbformat.write(ran(lab_notebook("    return 2 * x")), p)
    with pytest.raises(FileNotFoundError, match="not .ipynb"):
        grade.grade([tmp_path / "missing.ipynb"], tmp_path / "out", execute_cells=False)
    grade.grade([p], tmp_path / "out", execute_cells=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        grade.grade([p], tmp_path / "out", execute_cells=False)


@pytest.mark.parametrize("path", workbook.notebooks(), ids=lambda p: p.stem)
def test_every_shipped_notebook_scores_full_points_on_its_stored_outputs(path, tmp_path):
    """nbval re-executes the notebooks against these stored outputs, so full points here mean
    full points on a fresh run; every notebook has a lab worth points."""
    (g,) = grade.grade([path], tmp_path, execute_cells=False)
    assert g.exercises and g.score == g.points, grade.report([g])


@pytest.mark.notebooks  # executes 00_orientation twice: the student copy and the solution
def test_grading_executes_a_student_copy_to_zero_points_and_the_solution_to_full_points(tmp_path):
    src = workbook.NOTEBOOKS / "00_orientation.ipynb"
    student.write(tmp_path / "student", only=["00_orientation"])
    (stub,) = grade.grade([tmp_path / "student" / src.name], tmp_path / "graded-student")
    assert stub.points > 0 and stub.score == 0, grade.report([stub])
    assert all("NotImplementedError" in e.message or "Error" in e.message for e in stub.exercises)
    (full,) = grade.grade([src], tmp_path / "graded-solution")
    assert full.score == full.points > 0, grade.report([full])
    record = json.loads((tmp_path / "graded-solution" / "00_orientation.grade.json").read_text())
    assert record["score"] == record["points"] == full.points
