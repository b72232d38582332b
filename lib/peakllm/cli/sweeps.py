"""Parameter sweeps: one notebook over a grid of parameters with papermill, resumable.

A sweep file (YAML) names a notebook, fixed parameters and a grid::

    name: sparsity                     # runs/sparsity/
    notebook: 10_sparsegpt_one_shot_pruning
    parameters: {methods: [sparsegpt, magnitude]}
    grid:
      sparsity: [0.3, 0.5, 0.7]
    workers: 1                         # runs at once (each has its own kernel)

``python -m peakllm sweep FILE`` checks every name and value against the notebook's
parameter cell (papermill's ``--help-notebook`` view) before anything runs, then executes
each grid point into ``runs/<name>/<k=v,...>/``: the executed notebook, ``results.json`` and a
log. A run is complete when its ``done.json`` (holding its parameters) exists; completed runs
with the same parameters are skipped, failed ones keep ``error.json`` and are retried only with
``--retry-failed``. Every file appears under its final name in one rename, so an interrupted
sweep (Ctrl-C, a killed process) loses at most the run in progress and resumes where it
stopped. At the end the records of every completed run are joined into ``results.csv``,
``results.md`` and one plot per metric.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..core.paths import REPO, atomic_write_text, relative
from ..workbook.notebook import TYPES, check_known
from .run import NOTEBOOKS, notebooks


@dataclass
class Sweep:
    name: str
    notebook: Path
    grid: dict
    parameters: dict = field(default_factory=dict)
    workers: int = 1

    def points(self) -> list[dict]:
        """Every grid point as its full parameter dict (fixed parameters first)."""
        keys = list(self.grid)
        return [self.parameters | dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def folder(self, params: dict) -> str:
        """``k=v,k=v`` of the grid values (not the fixed ones); hashed when too long."""
        def text(v):
            return "+".join(map(str, v)) if isinstance(v, list) else str(v)

        name = ",".join(f"{k}={text(params[k])}" for k in self.grid)
        name = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)
        if len(name) > 120:
            name = name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
        return name


def _notebook(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path.resolve()
    return notebooks([path.stem])[0]  # a stem of notebooks/; unknown names fail with the list


def check_value(param: str, value, declared: str) -> None:
    ok = isinstance(value, TYPES.get(declared, (object,)))
    if declared in ("int", "float") and isinstance(value, bool):
        ok = False
    if not ok:
        raise ValueError(f"{param}={value!r} is a {type(value).__name__}; the notebook declares {param}: {declared}")


def load(path: str | Path) -> Sweep:
    """Read and check a sweep file; nothing runs."""
    import papermill
    import yaml

    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"name", "notebook", "parameters", "grid", "workers"}
    if unknown:
        raise ValueError(f"{path.name}: unknown keys {sorted(unknown)}; allowed: name, notebook, parameters, grid, workers")
    if "notebook" not in spec or not spec.get("grid"):
        raise ValueError(f"{path.name}: a sweep needs 'notebook' and a non-empty 'grid'")
    nb = _notebook(str(spec["notebook"]))
    declared = {k: v["inferred_type_name"] for k, v in papermill.inspect_notebook(str(nb)).items()}
    fixed, grid = dict(spec.get("parameters") or {}), dict(spec["grid"])
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid: {k} must be a non-empty list of values")
    check_known([*fixed, *grid], declared, f"{nb.stem} (in {path.name})")
    if "results_path" in [*fixed, *grid]:
        raise ValueError(f"{path.name}: results_path is set by the sweep for every run; leave it out")
    for k, v in fixed.items():
        check_value(k, v, declared[k])
    for k, values in grid.items():
        for v in values:
            check_value(k, v, declared[k])
    workers = spec.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    return Sweep(str(spec.get("name") or path.stem), nb, grid, fixed, workers)


def status(run_dir: Path, params: dict) -> str:
    """``done`` (same parameters), ``failed``, or ``pending``."""
    done = run_dir / "done.json"
    if done.exists() and json.loads(done.read_text())["parameters"] == params:
        return "done"
    return "failed" if (run_dir / "error.json").exists() else "pending"


def execute(notebook: Path, run_dir: Path, params: dict, cwd: Path | None = NOTEBOOKS) -> dict:
    """One run: papermill into temporary names, renamed into place only when it succeeded.
    ``cwd`` is the kernel's directory; papermill changes the whole process's directory for it,
    so parallel runs (threads) must pass None."""
    import papermill as pm

    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("done.json", "error.json"):
        (run_dir / stale).unlink(missing_ok=True)
    tmp_nb, tmp_res = run_dir / f".running-{os.getpid()}.ipynb", run_dir / f".running-{os.getpid()}.results.json"
    t0 = time.perf_counter()
    try:
        with open(run_dir / "log.txt", "w") as log:
            pm.execute_notebook(str(notebook), str(tmp_nb), cwd=cwd and str(cwd), kernel_name="python3",
                                parameters=params | {"results_path": str(tmp_res.resolve())},
                                progress_bar=False, log_output=True, stdout_file=log, stderr_file=log)
    except Exception as e:  # noqa: BLE001 -- the sweep goes on; the run keeps its error
        if tmp_nb.exists():
            os.replace(tmp_nb, run_dir / "failed.ipynb")
        tmp_res.unlink(missing_ok=True)
        err = {"parameters": params, "error": f"{type(e).__name__}: {e}"[:2000],
               "traceback": traceback.format_exc()[-4000:]}
        atomic_write_text(run_dir / "error.json", json.dumps(err, indent=1) + "\n")
        return {"status": "failed", "seconds": time.perf_counter() - t0}
    os.replace(tmp_nb, run_dir / "notebook.ipynb")
    os.replace(tmp_res, run_dir / "results.json")
    (run_dir / "failed.ipynb").unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    atomic_write_text(run_dir / "done.json", json.dumps({"parameters": params, "seconds": round(seconds, 1)}, indent=1) + "\n")
    return {"status": "done", "seconds": seconds}


def run(sweep: Sweep, out_root: str | Path = REPO / "runs", retry_failed: bool = False,
        workers: int | None = None, progress: bool = True):
    """Execute the pending grid points (and failed ones with ``retry_failed``); gather all."""
    from tqdm.auto import tqdm

    root = Path(out_root) / sweep.name
    points = sweep.points()
    todo = [p for p in points if status(root / sweep.folder(p), p) == "pending"
            or (retry_failed and status(root / sweep.folder(p), p) == "failed")]
    skipped = len(points) - len(todo)
    print(f"sweep {sweep.name}: {len(points)} runs of {sweep.notebook.stem}; {skipped} already complete or failed, "
          f"{len(todo)} to run -> {relative(root)}", flush=True)
    bar = tqdm(total=len(todo), desc=sweep.name, disable=not progress)

    workers = workers or sweep.workers

    def one(p):
        r = execute(sweep.notebook, root / sweep.folder(p), p, NOTEBOOKS if workers == 1 else None)
        bar.update(1)
        return r

    if workers == 1:  # in this thread, so Ctrl-C stops papermill (and its kernel) at once
        outcomes = [one(p) for p in todo]
    else:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            outcomes = list(pool.map(one, todo))
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)  # runs in flight finish or die with the process
            raise
        pool.shutdown()
    bar.close()
    failed = [sweep.folder(p) for p in points if status(root / sweep.folder(p), p) == "failed"]
    if failed:
        print(f"{len(failed)} failed (see error.json; rerun with --retry-failed): {failed}")
    return gather(sweep, root), outcomes


def gather(sweep: Sweep, root: Path):
    """One table of every completed run's records, with its grid values; CSV, Markdown, plots."""
    import pandas as pd

    from ..core.records import to_frame

    rows = []
    for p in sweep.points():
        d = root / sweep.folder(p)
        if status(d, p) != "done":
            continue
        for r in json.loads((d / "results.json").read_text()):
            rows.append({**{f"grid.{k}": json.dumps(p[k]) if isinstance(p[k], list) else p[k] for k in sweep.grid},
                         **{k: v for k, v in r.items() if k not in ("params", "versions")}})
    df = pd.DataFrame(rows)
    atomic_write_text(root / "results.csv", df.to_csv(index=False))
    atomic_write_text(root / "results.md", markdown(to_frame(rows)) if rows else "(no completed runs)\n")
    if len(df):
        plot(df, sweep, root)
    return df


def markdown(df) -> str:
    """A DataFrame as a Markdown table (``report.md_table``), ending with a newline."""
    from .report import md_table

    return md_table([str(c) for c in df.columns], [list(r) for r in df.itertuples(index=False)]) + "\n"


def plot(df, sweep: Sweep, root: Path) -> list[Path]:
    """A line per qualifier combination, metric against the first numeric grid parameter."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..core.records import QUALIFIERS

    xs = [f"grid.{k}" for k, v in sweep.grid.items() if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)]
    if not xs:
        return []
    x, paths = xs[0], []
    for metric, sub in df.groupby("metric"):
        if not pd_numeric(sub["value"]):
            continue
        quals = [q for q in QUALIFIERS if q in sub and sub[q].notna().any() and f"grid.{q}" != x]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, line in (sub.groupby(quals, dropna=False) if quals else [("", sub)]):
            line = line.sort_values(x)
            ax.plot(line[x], line["value"], "o-", label=", ".join(map(str, key if isinstance(key, tuple) else (key,))))
        ax.set(xlabel=x.removeprefix("grid."), ylabel=f"{metric} ({sub['unit'].iloc[0]})", title=f"{sweep.name}: {metric}")
        if quals:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = root / f"{metric}.png"
        fig.savefig(path.with_name(f".{path.name}.tmp.png"), dpi=90)
        os.replace(path.with_name(f".{path.name}.tmp.png"), path)
        plt.close(fig)
        paths.append(path)
    return paths


def pd_numeric(series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in series.dropna())


def add(sub) -> None:
    """``python -m peakllm sweep FILE [--out DIR] [--retry-failed] [--workers N]``."""
    s = sub.add_parser("sweep", help="run one notebook over a parameter grid (resumable)")
    s.add_argument("file", help="sweep file (YAML), e.g. sweeps/sparsity.yaml")
    s.add_argument("--out", default=None, help="root of the run folders (default runs/)")
    s.add_argument("--retry-failed", action="store_true", help="run the failed grid points again")
    s.add_argument("--workers", type=int, default=None, help="runs at once (default: the file's workers)")
    s.set_defaults(func=main)


def main(a) -> int:
    df, _ = run(load(a.file), a.out or REPO / "runs", a.retry_failed, a.workers)
    print(f"{len(df)} records gathered")
    return 0
