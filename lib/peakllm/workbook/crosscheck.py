"""The cross-check with llm-compressor as the notebooks read it (``make crosscheck``).

llm-compressor (``SparseGPTModifier``, ``GPTQModifier``; the path to vLLM) compresses the same
models on our calibration data in a second environment; ``peakllm.cli.crosscheck`` holds that
protocol and its measures. What it writes, ``data/results/crosscheck/results.json`` (committed),
becomes here the "production library" rows of notebooks 10.2 and 21 (``production_rows``) and of
notebook 13 (``production_rows("minilm")``: its scores in place of perplexity), read with the
workbook's noise rule (``spread.verdict``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.paths import REPO

RESULTS = REPO / "data" / "results" / "crosscheck" / "results.json"  # committed: the notebooks and the book read it
ENV = "PEAKLLM_CROSSCHECK_RESULTS"  # another results file for the notebooks' rows
HOW = ("make crosscheck  (about 12 minutes on 2 CPU cores from a fresh clone: installs llm-compressor into "
       ".venv-crosscheck, then compresses tiny-opt with both libraries; see README)")
HOW_MINILM = ("make crosscheck-minilm  (about 6 minutes on 2 CPU cores once .venv-crosscheck exists: compresses "
              "all-MiniLM-L6-v2 with both libraries on notebook 13's calibration lines)")
# name -> how each library is asked for it; ``family`` is the notebook that shows the rows
METHODS = {
    "sparsegpt 50%": dict(family="sparsegpt", setting="50% unstructured", sparsity=0.5, pattern="unstructured"),
    "sparsegpt 2:4": dict(family="sparsegpt", setting="2:4", sparsity=0.5, pattern="2:4"),
    "gptq 4-bit": dict(family="gptq", setting="4-bit per-channel", bits=4),
}
MINILM_METHODS = {
    "minilm sparsegpt 50%": dict(family="minilm", setting="SparseGPT 50% unstructured", sparsity=0.5,
                                 pattern="unstructured"),
    "minilm sparsegpt 2:4": dict(family="minilm", setting="SparseGPT 2:4", sparsity=0.5, pattern="2:4"),
    "minilm gptq 4-bit": dict(family="minilm", setting="GPTQ 4-bit per-channel", bits=4),
}
FAMILIES = ("sparsegpt", "gptq", "minilm")
SCORES = {"1 - cos": True, "recall@1": False}  # notebook 13's scores -> lower is better


def results_path(path=None) -> Path:
    """``path``, else ``$PEAKLLM_CROSSCHECK_RESULTS``, else ``data/results/crosscheck/results.json``."""
    return Path(path if path is not None else os.environ.get(ENV) or RESULTS)


def load(path=None) -> dict | None:
    """The cross-check's results, or None when ``make crosscheck`` has not been run."""
    path = results_path(path)
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    if "methods" not in res and "minilm" not in res:
        raise ValueError(f"{path.name} holds no 'methods': not a results file of make crosscheck")
    return res


def production_rows(family: str, path=None, variants: bool = True):
    """The rows of notebook 10.2 (``family="sparsegpt"``), 21 (``"gptq"``) or 13 (``"minilm"``, its
    scores in place of perplexity: ``_minilm_rows``): for each setting, ours
    and llm-compressor's perplexity on the same calibration windows (mean ± sd over the seeds);
    on llm-compressor's row, the difference of the means to ours with the workbook's reading of
    it (``spread.verdict``: a tie when the intervals mean ± sd overlap), and the share of mask (or
    grid) entries equal to ours; the time of one whole-model compression. ``variants``: also
    llm-compressor with one of its own defaults kept (where it differs from ours), each row read
    against ours the same way. Without a results file: says how to make one, returns None."""
    import pandas as pd

    from ..core.checks import choice

    choice("family", family, FAMILIES)
    res = load(path)
    part = "minilm" if family == "minilm" else "methods"
    if res is None or part not in res:
        what = "not found" if res is None else f"has no {family} part"
        print(f"No cross-check with the production library yet ({results_path(path).name} {what}).\n"
              f"To make one: {HOW_MINILM if family == 'minilm' else HOW}")
        return None
    if family == "minilm":
        return _minilm_rows(res["minilm"], path, variants)
    lib = f"llm-compressor {res['versions']['llmcompressor'].get('llmcompressor', '')}".strip()
    ppl = f"ppl {res['evaluation']['dataset']}"

    from ..core.spread import fmt, summarize, verdict

    def row(setting, who, side, ours=None, agree=None):
        r = {"setting": setting, "implementation": who, ppl: fmt(side["perplexity"]), "seeds": len(side["perplexity"])}
        if ours is not None:
            diff = summarize(side["perplexity"])["mean"] - summarize(ours["perplexity"])["mean"]
            r["vs ours"] = f"{diff:+.2f} ({verdict(side['perplexity'], ours['perplexity'])})"
        else:
            r["vs ours"] = ""
        r["agreement with ours"] = "" if agree is None else (f"{sum(agree['overall']) / len(agree['overall']):.2%} "
                                                             f"of {agree['kind']}")
        return r | {"time": f"{sum(side['seconds']) / len(side['seconds']):.1f} s"}

    rows = []
    for name, m in res["methods"].items():
        if METHODS.get(name, {}).get("family") != family:
            continue
        setting = METHODS[name]["setting"]
        rows += [row(setting, "ours (peakllm)", m["ours"]),
                 row(setting, f"production library ({lib})", m["llmcompressor"], m["ours"], m["agreement"])]
        for v, side in (m.get("variants", {}) if variants else {}).items():
            ours_same = {"perplexity": side["ours (same seeds)"]}
            rows.append(row(setting, f"{lib}, {v}", side, ours_same))
    if not rows:
        raise ValueError(f"{results_path(path).name} has no {family} rows; rerun `make crosscheck`")
    return pd.DataFrame(rows)


def _minilm_rows(part: dict, path, variants: bool):
    """Notebook 13's rows: per setting, ours and llm-compressor's 1 - cos and recall@1 on the held-out
    lines (mean ± sd over the seeds), llm-compressor's difference of the means to ours with its
    verdict (the per-seed gap rule, ``gap_check``, stays in the results file and the tool's printout), the share of mask
    (or grid) entries equal to ours, and the time of one whole-model compression."""
    import pandas as pd

    from ..core.spread import fmt, summarize, verdict

    lib = f"llm-compressor {part['versions']['llmcompressor'].get('llmcompressor', '')}".strip()

    def row(setting, who, side, ours=None, agree=None):
        r = {"setting": setting, "implementation": who}
        for k in SCORES:
            r[k] = fmt(side[k], 4 if k == "1 - cos" else 3)
        r["seeds"] = len(side["1 - cos"])
        if ours is not None:
            diff = summarize(side["1 - cos"])["mean"] - summarize(ours["1 - cos"])["mean"]
            r["1 - cos vs ours"] = f"{diff:+.4f} ({verdict(side['1 - cos'], ours['1 - cos'])})"
            r["recall@1 vs ours"] = verdict(side["recall@1"], ours["recall@1"], lower_is_better=False)
        else:
            r["1 - cos vs ours"] = r["recall@1 vs ours"] = ""
        r["agreement with ours"] = "" if agree is None else (f"{sum(agree['overall']) / len(agree['overall']):.2%} "
                                                             f"of {agree['kind']}")
        return r | {"time": f"{sum(side['seconds']) / len(side['seconds']):.1f} s"}

    rows = []
    for m in part["methods"].values():
        setting = m["setting"]
        rows += [row(setting, "ours (peakllm)", m["ours"]),
                 row(setting, f"production library ({lib})", m["llmcompressor"], m["ours"], m["agreement"])]
        for v, side in (m.get("variants", {}) if variants else {}).items():
            ours_same = {k: side[f"ours (same seeds) {k}"] for k in SCORES}
            rows.append(row(setting, f"{lib}, {v}", side, ours_same, side.get("agreement")))
    if not rows:
        raise ValueError(f"{results_path(path).name} has no minilm rows; rerun `make crosscheck-minilm`")
    return pd.DataFrame(rows)
