import pytest

from peakllm.cli import run as workbook


def test_workbook_lists_notebooks_and_rejects_unknown():
    stems = [p.stem for p in workbook.notebooks()]
    assert stems[:2] == ["00_orientation", "01_pretraining_the_tiny_models"]
    with pytest.raises(ValueError, match="notebooks=\\['99_nope'\\]"):
        workbook.notebooks(["99_nope"])
