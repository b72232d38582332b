"""What a learner reads is what the run measured -- on every rerun.

A Markdown cell cannot hold a measured number: rerun a notebook with another model, other
parameters or on another machine and its outputs change while its Markdown would not. So every
decimal number in a notebook's Markdown -- explanations, exercises and solutions alike -- must be
a published figure (``data/reference/paper_numbers.json``), a setting the notebook's code states
(it appears in a code cell's source), a given of an exercise, or a reference ("section 3.5").
Sentences that quote this run's figures are built by code from its records (``peakllm.say``), so
they change with the run (``test_a_rerun_renders_its_own_sentences``).
Our own acceptance thresholds never reach a learner: the word "target" fails too.
"""
import json
import re

import pytest

from peakllm.cli.run import notebooks
from peakllm.core.reference import paper_numbers

DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.]*\d)")  # 3.14, not 2.13.0 (a version) nor v1.5x
REFERENCE = re.compile(r"(section|sections|table|appendix|§|version|v)\s*$", re.I)  # "section 3.5"
CODE_SPAN = re.compile(r"`[^`]*`")
# a notebook's number ("notebook 10.1", "notebooks 10.1 and 10.2", the title "# 10.2 · ...")
NOTEBOOK = re.compile(r"((notebooks?|part)\s+(\d+(\.\d+)?\s*(,|and|or|to)\s*)*|(^|\n)#\s*)$", re.I)


def _text(cell) -> str:
    return "".join(cell["source"])


def _published() -> set[float]:
    return {float(v) for e in paper_numbers() for k, v in e.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def measured_numbers(nb: dict, published: set[float]) -> list[tuple[int, str, str]]:
    """(cell index, number, context) of every decimal number in ``nb``'s Markdown that is not
    published, not a setting in a code cell's source, not an exercise's given, not a reference:
    a measured number, which only an output may hold."""
    cells = nb["cells"]
    settings = "\n".join(_text(c) for c in cells if c["cell_type"] == "code")
    bad = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown":
            continue
        prose = CODE_SPAN.sub(" ", _text(c))
        givens = prose if "exercise" in c.get("metadata", {}).get("tags", []) else ""
        for m in DECIMAL.finditer(prose):
            x = m.group(1)
            if (REFERENCE.search(prose[max(0, m.start() - 12):m.start()]) or float(x) in published
                    or NOTEBOOK.search(prose[max(0, m.start() - 40):m.start()])):
                continue
            if re.search(rf"(?<![\w.]){re.escape(x)}(?![\w.]*\d)", settings) or (givens and x in givens):
                continue
            bad.append((i, x, prose[max(0, m.start() - 50):m.end() + 20].replace("\n", " ")))
    return bad


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_markdown_holds_no_measured_number(path):
    assert measured_numbers(json.loads(path.read_text()), _published()) == []


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_no_acceptance_threshold_reaches_a_learner(path):
    cells = json.loads(path.read_text())["cells"]
    assert [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
            and re.search(r"\btargets?\b", _text(c), re.I)] == []


def test_a_typed_in_measurement_is_caught_even_when_an_output_shows_it():
    nb = {"cells": [{"cell_type": "code", "source": ["eps = 0.01\nprint(dense)"], "outputs": [{"text": "114.21\n"}]},
                    {"cell_type": "markdown", "source": ["Dense 114.21 at eps 0.01, the paper's 27.66 (section 3.5)."]}]}
    assert [x for _, x, _ in measured_numbers(nb, {27.66})] == ["114.21"]


def test_a_notebooks_number_is_a_reference_but_a_measurement_beside_it_is_not():
    nb = {"cells": [{"cell_type": "markdown", "source": [
        "# 10.2 · The whole model\n\nAfter notebook 10.1 (and notebooks 10.1 and 10.2), about 2.5 minutes; "
        "notebook 10 took 3.7 s."]}]}
    assert [x for _, x, _ in measured_numbers(nb, set())] == ["2.5", "3.7"]
