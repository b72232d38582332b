"""What a learner reads is what the run measured.

Every number with a decimal point in a notebook's markdown -- explanations and solutions alike --
must be one the run shows (its stored outputs, which nbval keeps equal to a fresh run), a
published figure (``data/reference/paper_numbers.json``), a setting the notebook's code states,
or a given of one of its exercises. A typed-in measurement that no output holds fails here.
Our own acceptance thresholds never reach a learner: the word "target" fails too.
"""
import json
import re

import pytest

from peakllm.core.reference import paper_numbers
from peakllm.workbook.run import notebooks

DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.]*\d)")  # 3.14, not 2.13.0 (a version) nor v1.5x
REFERENCE = re.compile(r"(section|sections|table|appendix|§|version|v)\s*$", re.I)  # "section 3.5"
CODE_SPAN = re.compile(r"`[^`]*`")


def _text(cell) -> str:
    return "".join(cell["source"])


def _outputs(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        for kind in ("text/plain", "text/html", "text/markdown"):
            parts.append("".join(o.get("data", {}).get(kind, "")))
    return "\n".join(parts)


def _published() -> set[float]:
    return {float(v) for e in paper_numbers() for k, v in e.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def unbacked_numbers(nb: dict, published: set[float]) -> list[tuple[int, str, str]]:
    """(cell index, number, context) of every decimal number in ``nb``'s markdown that no output,
    code cell, exercise or published figure holds."""
    cells = nb["cells"]
    shown = "\n".join(_outputs(c) + "\n" + _text(c) for c in cells if c["cell_type"] == "code")
    shown += "\n".join(_text(c) for c in cells if "exercise" in c.get("metadata", {}).get("tags", []))
    bad = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown":
            continue
        prose = CODE_SPAN.sub(" ", _text(c))
        for m in DECIMAL.finditer(prose):
            x = m.group(1)
            if REFERENCE.search(prose[max(0, m.start() - 12):m.start()]) or x in shown or float(x) in published:
                continue
            bad.append((i, x, prose[max(0, m.start() - 50):m.end() + 20].replace("\n", " ")))
    return bad


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_numbers_in_prose_come_from_the_run(path):
    assert unbacked_numbers(json.loads(path.read_text()), _published()) == []


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_no_acceptance_threshold_reaches_a_learner(path):
    cells = json.loads(path.read_text())["cells"]
    assert [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
            and re.search(r"\btargets?\b", _text(c), re.I)] == []


def test_a_typed_in_measurement_is_caught():
    nb = {"cells": [{"cell_type": "code", "source": ["print(114.21)"], "outputs": [{"text": "114.21\n"}]},
                    {"cell_type": "markdown", "source": ["Dense 114.21, pruned 116.40 (section 3.5)."]}]}
    assert [x for _, x, _ in unbacked_numbers(nb, {27.66})] == ["116.40"]
