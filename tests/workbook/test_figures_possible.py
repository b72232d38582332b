"""No committed figure that cannot be true: a decode above its roofline is a measurement error."""
import json
import re

import pytest

from peakllm.core.paths import REPO

RESULTS = REPO / "data" / "results"
TABLE_ROW = re.compile(r"roofline_fraction\s+(\d+(?:\.\d+)?)")  # a records table as a notebook prints it


def committed_fractions() -> list[tuple[str, float]]:
    """(where, percent) of every roofline fraction in the committed records and in the text
    outputs of every committed notebook (the shipped ones and the GPU runs under data/results)."""
    found = []
    for path in RESULTS.rglob("*.json"):
        data = json.loads(path.read_text())
        records = data if isinstance(data, list) else []
        found += [(str(path.relative_to(REPO)), float(r["value"])) for r in records
                  if isinstance(r, dict) and r.get("metric") == "roofline_fraction" and r.get("value") is not None]
    for path in [*RESULTS.rglob("*.ipynb"), *(REPO / "notebooks").glob("*.ipynb")]:
        for cell in json.loads(path.read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                found += [(str(path.relative_to(REPO)), float(m)) for m in TABLE_ROW.findall(text)]
    return found


def test_the_scan_finds_the_committed_fractions():
    assert any(where.endswith("22_fast_decoding.results.json") for where, _ in committed_fractions())


def test_no_committed_decode_runs_above_its_roofline():
    above = [(where, v) for where, v in committed_fractions() if v > 100]
    assert above == [], f"roofline fractions above 100%: {above}"


@pytest.mark.parametrize("text, value", [("14  22_fast_decoding    roofline_fraction   146.2  float32", 146.2)])
def test_a_printed_records_row_is_read(text, value):
    assert [float(m) for m in TABLE_ROW.findall(text)] == [value]
