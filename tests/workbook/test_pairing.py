"""The pairs paired/NN_*.py, made by jupytext's own pairing (jupytext.toml, `make pair` =
`jupytext --sync`): in sync with their notebooks, faithful (every cell, its tags and nbgrader
metadata, no outputs, no header), and syncable in both directions without touching an output."""
import os
import shutil
import subprocess
import sys

import jupytext
import nbformat
import pytest

from peakllm.cli import run as workbook
from peakllm.core.paths import REPO

NOTEBOOKS = workbook.notebooks()


def cells(nb) -> list[tuple]:
    """What a pair must agree on: each cell's type, source, tags and nbgrader metadata."""
    return [(c.cell_type, c.source, c.metadata.get("tags", []), c.metadata.get("nbgrader")) for c in nb.cells]


def script(path):
    return REPO / "paired" / path.with_suffix(".py").name


def test_every_notebook_has_its_script_in_sync():
    assert NOTEBOOKS and all(p.suffix == ".ipynb" for p in NOTEBOOKS)
    stale = [p.name for p in NOTEBOOKS if not script(p).exists()
             or cells(jupytext.read(script(p))) != cells(nbformat.read(p, as_version=4))]
    assert not stale, f"paired/*.py out of sync with {stale}: run `make pair` (jupytext --sync)"


def test_scripts_have_no_header_and_no_outputs_and_keep_the_parameters_tag():
    for path in NOTEBOOKS:
        text = script(path).read_text()
        assert text.startswith("# %%"), f"{path.name}: the script has a header"
        assert "kernelspec" not in text and "jupytext" not in text.split("# %%")[0]
        assert '# %% tags=["parameters"]\n' in text, path.name
        assert all(not c.get("outputs") for c in jupytext.read(script(path)).cells)


@pytest.fixture
def pair_copy(tmp_path):
    """A copy of notebook 00 and its script, under the repository's jupytext.toml."""
    shutil.copy(REPO / "jupytext.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "paired").mkdir()
    nb = NOTEBOOKS[0]
    shutil.copy(nb, tmp_path / "notebooks" / nb.name)
    shutil.copy(script(nb), tmp_path / "paired" / script(nb).name)
    return tmp_path / "notebooks" / nb.name, tmp_path / "paired" / script(nb).name


def sync(ipynb):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(ipynb)], cwd=ipynb.parent.parent,
                   check=True, capture_output=True, env=env)


def test_a_script_edit_reaches_the_notebook_with_its_outputs_and_metadata_kept(pair_copy):
    ipynb, py = pair_copy
    before = nbformat.read(ipynb, as_version=4)
    text = py.read_text()
    i = text.index('# %% tags=["parameters"]\n') + len('# %% tags=["parameters"]\n')
    py.write_text(text[:i] + "extra_setting = 1  # help: added in the script\n" + text[i:])
    os.utime(py, (ipynb.stat().st_mtime + 5,) * 2)  # the script is the newer file
    sync(ipynb)
    after = nbformat.read(ipynb, as_version=4)
    params = next(k for k, c in enumerate(after.cells) if "parameters" in c.metadata.get("tags", []))
    assert after.cells[params].source.startswith("extra_setting = 1")
    assert [c.get("outputs") for c in after.cells] == [c.get("outputs") for c in before.cells]
    assert [c.metadata for c in after.cells] == [c.metadata for c in before.cells]  # nbgrader metadata survives
    assert after.metadata == before.metadata


def test_a_notebook_edit_reaches_the_script(pair_copy):
    ipynb, py = pair_copy
    nb = nbformat.read(ipynb, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    code.source += "\nprint('changed')"
    nbformat.write(nb, ipynb)
    os.utime(ipynb, (py.stat().st_mtime + 5,) * 2)
    sync(ipynb)
    assert "print('changed')" in py.read_text() and cells(jupytext.read(py)) == cells(nb)
