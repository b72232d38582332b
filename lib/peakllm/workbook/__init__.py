"""Workbook tooling: the notebook scaffold (``notebook``), paper-vs-ours tables (``compare``),
running every notebook (``run``), parameter grids (``sweeps``), the HTML report, student
copies, and the command line (``cli``)."""
