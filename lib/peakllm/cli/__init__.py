"""The tooling behind ``python -m peakllm COMMAND``: one module per command, each adding its parser
(``add``) with the function that runs it (``set_defaults(func=...)``); ``COMMANDS`` is the table.

Notebooks never import from here: what they use at run time is ``peakllm.workbook``.
"""
from __future__ import annotations

import argparse

from . import bench, book, data, gpucheck, grade, lessons, pretrain, run, student, sweeps

# in the order ``--help`` lists them
COMMANDS = (run, lessons, sweeps, book, student, grade, pretrain, data, bench, gpucheck)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m peakllm", description="peakllm: the workbook's commands.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for command in COMMANDS:
        command.add(sub)
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    return a.func(a) or 0
