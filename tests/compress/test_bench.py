"""``python -m peakllm bench``: the solver's time on one layer at the papers' shapes."""
import json

import pytest

from peakllm import cli
from peakllm.compress import bench
from peakllm.core.records import Recorder


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


def test_whole_model_time_counts_every_layer_of_every_block():
    rows = [{"model": "OPT-125M", "layer": layer, "method": "gptq 4-bit", "seconds": s}
            for layer, s in [("attention", 1.0), ("fc1", 2.0), ("fc2", 3.0)]]
    assert bench.whole_model_seconds(rows, "OPT-125M", "gptq 4-bit") == 12 * (4 * 1.0 + 2.0 + 3.0)
    with pytest.raises(ValueError, match="fc2"):
        bench.whole_model_seconds(rows[:2], "OPT-125M", "gptq 4-bit")


def test_stored_gpu_runs_are_read_per_card(tmp_path):
    rows = [{"model": "OPT-125M", "layer": "fc1", "shape": "3072x768", "method": "gptq 4-bit", "seconds": 0.01}]
    (tmp_path / "nvidia-h100.json").write_text(json.dumps({"card": "NVIDIA H100", "bench": {"status": "ok", "rows": rows}}))
    (tmp_path / "broken.json").write_text(json.dumps({"card": "X", "bench": {"status": "failed", "rows": []}}))
    assert bench.stored(tmp_path) == {"NVIDIA H100": rows}
    assert bench.stored(tmp_path / "absent") == {}


def test_table_as_text_carries_the_unit():
    rows = [{"model": "OPT-125M", "layer": "fc1", "shape": "3072x768", "method": "gptq 4-bit", "seconds": 0.01234}]
    assert bench.table(rows, digits=3).iloc[0, 0] == "0.012 s"


def test_no_run_starts_once_the_budget_is_spent(monkeypatch):
    calls = []
    real = bench._solver

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(bench, "_solver", counting)
    bench.layer_seconds("gptq 4-bit", 8, 16, device="cpu", repeats=3, budget_s=0.0)
    assert len(calls) == 1
    bench.layer_seconds("gptq 4-bit", 8, 16, device="cpu", repeats=3)
    assert len(calls) == 1 + 3
