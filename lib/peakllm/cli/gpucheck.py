"""``python -m peakllm gpucheck``: every check that needs a CUDA GPU, in one run, into one file.

A GPU may be lent for a few minutes only, so one run gives as much as it can. On GPU 0 it

1. runs the ``gpu`` tests (``tests/gpu``) in a subprocess and reads pytest's JUnit XML: the
   outcome of every test and the figures the tests attach with ``record_property``;
2. times SparseGPT and GPTQ on one layer at the papers' shapes (``peakllm.compress.bench``);
3. decodes 128 tokens at batch 1 on OPT-1.3B's shape in bf16 (random weights) with ``generate``
   and with the static-cache loop replayed as a CUDA graph (``peakllm.infer.graphs``), each set
   against the bound B / W (datasheet bandwidth over the weight bytes read per token);
4. executes notebooks 10.2, 21 and 22 with ``device="cuda"`` through the workbook runner
   (``peakllm.cli.run``) into ``<out>/<slug>/``, each writing its records there;
5. writes ``<out>/<slug>.json`` (``<out>`` by default ``data/results/gpu``, ``<slug>`` the
   card's name as a file name, e.g. ``nvidia-h100-80gb-hbm3``)::

       {"card": "NVIDIA H100 80GB HBM3", "slug": "nvidia-h100-80gb-hbm3", "compute_capability": "9.0",
        "versions": {"torch": ..., "cuda": ..., "transformers": ..., "bitsandbytes": ..., "python": ...},
        "tests": {"status", "seconds", "returncode", "passed", "failed", "error", "skipped",
                  "cases": [{"name", "outcome", "seconds", "message"?, "properties"?}, ...]},
        "bench": {"status", "seconds", "dtype", "repeats", "rows": [{"model", "layer", "shape", "method", "seconds"}]},
        "graph_decode": {"status", "seconds", "shape", "dtype", "batch", "new_tokens", "same_tokens",
                         "bound_tokens_per_s", "tokens_per_s": {...}, "roofline_fraction": {...}},
        "notebooks": {"10_sparsegpt_one_shot_pruning": {"status", "seconds", "executed", "records": [...]}, ...},
        "ok": true}

A step's ``status`` is ``ok``, ``failed`` (with ``error``: what went wrong), ``running`` or
``not run``; ``ok`` is true when every step ran and none failed. Each step runs whatever became
of the one before, and the file is rewritten before and after every step, so a run cut short
still leaves what it measured and names the step it was in.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

from ..core.paths import GPU_RESULTS, REPO, atomic_write_text, relative

RESULTS = GPU_RESULTS
NOTEBOOKS = ("10_sparsegpt_one_shot_pruning", "21_weight_quantization", "22_fast_decoding")
VERSION_KEYS = ("torch", "cuda", "transformers", "bitsandbytes")
OUTCOMES = ("passed", "failed", "error", "skipped")
TEST_TIMEOUT = 300  # seconds; the gpu tests take under 2 minutes on an H100
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in the tracebacks papermill hands on


class NoCUDA(RuntimeError):
    """gpucheck was started where torch sees no CUDA GPU."""


def card_slug(name: str) -> str:
    """A card's name as a file name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"card name {name!r} has no letter or digit to name a file by")
    return slug


def require_cuda() -> tuple[str, str]:
    """(name, compute capability "major.minor") of GPU 0; ``NoCUDA`` at once where there is none."""
    import torch

    if not torch.cuda.is_available():
        raise NoCUDA(f"gpucheck needs a CUDA GPU, and torch {torch.__version__} sees none here "
                     "(torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU")
    return torch.cuda.get_device_name(0), "{}.{}".format(*torch.cuda.get_device_capability(0))


def _number(text: str):
    """A property as pytest wrote it (a string) back as the number it was, where it was one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def parse_junit(xml_text: str) -> dict:
    """Counts per outcome and one entry per test from pytest's JUnit XML (``junit_family=xunit1``,
    which keeps what a test attached with ``record_property`` as its ``properties``)."""
    cases = []
    for case in ET.fromstring(xml_text).iter("testcase"):
        entry = {"name": case.get("name"), "outcome": "passed", "seconds": float(case.get("time", 0))}
        for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                entry |= {"outcome": outcome, "message": _ANSI.sub("", found.get("message", ""))[:500]}
                break
        properties = {p.get("name"): _number(p.get("value")) for p in case.iter("property")}
        if properties:
            entry["properties"] = properties
        cases.append(entry)
    return {k: sum(c["outcome"] == k for c in cases) for k in OUTCOMES} | {"cases": cases}


def run_tests(timeout: float = TEST_TIMEOUT) -> dict:
    """``pytest -m gpu tests/gpu`` in a subprocess (a crashed kernel cannot take this process with
    it), its output interleaved with this one's. The project's ``addopts`` (nbval) are left out."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu-tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
               "-o", "addopts=", "-o", "junit_family=xunit1", f"--junitxml={xml}"]
        proc = subprocess.run(cmd, cwd=REPO, timeout=timeout)
        if not xml.exists():
            raise RuntimeError(f"pytest exited with {proc.returncode} and wrote no JUnit XML")
        found = parse_junit(xml.read_text())
    return {"status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode} | found


def run_bench(dtype: str = "float32", repeats: int = 3) -> dict:
    """``peakllm.compress.bench`` on the GPU: seconds per layer of every method at every shape."""
    from ..compress import bench

    rows = bench.run(device="cuda", dtype=dtype, repeats=repeats, progress=False)
    print(bench.table(rows).round(4).to_string(), flush=True)
    return {"dtype": dtype, "repeats": repeats, "rows": rows}


def run_graph_decode(shape: str = "opt-1.3b", new_tokens: int = 128, repeats: int = 3) -> dict:
    """``generate`` vs the CUDA-graph loop of ``peakllm.infer.graphs`` at batch 1, with the bound."""
    import torch

    from ..infer import decoding, graphs
    from ..models import shapes

    model = shapes.shape_only(shape, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(4, model.config.vocab_size, (1, 32), device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0))
    r = graphs.benchmark(model, ids, new_tokens=new_tokens, graph=True, repeats=repeats)
    bound = decoding.decode_roofline(model, "cuda")["ideal_tokens_per_s"]
    r |= {"shape": shape, "dtype": "bfloat16", "bound_tokens_per_s": bound,
          "roofline_fraction": {k: v / bound for k, v in r["tokens_per_s"].items()}}
    print(json.dumps(r, indent=1), flush=True)
    del model
    torch.cuda.empty_cache()
    return r


def run_notebook(stem: str, run_dir: Path) -> dict:
    """One notebook executed with ``device="cuda"``; the records it wrote beside the copy."""
    from . import run as workbook

    workbook.run(run_dir, only=[stem], parameters={"device": "cuda"})
    return {"records": json.loads((run_dir / f"{stem}.results.json").read_text())}


def _step(name: str, fn, *args) -> dict:
    """``fn(*args)`` with its ``status`` (``ok`` unless it says otherwise) and ``seconds``; an
    exception becomes ``"status": "failed"`` with its message, and the run goes on."""
    print(f"\n== gpucheck: {name}", flush=True)
    t0 = time.perf_counter()
    try:
        out = {"status": "ok"} | fn(*args)
    except Exception as e:  # noqa: BLE001 -- recorded; the next step still runs
        traceback.print_exc()
        out = {"status": "failed", "error": _ANSI.sub("", f"{type(e).__name__}: {e}").strip()[-2000:]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"== gpucheck: {name} {out['status']} in {out['seconds']:.0f} s", flush=True)
    return out


def summarize(card: str, capability: str, versions: dict, tests: dict | None = None, bench: dict | None = None,
              notebooks: dict | None = None, graph_decode: dict | None = None) -> dict:
    """The record of one run, laid out as the module docstring shows; a step not given is "not run"."""
    not_run = {"status": "not run"}
    tests, bench, graph_decode, notebooks = tests or not_run, bench or not_run, graph_decode or not_run, notebooks or {}
    steps = [tests, bench, graph_decode, *notebooks.values()]
    return {"card": card, "slug": card_slug(card), "compute_capability": capability,
            "versions": {k: versions.get(k) for k in VERSION_KEYS} | versions,
            "tests": tests, "bench": bench, "graph_decode": graph_decode, "notebooks": notebooks,
            "ok": all(s["status"] == "ok" for s in steps)}


def run(out_dir: str | Path | None = None, notebooks=NOTEBOOKS, bench_dtype: str = "float32",
        bench_repeats: int = 3) -> Path:
    """Every step on GPU 0 (see the module docstring); returns the path of the JSON record."""
    card, capability = require_cuda()
    import torch

    from ..core.records import versions
    from .run import notebooks as known

    notebooks = list(notebooks)
    if notebooks:
        known(notebooks)  # a misspelt name fails now, not after the tests and the bench
    out = Path(out_dir or RESULTS).resolve()
    slug = card_slug(card)
    path, run_dir = out / f"{slug}.json", out / slug
    steps = {"versions": versions() | {"cuda": torch.version.cuda},
             "notebooks": {nb: {"status": "not run"} for nb in notebooks}}

    def save():
        atomic_write_text(path, json.dumps(summarize(card, capability, **steps), indent=1) + "\n")

    print(f"gpucheck on {card} (compute capability {capability}) into {relative(path)}", flush=True)
    for name, fn, args in [("tests", run_tests, ()), ("bench", run_bench, (bench_dtype, bench_repeats)),
                           ("graph_decode", run_graph_decode, ())]:
        steps[name] = {"status": "running"}
        save()
        steps[name] = _step(name, fn, *args)
    for nb in notebooks:
        steps["notebooks"][nb] = {"status": "running"}
        save()
        result = _step(nb, run_notebook, nb, run_dir)
        if (run_dir / f"{nb}.ipynb").exists():
            result["executed"] = f"{slug}/{nb}.ipynb"  # beside the JSON
        steps["notebooks"][nb] = result
    save()
    return path


def add(sub) -> None:
    """``python -m peakllm gpucheck [--out DIR] [--skip-notebooks]``."""
    g = sub.add_parser("gpucheck", help="on a CUDA GPU: the gpu tests, the layer bench and notebooks 10.2, 21, 22 "
                                         "(device=cuda), summarized in OUT/<card>.json")
    g.add_argument("--out", default=None, help="results folder (default data/results/gpu)")
    g.add_argument("--skip-notebooks", action="store_true", help="only the tests, the bench and the graph decode")
    g.set_defaults(func=main)


def main(a) -> int:
    try:
        path = run(a.out, notebooks=() if a.skip_notebooks else NOTEBOOKS)
    except NoCUDA as e:
        print(f"gpucheck: {e}", file=sys.stderr)
        return 2
    ok = json.loads(path.read_text())["ok"]
    print(f"{relative(path)}: {'every step passed' if ok else 'a step failed (see the status of each)'}")
    return 0 if ok else 1
