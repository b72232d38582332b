"""How long the solver takes on one layer at the papers' shapes: ``python -m peakllm bench``.

SparseGPT (section 4) prunes OPT-175B in about 4 hours on one A100, and GPTQ (section 4)
quantizes it in about 4 GPU hours: the cost is a Cholesky of each layer's d x d Hessian and one
column sweep per layer. Neither depends on the weight values, only on the shapes, so this
benchmark times ``ColumnSweep`` on random weights with a Hessian from random inputs:

* OPT-125M: attention 768 x 768, fc1 3072 x 768, fc2 768 x 3072 (out x in);
* OPT-1.3B: attention 2048 x 2048, fc1 8192 x 2048, fc2 2048 x 8192;
* a switch-base expert: wi 3072 x 768, wo 768 x 3072 (the shapes of OPT-125M's MLP).

Methods: SparseGPT 50% unstructured, SparseGPT 2:4, GPTQ 4-bit, each the median of ``repeats``
device-synchronized runs of the whole solver (dead inputs, dampening, Cholesky, sweep) -- fewer
where the runs made already took ``budget_s`` seconds.
"""
from __future__ import annotations

import statistics

import torch

from ..core.checks import choices, positive_int
from ..core.hardware import resolve_device
from ..core.timing import Timer
from .gptq import GPTQ
from .obs import Hessian
from .sparsegpt import SparseGPT

SHAPES = {  # model -> {layer: (rows = out features, columns = in features)}
    "OPT-125M": {"attention": (768, 768), "fc1": (3072, 768), "fc2": (768, 3072)},
    "OPT-1.3B": {"attention": (2048, 2048), "fc1": (8192, 2048), "fc2": (2048, 8192)},
    "switch-base expert": {"wi": (3072, 768), "wo": (768, 3072)},
}
METHODS = ("sparsegpt 50%", "sparsegpt 2:4", "gptq 4-bit")
BLOCKS = {"OPT-125M": 12, "OPT-1.3B": 24}  # decoder blocks
PER_BLOCK = {"attention": 4, "fc1": 1, "fc2": 1}  # q, k, v, out_proj share the attention shape


def random_hessian(columns: int, device, gen: torch.Generator, tokens: int = 512) -> Hessian:
    """H of ``tokens`` random inputs: low rank, made positive definite by the solver's dampening
    like any real H (the solver's cost depends on the shape only)."""
    h = Hessian(columns, device=device)
    h.add_batch(torch.randn(tokens, columns, generator=gen).to(device))  # (tokens, columns)
    return h


def _solver(method: str, rows: int, hessian: Hessian, device, dtype, gen: torch.Generator):
    """A fresh layer of random weights sharing ``hessian``, and the call to time."""
    layer = torch.nn.Linear(hessian.H.shape[0], rows, bias=False, device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(rows, hessian.H.shape[0], generator=gen).to(device, dtype))
    collector = (GPTQ if method.startswith("gptq") else SparseGPT)(layer)
    collector.share(hessian)  # the solver reads H and never writes it
    if method == "sparsegpt 50%":
        return lambda: collector.prune(0.5)
    if method == "sparsegpt 2:4":
        return lambda: collector.prune(0.0, prunen=2, prunem=4)
    return lambda: collector.quantize(4)


def layer_seconds(method: str, rows: int, columns: int, device="auto", dtype: str = "float32",
                  repeats: int = 3, seed: int = 0, budget_s: float = 10.0) -> float:
    """Median seconds of up to ``repeats`` runs of ``method``'s solver on one rows x columns layer;
    no further run starts once the runs made took ``budget_s`` together (a layer that takes 12 s
    on a CPU is timed once: its run-to-run spread is a small share of it)."""
    choices("method", [method], METHODS)
    positive_int("repeats", repeats)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    hessian = random_hessian(columns, dev, gen)
    times = []
    for _ in range(repeats):
        run = _solver(method, rows, hessian, dev, getattr(torch, dtype), gen)
        with Timer(dev) as t:
            run()
        times.append(t.seconds)
        if sum(times) >= budget_s:
            break
    return statistics.median(times)


def run(models=None, methods=METHODS, device="auto", dtype: str = "float32", repeats: int = 3, rec=None,
        progress: bool = True) -> list[dict]:
    """Time every method on every layer of ``models`` (default: all of ``SHAPES``); one row per
    (model, layer, method); with a recorder, one ``layer_seconds`` record per row."""
    from tqdm.auto import tqdm

    models = list(SHAPES) if models is None else list(models)
    choices("models", models, SHAPES)
    choices("methods", methods, METHODS)
    dev = resolve_device(device)
    todo = [(m, layer, shape, method) for m in models for layer, shape in SHAPES[m].items() for method in methods]
    rows = []
    for model, layer, (r, c), method in tqdm(todo, desc="bench", disable=not progress):
        s = layer_seconds(method, r, c, dev, dtype, repeats)
        rows.append({"model": model, "layer": layer, "shape": f"{r}x{c}", "method": method, "seconds": s})
        if rec is not None:
            rec.add("layer_seconds", s, "s", method=method, shape=f"{r}x{c}", model=model, dtype=dtype)
    return rows


def table(rows: list[dict], digits: int | None = None):
    """Seconds per layer: one row per (model, layer, shape), one column per method; with
    ``digits``, each cell as text with its unit ("0.198 s")."""
    import pandas as pd

    df = pd.DataFrame(rows).pivot_table(index=["model", "layer", "shape"], columns="method", values="seconds",
                                        sort=False)
    df = df[[m for m in METHODS if m in df.columns]]
    return df if digits is None else df.map(f"{{:.{digits}f}} s".format)


def whole_model_seconds(rows: list[dict], model: str, method: str) -> float:
    """The solver's time for every linear layer of ``model``'s decoder blocks, from its per-layer
    rows: blocks x (4 attention + fc1 + fc2). Leaves out the calibration forwards and the Hessian
    accumulation, which depend on the calibration set, not the shapes."""
    choices("model", [model], BLOCKS)
    per = {r["layer"]: r["seconds"] for r in rows if r["model"] == model and r["method"] == method}
    if set(per) != set(PER_BLOCK):
        raise ValueError(f"rows lack {sorted(set(PER_BLOCK) - set(per))} of {model} for method={method!r}")
    return BLOCKS[model] * sum(PER_BLOCK[layer] * per[layer] for layer in PER_BLOCK)


def stored(folder=None) -> dict[str, list[dict]]:
    """The bench rows of every GPU run on record (``python -m peakllm gpucheck`` writes one JSON
    per card into ``data/results/gpu``): ``{card name: rows}``, empty when none was recorded."""
    import json
    from pathlib import Path

    from ..core.paths import GPU_RESULTS

    found = {}
    for path in sorted(Path(folder or GPU_RESULTS).glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("bench", {}).get("status") == "ok" and run["bench"].get("rows"):
            found[run["card"]] = run["bench"]["rows"]
    return found
