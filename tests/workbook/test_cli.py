"""``python -m peakllm``: every subcommand that runs offline in seconds, through the real entry point."""
import pytest

from peakllm.workbook import cli
from peakllm.workbook import run as workbook


def test_report_subcommand_builds_and_verifies_the_page(tmp_path, capsys):
    assert cli.main(["report", "--run-dir", str(workbook.NOTEBOOKS), "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "r.html" in out and "sections" in out and (tmp_path / "r.html").stat().st_size > 10_000


def test_pair_check_subcommand_passes_on_the_shipped_notebooks():
    assert cli.main(["pair", "--check"]) == 0


def test_student_subcommand_writes_copies(tmp_path, capsys):
    assert cli.main(["student", str(tmp_path / "handout")]) == 0
    assert len(list((tmp_path / "handout").glob("*.ipynb"))) == len(workbook.notebooks())


def test_an_unknown_subcommand_fails_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
