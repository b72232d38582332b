"""The jupytext pairs paired/NN_*.py: in sync with their notebooks, faithful, and stable."""
import shutil

import jupytext
import nbformat

from peakllm.workbook import pairing
from peakllm.workbook import run as workbook

NOTEBOOKS = workbook.notebooks()


def test_every_notebook_has_its_script_in_sync():
    assert NOTEBOOKS and all(p.suffix == ".ipynb" for p in NOTEBOOKS)
    stale = pairing.out_of_sync()
    assert not stale, f"paired/*.py out of sync with {stale}: run `make pair`"


def test_script_keeps_cells_and_tags_and_drops_outputs_and_header():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        text = pairing.script_for(path)
        assert text.startswith("# %%"), f"{path.name}: the script has a header"
        assert "jupytext" not in text.split("# %%")[0] and "kernelspec" not in text
        back = jupytext.reads(text, fmt="py:percent")
        assert [(c.cell_type, c.source) for c in back.cells] == [(c.cell_type, c.source) for c in nb.cells]
        assert [c.metadata.get("tags", []) for c in back.cells] == [c.metadata.get("tags", []) for c in nb.cells]
        assert all(not c.get("outputs") for c in back.cells)


def test_script_keeps_the_parameters_tag():
    for path in NOTEBOOKS:
        assert '# %% tags=["parameters"]\n' in pairing.script_for(path), path.name


def test_changed_cell_source_is_out_of_sync(tmp_path):
    src = NOTEBOOKS[0]
    nb_path = tmp_path / "notebooks" / src.name
    nb_path.parent.mkdir()
    shutil.copy(src, nb_path)
    assert pairing.out_of_sync([nb_path]) == [src.name]  # no .py yet
    (script,) = pairing.write_pairs([nb_path])
    assert script == tmp_path / "paired" / nb_path.with_suffix(".py").name and pairing.out_of_sync([nb_path]) == []
    before = script.stat().st_mtime_ns
    pairing.write_pairs([nb_path])
    assert script.stat().st_mtime_ns == before  # an up-to-date script is not rewritten

    nb = nbformat.read(nb_path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    code.source += "\nprint('changed')"
    nbformat.write(nb, nb_path)
    assert pairing.out_of_sync([nb_path]) == [src.name]
    pairing.write_pairs([nb_path])
    assert pairing.out_of_sync([nb_path]) == [] and "print('changed')" in script.read_text()


def test_outputs_and_execution_counts_do_not_unsync(tmp_path):
    src = NOTEBOOKS[0]
    nb_path = tmp_path / "notebooks" / src.name
    nb_path.parent.mkdir()
    shutil.copy(src, nb_path)
    pairing.write_pairs([nb_path])
    nb = nbformat.read(nb_path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
            c.metadata["execution"] = {"iopub.status.busy": "2020-01-01T00:00:00"}  # as papermill writes
    nb.metadata["papermill"] = {"duration": 1.0}
    nbformat.write(nb, nb_path)
    assert pairing.out_of_sync([nb_path]) == []


def test_cli_pair_check(tmp_path, monkeypatch, capsys):
    from peakllm.workbook import cli

    nb_path = tmp_path / "notebooks" / NOTEBOOKS[0].name
    nb_path.parent.mkdir()
    shutil.copy(NOTEBOOKS[0], nb_path)
    monkeypatch.setattr(workbook, "notebooks", lambda only=None: [nb_path])
    assert cli.main(["pair", "--check"]) == 1
    assert nb_path.name in capsys.readouterr().err
    assert cli.main(["pair"]) == 0 and (tmp_path / "paired" / nb_path.with_suffix(".py").name).exists()
    assert cli.main(["pair", "--check"]) == 0
