"""The HTML report of every notebook's tables and plots."""
import nbformat

from peakllm.workbook import report
from peakllm.workbook import run as workbook


def test_report_holds_every_table_and_image_it_references(tmp_path):
    out = report.build(workbook.NOTEBOOKS, tmp_path / "report.html")
    found = report.verify(out)
    n_png = sum("image/png" in o.get("data", {}) for p in workbook.notebooks()
                for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code" for o in c.outputs)
    assert found["images"] == n_png > 0
    assert found["sections"] >= len(workbook.notebooks())
    headed = sum(c.cell_type == "markdown" and "## " in c.source and "Paper vs ours" in c.source
                 for p in workbook.notebooks() for c in nbformat.read(p, as_version=4).cells)
    assert found["paper_vs_ours"] == headed >= 4 and found["tables"] >= 20
    assert "/work/" not in out.read_text() and "/tmp/" not in out.read_text()
