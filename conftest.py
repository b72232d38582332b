"""pytest setup shared by the unit tests and nbval.

nbval executes every notebook and fails on any error. It compares stored and fresh outputs only
where every machine reproduces them: stderr (progress bars, library warnings) is not compared,
times, sizes and every measured decimal are masked (tests/nbval_sanitize.cfg), and cells whose text
depends on measured numbers are tagged ``nbval-ignore-output``. The numbers that carry each
notebook's lesson are checked instead, with measured tolerances, by the notebook's last cell
(``peakllm.finish`` runs ``peakllm.workbook.lessons`` when PEAKLLM_CHECK_LESSONS is set).
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["PEAKLLM_CHECK_LESSONS"] = "1"  # the kernels nbval starts inherit it
# Notebooks 10, 13 and 21 show llm-compressor's rows from the committed results of `make crosscheck`
# (data/results/crosscheck/results.json): the stored outputs and the kernels nbval starts read the same file.


def pytest_collectstart(collector):
    if type(collector).__name__ == "IPyNbFile":
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tiers (markers registered in pyproject.toml): every nbval cell is `notebooks`; `gpu` tests
    are skipped where there is no CUDA GPU. Runs before `-m` deselects anything."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
            for item in gpu:
                item.add_marker(skip)
    for item in items:
        if type(item.parent).__name__ == "IPyNbFile":
            item.add_marker(pytest.mark.notebooks)
