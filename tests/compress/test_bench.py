"""``python -m peakllm bench``: the solver's time on one layer at the papers' shapes."""
import json

import pytest

from peakllm.compress import bench
from peakllm.core.records import Recorder
from peakllm.workbook import cli


def test_the_papers_shapes():
    assert bench.SHAPES["OPT-125M"] == {"attention": (768, 768), "fc1": (3072, 768), "fc2": (768, 3072)}
    assert bench.SHAPES["OPT-1.3B"]["fc2"] == (2048, 8192)
    assert bench.SHAPES["switch-base expert"] == {"wi": (3072, 768), "wo": (768, 3072)}


@pytest.mark.parametrize("method", bench.METHODS)
def test_every_method_runs_its_solver_and_is_timed(method):
    assert 0 < bench.layer_seconds(method, 32, 64, "cpu", repeats=2) < 10


def test_bad_arguments_fail_naming_them():
    with pytest.raises(ValueError, match="method='gptq 3-bit' is not allowed"):
        bench.layer_seconds("gptq 3-bit", 8, 8)
    with pytest.raises(ValueError, match="models='OPT-175B' is not allowed"):
        bench.run(["OPT-175B"])
    with pytest.raises(ValueError, match="repeats=0"):
        bench.layer_seconds("gptq 4-bit", 8, 8, repeats=0)


def test_records_and_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", {"fc1": (64, 32), "fc2": (32, 64)})
    rec = Recorder("bench", {}, device="cpu")
    rows = bench.run(["tiny"], repeats=1, rec=rec, progress=False)
    assert len(rows) == len(rec.records) == 2 * len(bench.METHODS)
    r = rec.records[0]
    assert (r["metric"], r["unit"], r["shape"], r["dtype"], r["device"]) == ("layer_seconds", "s", "64x32", "float32", "cpu")
    t = bench.table(rows)
    assert list(t.columns) == list(bench.METHODS) and t.shape == (2, 3)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--models", "tiny", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert "sparsegpt 2:4" in capsys.readouterr().out
    assert {r["method"] for r in json.loads(out.read_text())} == set(bench.METHODS)
