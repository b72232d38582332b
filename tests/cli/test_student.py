"""Student copies: notebooks without solutions or outputs, coding exercises stubbed."""
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from peakllm.cli import run as workbook
from peakllm.cli import student

SOLVED = """import torch

W = torch.ones(2, 2)  # (d_out, d_in)
if True:
    ### BEGIN SOLUTION
    merged = W + 1
    merged = merged * 2
    ### END SOLUTION
print(merged)"""

STUBBED = """import torch

W = torch.ones(2, 2)  # (d_out, d_in)
if True:
    # YOUR CODE HERE
    raise NotImplementedError()
print(merged)"""


def tagged(cell, *names):
    cell.metadata["tags"] = list(names)
    return cell


def synthetic(solution_source=SOLVED, check_tag="check"):
    """A notebook with two question exercises and one coding exercise, outputs stored."""
    solved = new_code_cell(solution_source, execution_count=2)
    solved.outputs = [nbformat.v4.new_output("stream", text="tensor(...)\n")]
    return new_notebook(cells=[
        new_code_cell("x = 1", execution_count=1),
        tagged(new_markdown_cell("**Exercise 1.** Why?"), "exercise"),
        tagged(new_markdown_cell("**Solution 1.** Because."), "solution"),
        tagged(new_markdown_cell("**Exercise 2.** How?"), "exercise"),
        tagged(new_markdown_cell("**Solution 2.** So."), "solution"),
        new_markdown_cell("**Exercise 3.** Merge the weight."),
        solved,
        tagged(new_code_cell("assert merged.sum() == 16", execution_count=3), check_tag),
    ])


def test_a_solution_region_becomes_nbgraders_stub_at_its_indentation():
    assert student.stub(SOLVED) == STUBBED
    two = "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\nc = 3\n  ### BEGIN SOLUTION\n  d = 4\n  ### END SOLUTION"
    assert student.stub(two) == ("a = 1\n# YOUR CODE HERE\nraise NotImplementedError()\nc = 3\n"
                                 "  # YOUR CODE HERE\n  raise NotImplementedError()")
    assert student.stub("no region here\n") == "no region here\n"


def test_the_student_copy_stubs_keeps_the_check_and_drops_solutions_and_outputs():
    nb = synthetic()
    assert student.coding_exercises(nb, "demo.ipynb") == [(6, 7)]
    copy = student.student_copy(nb, "demo.ipynb")
    assert [c.source for c in copy.cells] == [
        "x = 1", "**Exercise 1.** Why?", "**Exercise 2.** How?", "**Exercise 3.** Merge the weight.",
        STUBBED, "assert merged.sum() == 16"]
    assert student.tags(copy.cells[-1]) == ["check"]
    assert all(c.outputs == [] and c.execution_count is None for c in copy.cells if c.cell_type == "code")
    assert nb.cells[6].source == SOLVED and nb.cells[6].outputs  # the original is untouched


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", r"demo.ipynb, cell 6 \(id [\w-]+\), line 1: '### BEGIN SOLUTION' is never closed"),
    ("x = 1\n### END SOLUTION", "cell 6.*line 2: '### END SOLUTION' with no '### BEGIN SOLUTION' before it"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "cell 6.*line 2: .* inside the region"),
    ("### BEGIN SOLUTION\n### END SOLUTION", "cell 6.*the region opened on line 1 is empty"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "cell 6.*line 1: '# BEGIN SOLUTION' is not a marker"),
])
def test_malformed_markers_fail_naming_the_notebook_and_cell(source, message):
    with pytest.raises(ValueError, match=message):
        student.coding_exercises(synthetic(source), "demo.ipynb")


def test_a_region_needs_the_next_code_cell_tagged_check():
    with pytest.raises(ValueError, match="demo.ipynb, cell 6 .*must be its check cell, tagged 'check'"):
        student.coding_exercises(synthetic(check_tag="exercise"), "demo.ipynb")
    nb = synthetic()
    nb.cells = nb.cells[:-1]
    with pytest.raises(ValueError, match="cell 6 .*no check cell after it"):
        student.coding_exercises(nb, "demo.ipynb")
    nb = synthetic()
    nb.cells[6].source = "merged = 16"
    with pytest.raises(ValueError, match="cell 7 .*tagged 'check' but the code cell before it holds no solution"):
        student.coding_exercises(nb, "demo.ipynb")
    nb = synthetic()
    nb.cells[5].source = "### BEGIN SOLUTION\nIt is W + 1.\n### END SOLUTION"
    with pytest.raises(ValueError, match="cell 5 .*marker in a markdown cell"):
        student.coding_exercises(nb, "demo.ipynb")


def test_a_notebook_without_a_coding_exercise_is_refused_by_name():
    nb = synthetic()
    nb.cells = nb.cells[:6]
    with pytest.raises(ValueError, match="demo.ipynb has no coding exercise"):
        student.check(nb, "demo.ipynb")
    student.check(synthetic(), "demo.ipynb")


@pytest.mark.parametrize("path", workbook.notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_two_tagged_exercises_with_solutions(path):
    assert len(student.exercises(nbformat.read(path, as_version=4))) >= 2


@pytest.mark.parametrize("path", workbook.notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_a_coding_exercise_with_a_check(path):
    nb = nbformat.read(path, as_version=4)
    pairs = student.coding_exercises(nb, path.name)
    assert pairs, f"{path.name} has no coding exercise (a solution region, then a code cell tagged 'check')"
    for solved, check in pairs:
        src = nb.cells[check].source
        assert "assert" in src or "labs." in src, f"{path.name}: check cell {check} asserts nothing"
        assert "raise NotImplementedError" in student.stub(nb.cells[solved].source)


@pytest.mark.notebooks  # executes the student copy of 00_orientation up to its first stub
def test_a_student_copy_stops_at_its_first_stub_and_keeps_no_solution(tmp_path):
    """The original notebooks pass every check cell: nbval executes them (``make test``), so
    here only the student copy runs, and it must fail at the first stub, in the stubbed cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    written = student.write(tmp_path)
    assert len(written) == len(workbook.notebooks())
    for src, dst in zip(workbook.notebooks(), written):
        full, copy = nbformat.read(src, as_version=4), nbformat.read(dst, as_version=4)
        solutions = [c.source for c in full.cells if "solution" in student.tags(c)]
        text = json.dumps([c.source for c in copy.cells])
        assert solutions and not any(json.dumps(s)[1:-1] in text for s in solutions)
        assert "### BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
        assert all(not c.get("outputs") for c in copy.cells if c.cell_type == "code")
    with pytest.raises(FileExistsError, match="overwrite"):
        student.write(tmp_path)
    assert student.write(tmp_path, overwrite=True) == written
    nb = nbformat.read(tmp_path / "00_orientation.ipynb", as_version=4)  # the cheapest notebook
    first_stub = next(i for i, c in enumerate(nb.cells) if "raise NotImplementedError()" in c.source)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workbook.NOTEBOOKS)}})
    with pytest.raises(CellExecutionError) as raised:
        client.execute()
    assert raised.value.ename == "NotImplementedError"
    failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failed == [first_stub]
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is not None]
    assert max(ran) == first_stub  # nothing after the stub ran


@pytest.mark.parametrize("path", workbook.notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_a_lab_where_the_learner_writes_the_mechanism(path):
    """A lab: at least 8 lines of code in its solution regions, a check cell that compares with the
    library (``labs.close`` / ``labs.equal`` / ``labs.agree`` / ``labs.ratio_at_most``) and checks an outcome
    (``labs.outcome``), worth points in nbgrader's metadata."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for solved, check in student.coding_exercises(nb, path.name):
        meta = nb.cells[check].metadata.get("nbgrader", {})
        if not str(meta.get("grade_id", "")).startswith("lab-"):
            continue
        lines = nb.cells[solved].source.split("\n")
        code = [ln for b, e in student.solution_regions(nb.cells[solved].source) for ln in lines[b + 1:e]
                if ln.strip() and not ln.strip().startswith("#")]
        src = nb.cells[check].source
        assert len(code) >= 8, f"{path.name}: lab {meta['grade_id']} has {len(code)} lines of solution code"
        assert any(f"labs.{f}(" in src for f in ("close", "equal", "agree", "ratio_at_most")), f"{meta['grade_id']}: no comparison"
        assert "labs.outcome(" in src and meta.get("points", 0) > 0, f"{meta['grade_id']}: no outcome or no points"
        found.append(meta["grade_id"])
    assert found, f"{path.name} has no lab (a coding exercise whose check cell's grade_id starts with 'lab-')"
