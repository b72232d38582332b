"""``python -m peakllm``: every subcommand that runs offline in seconds, through the real entry point."""
import pytest

from peakllm import cli
from peakllm.cli import run as workbook


@pytest.mark.slow
def test_report_subcommand_builds_the_book(tmp_path, capsys):
    assert cli.main(["report", "--run-dir", str(workbook.NOTEBOOKS), "--out", str(tmp_path / "book")]) == 0
    out = capsys.readouterr().out
    assert "index.html" in out and f"{len(workbook.notebooks()) + 5} pages" in out
    assert (tmp_path / "book" / "_build" / "html" / "index.html").exists()


def test_student_subcommand_writes_stubbed_copies_and_replaces_them_only_when_asked(tmp_path, capsys):
    out = tmp_path / "handout"
    assert cli.main(["student", str(out)]) == 0
    copies = sorted(out.glob("*.ipynb"))
    assert len(copies) == len(workbook.notebooks())
    assert all("raise NotImplementedError()" in p.read_text() for p in copies)
    with pytest.raises(FileExistsError, match="overwrite"):
        cli.main(["student", str(out)])
    assert cli.main(["student", str(out), "--overwrite"]) == 0


def test_an_unknown_subcommand_fails_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
