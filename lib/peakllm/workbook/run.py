"""``make workbook``: execute every notebook with papermill on its default parameters.

Each notebook runs with ``notebooks/`` as its working directory; the executed copy goes to
``runs/<name>/``, its records to ``runs/<name>/<notebook>.results.json``, and all records of the
run to ``runs/<name>/results.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.paths import REPO, atomic_write_text, relative
from ..core.records import gather, to_frame

NOTEBOOKS = REPO / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        known = {p.stem: p for p in found}
        missing = [n for n in only if Path(n).stem not in known]
        if missing:
            raise ValueError(f"notebooks={missing} not found; choose from {sorted(known)}")
        found = [known[Path(n).stem] for n in only]
    return found


def run(out: str | Path = REPO / "runs" / "default", only: list[str] | None = None,
        parameters: dict | None = None) -> list[dict]:
    import papermill as pm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for nb in notebooks(only):
        t0 = time.perf_counter()
        print(f"running {nb.name} ...", flush=True)
        pm.execute_notebook(
            str(nb), str(out / nb.name), cwd=str(NOTEBOOKS), kernel_name="python3",
            parameters={**(parameters or {}), "results_path": str((out / f"{nb.stem}.results.json").resolve())},
            progress_bar=False, log_output=False)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    records = gather(out)
    atomic_write_text(out / "results.json", json.dumps(records, indent=1) + "\n")
    print(f"\n{len(records)} records in {relative(out / 'results.json')}\n")
    print(to_frame(records).to_string(index=False, max_colwidth=40))
    return records
