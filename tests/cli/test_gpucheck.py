"""``python -m peakllm gpucheck`` where there is no GPU: the slug, the refusal, the record's layout,
the JUnit reading, and that a failed step does not stop the next."""
import json

import pytest
import torch

from peakllm import cli
from peakllm.cli import gpucheck
from peakllm.workbook import gpuruns

VERSIONS = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "transformers": "5.17.0"}
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.gpu.test_cuda" name="test_half[bfloat16]" time="1.25">
  <properties><property name="ppl_bfloat16" value="101.9"/><property name="note" value="sdpa"/></properties>
</testcase>
<testcase classname="tests.gpu.test_cuda" name="test_bnb[int8]" time="0.5">
  <failure message="AssertionError: (130.2, 101.9)">traceback</failure></testcase>
<testcase classname="tests.gpu.test_cuda" name="test_peak" time="0.1">
  <error message="failed on setup with &quot;RuntimeError: CUDA error&quot;">traceback</error></testcase>
<testcase classname="tests.gpu.test_cuda" name="test_2_4" time="0.0">
  <skipped type="pytest.skip" message="2:4 sparse tensor cores need compute capability &gt;= 8.0">x</skipped></testcase>
</testsuite></testsuites>"""


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"), ("NVIDIA A100-SXM4-40GB", "nvidia-a100-sxm4-40gb"),
    ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"), (" Tesla T4 ", "tesla-t4"), ("NVIDIA H200", "nvidia-h200"),
])
def test_card_slug(name, slug):
    assert gpucheck.card_slug(name) == slug


def test_a_name_without_letters_or_digits_has_no_slug():
    with pytest.raises(ValueError, match="no letter or digit"):
        gpucheck.card_slug(" -- ")


def test_run_refuses_at_once_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpucheck, "run_tests", lambda *a: pytest.fail("a step ran"))
    with pytest.raises(gpucheck.NoCUDA, match="needs a CUDA GPU.*is_available\\(\\) is False"):
        gpucheck.run(tmp_path)
    assert cli.main(["gpucheck", "--out", str(tmp_path)]) == 2
    assert "gpucheck: gpucheck needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_summary_holds_the_documented_fields():
    tests = {"status": "ok", "seconds": 61.0, "returncode": 0, "passed": 11, "failed": 0, "error": 0, "skipped": 0,
             "cases": []}
    bench = {"status": "ok", "seconds": 40.2, "dtype": "float32", "repeats": 3,
             "rows": [{"model": "OPT-125M", "layer": "fc1", "shape": "3072x768", "method": "gptq 4-bit",
                       "seconds": 0.2}]}
    notebooks = {"22_fast_decoding": {"status": "ok", "seconds": 30.0, "executed": "nvidia-h100-80gb-hbm3/22_fast_decoding.ipynb",
                                      "records": [{"metric": "tokens_per_s", "value": 900}]}}
    graph = {"status": "ok", "seconds": 20.0, "same_tokens": True, "tokens_per_s": {"generate": 90.0}}
    s = gpucheck.summarize("NVIDIA H100 80GB HBM3", "9.0", VERSIONS, tests, bench, notebooks, graph)
    assert list(s) == ["card", "slug", "compute_capability", "versions", "tests", "bench", "graph_decode",
                       "notebooks", "ok"]
    assert s["graph_decode"] == graph
    assert (s["card"], s["slug"], s["compute_capability"]) == ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3", "9.0")
    assert s["versions"] == {"torch": "2.11.0+cu130", "cuda": "13.0", "transformers": "5.17.0", "bitsandbytes": None,
                             "python": "3.12.3"}
    assert (s["tests"], s["bench"], s["notebooks"], s["ok"]) == (tests, bench, notebooks, True)
    assert json.loads(json.dumps(s)) == s  # plain JSON


def test_summary_is_not_ok_while_a_step_failed_or_did_not_run():
    ok = {"status": "ok"}
    assert gpucheck.summarize("H100", "9.0", VERSIONS, ok, ok, None, ok)["ok"]  # --skip-notebooks
    assert not gpucheck.summarize("H100", "9.0", VERSIONS, ok, ok)["ok"]  # the graph decode did not run
    partial = gpucheck.summarize("H100", "9.0", VERSIONS, ok)
    assert partial["bench"] == {"status": "not run"} and not partial["ok"]
    failed = gpucheck.summarize("H100", "9.0", VERSIONS, ok, ok, {"21_weight_quantization": {"status": "failed"}}, ok)
    assert not failed["ok"]


def test_junit_is_read_into_counts_outcomes_and_properties():
    found = gpucheck.parse_junit(JUNIT)
    assert {k: found[k] for k in gpucheck.OUTCOMES} == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    first, failed, error, skipped = found["cases"]
    assert first == {"name": "test_half[bfloat16]", "outcome": "passed", "seconds": 1.25,
                     "properties": {"ppl_bfloat16": 101.9, "note": "sdpa"}}
    assert failed["outcome"] == "failed" and failed["message"] == "AssertionError: (130.2, 101.9)"
    assert error["outcome"] == "error" and "CUDA error" in error["message"]
    assert skipped["message"] == "2:4 sparse tensor cores need compute capability >= 8.0"


def test_the_gpu_tests_are_collected_and_skipped_here():
    """The real subprocess on this machine: the project's addopts are left out, JUnit is read back."""
    found = gpucheck.run_tests(timeout=120)
    assert found["status"] == "ok" and found["returncode"] == 0
    assert found["skipped"] == len(found["cases"]) >= 10 and found["passed"] == found["failed"] == 0
    assert all("needs a CUDA GPU" in c["message"] for c in found["cases"])


def test_every_step_runs_after_a_failed_one_and_the_record_is_written(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpucheck, "require_cuda", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    monkeypatch.setattr(gpucheck, "run_tests", lambda: 1 / 0)
    monkeypatch.setattr(gpucheck, "run_bench", lambda dtype, repeats: {"dtype": dtype, "repeats": repeats, "rows": []})

    def run_notebook(stem, run_dir):
        if stem.startswith("21"):
            raise RuntimeError("\x1b[0;31mPapermillExecutionError\x1b[0m: cell 7")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / f"{stem}.ipynb").write_text("{}")
        return {"records": [{"metric": "m", "value": 1}]}

    monkeypatch.setattr(gpucheck, "run_notebook", run_notebook)
    path = gpucheck.run(tmp_path)
    s = json.loads(path.read_text())
    assert path == tmp_path / "nvidia-h100-80gb-hbm3.json" and not s["ok"]
    assert s["tests"]["status"] == "failed" and s["tests"]["error"] == "ZeroDivisionError: division by zero"
    assert s["bench"]["status"] == "ok" and s["bench"]["dtype"] == "float32"
    nbs = s["notebooks"]
    assert list(nbs) == list(gpucheck.NOTEBOOKS)
    assert nbs["21_weight_quantization"] | {"seconds": 0} == {"status": "failed", "seconds": 0,
                                                             "error": "RuntimeError: PapermillExecutionError: cell 7"}
    assert nbs["22_fast_decoding"]["executed"] == "nvidia-h100-80gb-hbm3/22_fast_decoding.ipynb"
    assert nbs["22_fast_decoding"]["records"] == [{"metric": "m", "value": 1}]
    assert "== gpucheck: tests failed" in capsys.readouterr().out


def test_cli_skip_notebooks_runs_no_notebook_and_exits_with_the_outcome(monkeypatch, tmp_path):
    calls = []

    def run(out_dir, notebooks):
        calls.append((out_dir, notebooks))
        (tmp_path / "card.json").write_text(json.dumps({"ok": len(calls) == 1}))
        return tmp_path / "card.json"

    monkeypatch.setattr(gpucheck, "run", run)
    assert cli.main(["gpucheck", "--out", str(tmp_path), "--skip-notebooks"]) == 0
    assert cli.main(["gpucheck"]) == 1
    assert calls == [(str(tmp_path), ()), (None, gpucheck.NOTEBOOKS)]


def test_a_misspelt_notebook_fails_before_any_step(monkeypatch, tmp_path):
    monkeypatch.setattr(gpucheck, "require_cuda", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    monkeypatch.setattr(gpucheck, "run_tests", lambda *a: pytest.fail("a step ran"))
    with pytest.raises(ValueError, match="99_nope"):
        gpucheck.run(tmp_path, notebooks=["99_nope"])


def test_stored_records_of_a_notebook_name_the_card(tmp_path):
    import json

    records = [{"metric": "decode_tokens_per_s", "value": 812.0, "dtype": "bfloat16"}, {"metric": "other", "value": 1}]
    (tmp_path / "h100.json").write_text(json.dumps({"card": "NVIDIA H100", "notebooks": {"22_fast_decoding": {"records": records}}}))
    got = gpuruns.stored_records("22_fast_decoding", ["decode_tokens_per_s"], tmp_path)
    assert got.to_dict("records") == [{"card": "NVIDIA H100", **records[0]}]
    assert gpuruns.stored_records("10_sparsegpt_one_shot_pruning", ["x"], tmp_path) is None
