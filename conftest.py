"""pytest setup shared by the unit tests and nbval.

nbval compares stored and fresh outputs of every notebook. Progress bars (tqdm) and library
warnings go to stderr and change from run to run, so stderr is not compared; stdout, results and
tables are (with times and memory masked by tests/nbval_sanitize.cfg).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collectstart(collector):
    if type(collector).__name__ == "IPyNbFile":
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)
