"""``python -m peakllm lessons``: a run's records against each notebook's lessons
(``peakllm.workbook.lessons``), or, with ``--spread``, how far the reference run's figures move in
other runs (other CPUs, threads, MKL_CBWR) into ``data/results/default/spread.json``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.paths import atomic_write_text
from ..workbook import lessons
from ..workbook.notebook import on_defaults


def add(sub) -> None:
    le = sub.add_parser("lessons", help="check a run's records against each notebook's lesson "
                                        "(peakllm.workbook.lessons); exit 1 naming what fails")
    le.add_argument("run_dir", nargs="?", help="a folder of <notebook>.results.json (e.g. runs/default)")
    le.add_argument("--spread", nargs="+", metavar="NAME=DIR", help="instead: measure how far the reference "
                    "run's figures move in these runs (other CPUs, threads, MKL_CBWR) into data/results/default/spread.json")
    le.set_defaults(func=main)


def spread(runs: dict) -> int:
    rows = []
    for ref in sorted(lessons.REFERENCE.glob("*.results.json")):
        theirs = {n: json.loads((Path(d) / ref.name).read_text()) for n, d in runs.items()
                  if (Path(d) / ref.name).exists()}
        rows += lessons.spread(json.loads(ref.read_text()), theirs)
    atomic_write_text(lessons.REFERENCE / "spread.json", json.dumps(
        {"runs": sorted(runs), "figures": rows}, indent=1) + "\n")
    worst = sorted(rows, key=lambda r: -r["max_rel_dev"])[:10]
    print("\n".join(f"{r['notebook'][:2]} {r['metric']} {r['qualifiers']}: {r['max_rel_dev']:.2%}" for r in worst))
    return 0


def main(a) -> int:
    if a.spread:
        return spread(dict(item.split("=", 1) for item in a.spread))
    if not a.run_dir:
        print("lessons needs RUN_DIR or --spread", file=sys.stderr)
        return 2
    paths = sorted(Path(a.run_dir).glob("*.results.json"))
    if not paths:
        print(f"no *.results.json in {a.run_dir}", file=sys.stderr)
        return 1
    failures = []
    for path in paths:
        name, records = path.name.removesuffix(".results.json"), json.loads(path.read_text())
        if records and not on_defaults(name, records[0]["params"]):
            print(f"{name}: not on its default parameters, no lesson to check")
            continue
        failures += lessons.check(name, records)
    print("\n".join(failures) or f"every lesson holds in {len(paths)} notebooks' records")
    return 1 if failures else 0
