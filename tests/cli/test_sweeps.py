"""Sweeps: resumable papermill runs over a grid of notebook parameters."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from peakllm.cli import run as workbook
from peakllm.cli import sweeps as sweep

TOY = '''
import os, time
from peakllm.core.records import Recorder
with open(counter, "a") as f:
    f.write(f"{x}\\n")
if os.path.exists(fail_flag) and x == 3:
    raise ValueError("x = 3 fails while the flag file exists")
time.sleep(pause)
rec = Recorder("toy", dict(x=x, label=label))
rec.add("square", x * x, "x^2", method=label)
print(rec.save(results_path))
'''


def toy_notebook(tmp_path: Path) -> Path:
    nb = new_notebook(cells=[
        new_code_cell('x: int = 1  # the number\nlabel: str = "a"  # a label\ncounter: str = ""  # file that logs runs\n'
                      'fail_flag: str = ""  # while this file exists, the run with x 3 fails\npause: float = 0.0  # seconds to sleep\n'
                      'results_path: str = ""  # where the records go',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(TOY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def sweep_file(tmp_path, grid, pause=0.0, **extra):
    nb = toy_notebook(tmp_path)
    spec = {"name": "toy", "notebook": str(nb), "grid": grid,
            "parameters": {"counter": str(tmp_path / "counter.txt"), "fail_flag": str(tmp_path / "FAIL"), "pause": pause}}
    spec |= extra
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def executions(tmp_path):
    f = tmp_path / "counter.txt"
    return f.read_text().split() if f.exists() else []


def test_completed_runs_are_skipped_and_failures_kept_then_retried(tmp_path):
    (tmp_path / "FAIL").touch()
    s = sweep.load(sweep_file(tmp_path, {"x": [1, 2, 3], "label": ["a"]}))
    df, _ = sweep.run(s, tmp_path / "runs", progress=False)
    root = tmp_path / "runs" / "toy"
    assert sorted(df["value"]) == [1, 4] and executions(tmp_path) == ["1", "2", "3"]
    err = json.loads((root / "x=3,label=a" / "error.json").read_text())
    assert "x = 3 fails" in err["error"] and (root / "x=3,label=a" / "failed.ipynb").exists()
    sweep.run(s, tmp_path / "runs", progress=False)  # nothing to do: done skipped, failure kept
    assert executions(tmp_path) == ["1", "2", "3"]
    (tmp_path / "FAIL").unlink()
    df, _ = sweep.run(s, tmp_path / "runs", retry_failed=True, progress=False)
    assert executions(tmp_path) == ["1", "2", "3", "3"] and sorted(df["value"]) == [1, 4, 9]
    assert not (root / "x=3,label=a" / "error.json").exists()
    assert (root / "results.csv").exists() and "square" in (root / "results.md").read_text()
    assert (root / "square.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow  # ~13 s: two sweep subprocesses, 1.5 s per run
def test_interrupted_sweep_resumes_without_rerunning_completed_runs(tmp_path):
    path = sweep_file(tmp_path, {"x": [1, 2, 4, 5]}, pause=1.5)
    root = tmp_path / "runs" / "toy"
    cmd = [sys.executable, "-m", "peakllm", "sweep", str(path), "--out", str(tmp_path / "runs")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (root / "x=2" / "done.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # killed halfway: no clean-up of any kind
    proc.wait()
    done_before = {d.name.split("=")[1] for d in root.iterdir() if (d / "done.json").exists()}
    assert {"1", "2"} <= done_before and len(done_before) < 4
    for d in root.iterdir():  # nothing half-written under a final name
        if d.is_dir() and not (d / "done.json").exists():
            assert not (d / "results.json").exists() and not (d / "notebook.ipynb").exists()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = executions(tmp_path)
    assert all(after.count(x) == 1 for x in done_before), after  # completed runs were not run again
    assert all((root / f"x={x}" / "done.json").exists() for x in (1, 2, 4, 5))


@pytest.mark.parametrize("spec, match", [
    ({"notebook": "99_nope", "grid": {"x": [1]}}, "not found"),
    ({"notebook": "TOY", "grid": {"y": [1]}}, "unknown parameter 'y'"),
    ({"notebook": "TOY", "grid": {"x": [1, "two"]}}, "x='two' is a str; the notebook declares x: int"),
    ({"notebook": "TOY", "grid": {"x": [1]}, "parameters": {"pause": "long"}}, "pause='long'"),
    ({"notebook": "TOY", "grid": {}}, "non-empty 'grid'"),
    ({"notebook": "TOY", "grid": {"x": [1]}, "sparsity": 1}, "unknown keys"),
])
def test_bad_sweep_files_fail_before_any_run(tmp_path, spec, match):
    toy = toy_notebook(tmp_path)
    if spec["notebook"] == "TOY":
        spec["notebook"] = str(toy)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=match):
        sweep.load(path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", sorted((workbook.REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweep_files_are_valid(path):
    s = sweep.load(path)
    assert len(s.points()) >= 2 and len({s.folder(p) for p in s.points()}) == len(s.points())


def test_parallel_workers_run_every_point(tmp_path):
    s = sweep.load(sweep_file(tmp_path, {"x": [1, 2, 4]}, workers=2))
    assert s.workers == 2
    here = os.getcwd()
    df, outcomes = sweep.run(s, tmp_path / "runs", progress=False)
    assert [o["status"] for o in outcomes] == ["done"] * 3
    assert sorted(df["value"]) == [1, 4, 16] and sorted(executions(tmp_path)) == ["1", "2", "4"]
    assert os.getcwd() == here  # threads must not move the process's working directory
