"""Notebook conventions (every notebook, now and later) and the papermill path of make workbook."""
import ast
import json
import re

import nbformat
import papermill
import pytest

from peakllm.cli import run as workbook
from peakllm.cli import student

NOTEBOOKS = workbook.notebooks()
MACHINE_PATH = re.compile(r"(/root/|/tmp/|/home/\w+/|/work/|/Users/)")


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_first_and_plain(path):
    nb = nbformat.read(path, as_version=4)
    first = code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", [])
    names = []
    for line in first.source.splitlines():
        m = re.match(r"^(\w+): (str|int|float|bool|list) = (.+?)  # (.+)$", line)
        assert m, f"{path.name}: parameter line without a literal, type or help: {line!r}"
        ast.literal_eval(m.group(3))  # plain literals only
        names.append(m.group(1))
    assert {"model_name", "device", "seed", "results_path"} <= set(names)
    inferred = papermill.inspect_notebook(str(path))
    assert list(inferred) == names
    assert all(p["help"] for p in inferred.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_are_complete_and_clean(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in code_cells(nb)]
    assert None not in counts and counts == sorted(counts), "run the notebook top to bottom"
    assert code_cells(nb)[-1].source == "peakllm.finish(rec, results_path)", "the last cell records the results"
    for c in code_cells(nb):
        for o in c.outputs:
            assert o.output_type != "error"
            assert not MACHINE_PATH.search(json.dumps(o)), f"machine path in {path.name}: {c.source[:60]}"
    header = nb.cells[0].source
    assert "**Goal.**" in header and "**Prerequisites.**" in header and "Runtime on the default" in header


TQDM_BAR = re.compile(r"\d+%\|")  # "100%|####| 24/24 [00:01<00:00, ...]"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_hold_no_clutter(path):
    """A progress bar leaves one line; no library notice a learner cannot act on; no output of
    more than 40 lines (the records cell prints a count per metric, not the table)."""
    nb = nbformat.read(path, as_version=4)
    for c in code_cells(nb):
        for o in c.outputs:
            data = o.get("data", {})
            text = o.get("text", "") if o.output_type == "stream" else str(data.get("text/plain", ""))
            bars = [ln for ln in text.split("\n") if TQDM_BAR.search(ln)]
            assert len(bars) <= 1, f"{path.name}: {len(bars)} lines of progress bars in {c.source[:60]!r}"
            assert "gemm_4bit" not in text, f"{path.name}: bitsandbytes' kernels notice in {c.source[:60]!r}"
            assert "Failed to load CPU" not in text, f"{path.name}: bitsandbytes' kernels notice in {c.source[:60]!r}"
            # a table counts its rows (its text fallback wraps wide columns), anything else its lines
            lines = str(data["text/html"]).count("<tr") if "text/html" in data else text.count("\n")
            assert lines <= 40, f"{path.name}: {lines} lines or rows of output from {c.source[:60]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_scaffold_call_sets_up_and_no_helper_is_defined_in_a_notebook(path):
    nb = nbformat.read(path, as_version=4)
    setup = code_cells(nb)[1].source
    lab_cells = {i for pair in student.coding_exercises(nb, path.name) for i in pair}  # the learner writes code there
    assert f'rec, dev = peakllm.setup("{path.stem}", globals())' in setup, "the second code cell sets up"
    assert "Recorder(" not in setup, "the scaffold builds the recorder from the parameters cell"
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code" or i in lab_cells:
            continue
        tree = ast.parse(c.source)
        defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assigned = [t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Lambda)
                    for t in n.targets if isinstance(t, ast.Name)]
        assert not defined + assigned, f"{path.name} defines {defined + assigned}: helpers belong in lib/peakllm"


@pytest.mark.notebooks  # executes 00_orientation with papermill
def test_workbook_runs_a_notebook_with_parameters_and_gathers_records(tmp_path):
    records = workbook.run(tmp_path, only=["00_orientation"], parameters={"model_name": "tiny-moe"})
    assert (tmp_path / "00_orientation.ipynb").exists()
    assert json.loads((tmp_path / "results.json").read_text()) == records
    by = {(r["metric"], r.get("part"), r.get("method")): r for r in records}
    assert by[("perplexity", None, "dense")]["dataset"] == "shakespeare"
    assert by[("perplexity", None, "dense")]["params"]["model_name"] == "tiny-moe"
    for part in ("weights", "gradients", "optimizer", "activations", "total"):
        assert by[("bytes", part, None)]["value"] > 0
    assert by[("bytes", "optimizer", None)]["value"] >= 2 * by[("bytes", "weights", None)]["value"] * 0.9
    # The sentences that quote figures are rendered from this run, not typed: on tiny-moe they
    # differ from the stored tiny-opt run's, and they quote this run's perplexity.
    stored, rerun = rendered(workbook.NOTEBOOKS / "00_orientation.ipynb"), rendered(tmp_path / "00_orientation.ipynb")
    assert stored and len(rerun) == len(stored)
    assert [i for i, (a, b) in enumerate(zip(stored, rerun)) if a != b], "no rendered sentence changed"
    assert any(f"{by[('perplexity', None, 'dense')]['value']:.2f}" in text for text in rerun)


def rendered(path) -> list[str]:
    """The Markdown that a notebook's code cells displayed (``peakllm.say``)."""
    nb = nbformat.read(path, as_version=4)
    return ["".join(o["data"]["text/markdown"]) for c in code_cells(nb) for o in c.outputs
            if "peakllm.say(" in c.source and "text/markdown" in o.get("data", {})]
