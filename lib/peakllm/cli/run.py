"""``make workbook``: execute every notebook with papermill on its default parameters.

Each notebook runs with ``notebooks/`` as its working directory; the executed copy goes to
``runs/<name>/``, its records to ``runs/<name>/<notebook>.results.json``, and all records of the
run to ``runs/<name>/results.json``.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..core.paths import NOTEBOOKS, REPO, atomic_write_text, relative
from ..core.records import gather, to_frame

BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm bar: "47%|████▋     | 22/47 [00:03<..."
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # nested bars move the cursor


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


def clean(nb) -> None:
    """Drop what papermill adds (run metadata, timings) so a stored notebook diffs only by its
    outputs, and keep of each progress bar its last state: tqdm redraws a bar with carriage
    returns, which a stored notebook would otherwise keep as one output line per redraw."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:  # papermill gives every cell an empty list
            del cell.metadata["tags"]
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.outputs:  # consecutive writes to one stream are one text
            if (merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == out.get("name")):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = [ANSI.sub("", line.rsplit("\r", 1)[-1]) for line in out["text"].split("\n")]
                bars = [line for line in lines if BAR.search(line)]
                kept = [line for line in lines if line.strip() and not BAR.search(line)] + bars[-1:]
                out["text"] = "\n".join(kept) + "\n"
        cell.outputs = [o for o in merged if not (o.get("output_type") == "stream" and not o["text"].strip())]


def store(only: list[str] | None = None, records: str | Path = REPO / "data" / "results" / "default") -> None:
    """Execute the shipped notebooks in place on their defaults: their stored outputs (what a
    learner opens and nbval executes) and, in ``records``, the reference run that
    ``peakllm.workbook.lessons`` checks later runs against. The machine and date go with them
    (``records/machine.json``). Overwrites notebooks/ and ``records``, which is what it is asked for."""
    import platform

    import nbformat
    import papermill as pm
    import torch

    from ..core.hardware import cpu_threads, cpuinfo

    records = Path(records)
    records.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ.get(k) for k in ("PEAKLLM_RESULTS_DIR", "PEAKLLM_CHECK_LESSONS")}
    os.environ["PEAKLLM_RESULTS_DIR"] = str(records.resolve())  # the kernels inherit it; finish() writes there
    os.environ.pop("PEAKLLM_CHECK_LESSONS", None)
    try:
        for nb_path in notebooks(only):
            t0 = time.perf_counter()
            print(f"storing {nb_path.name} ...", flush=True)
            nb = pm.execute_notebook(str(nb_path), None, cwd=str(NOTEBOOKS), kernel_name="python3",
                                     progress_bar=False, log_output=False)
            clean(nb)
            nbformat.write(nb, str(nb_path))
            print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    machine = {"cpu": cpuinfo("model name"), "threads": cpu_threads(), "python": platform.python_version(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    atomic_write_text(records / "machine.json", json.dumps(machine, indent=1) + "\n")


def add(sub) -> None:
    """``python -m peakllm workbook [--out DIR] [--store] [NOTEBOOK ...]``."""
    w = sub.add_parser("workbook", help="execute every notebook with papermill on its defaults")
    w.add_argument("--out", default=None, help="run directory (default runs/default)")
    w.add_argument("notebooks", nargs="*", help="only these notebooks (stems), default all")
    w.add_argument("--store", action="store_true", help="execute notebooks/ in place (their stored outputs) and "
                                                        "write the reference records to data/results/default")
    w.set_defaults(func=main)


def main(a) -> int:
    if a.store:
        store(a.notebooks or None)
    else:
        run(a.out or REPO / "runs" / "default", a.notebooks or None)
    return 0
