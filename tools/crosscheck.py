"""Ours beside llm-compressor on tiny-opt: the second half of ``make crosscheck`` (workbook venv).

Reads what tools/crosscheck_llmcompressor.py left in runs/crosscheck/llmcompressor/ (weights
and meta.json), checks that both sides read the very same calibration and evaluation windows
(sha256), runs our SparseGPT and GPTQ (``peakllm.compress``, the one driver) on each seed's
windows, and measures both sides with the same code (``peakllm.workbook.crosscheck``):
perplexity on notebook 10's evaluation windows, mask / grid agreement, per-layer relative
output and weight error, time; and the noise floor two exact implementations share: ours on
the same windows in another order. Writes runs/crosscheck/results.json, prints the table, and
removes llm-compressor's weight files (--keep-weights keeps them).

    .venv/bin/python tools/crosscheck.py [--results runs/crosscheck/results.json] [--keep-weights]
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file

import peakllm
from peakllm.compress import gptq, pruning
from peakllm.core import perplexity, spread
from peakllm.core.paths import atomic_write_text
from peakllm.core.timing import Timer
from peakllm.models import load_model, load_tokenizer
from peakllm.workbook import crosscheck as cc


def ours(method: str, calib: torch.Tensor):
    """(model, seconds): a fresh tiny-opt compressed by our implementation, timed with its forwards."""
    spec = cc.check_method(method)
    model = load_model(cc.PROTOCOL["model"], device="cpu")
    solver = dict(blocksize=cc.PROTOCOL["blocksize"], percdamp=cc.PROTOCOL["percdamp"], progress=False)
    with Timer() as t:
        if spec["family"] == "sparsegpt":
            pruning.prune(model, calib, "sparsegpt", spec["sparsity"], spec["pattern"], **solver)
        else:
            gptq.quantize_model(model, calib, "gptq", spec["bits"], **solver)
    return model, t.seconds


def theirs(file: Path):
    """A fresh tiny-opt whose block linear layers (and LM head, where it compressed that too)
    hold llm-compressor's compressed weights."""
    from peakllm.compress.sequential import all_linear_layers

    model = load_model(cc.PROTOCOL["model"], device="cpu")
    saved = load_file(str(file))
    layers = all_linear_layers(model) | {cc.HEAD: model.get_output_embeddings()}
    if set(saved) - {cc.HEAD} != set(layers) - {cc.HEAD}:
        raise ValueError(f"{file.name}: layers {sorted((set(saved) ^ set(layers)) - {cc.HEAD})} on one side only")
    with torch.no_grad():
        for n, w in saved.items():
            layers[n].weight.copy_(w)  # the head is tied to the input embeddings: both change, as there
    return model


def mean_errors(per_seed: list[dict]) -> dict:
    return {n: {k: sum(e[n][k] for e in per_seed) / len(per_seed) for k in ("output", "weight")}
            for n in per_seed[0]}


def settings_table(defaults: dict, samples: int, batch: int) -> list[dict]:
    """Ours, llm-compressor's defaults (read from its code by the runner) and what the matched runs used."""
    p = inspect.signature(pruning.prune).parameters
    sg, gq, qa, one, w4 = (defaults[k] for k in ("SparseGPTModifier", "GPTQModifier", "QuantizationArgs", "oneshot",
                                                 "W4A16"))
    P = cc.PROTOCOL
    return [
        {"setting": "dampening (share of mean diag H)", "ours": p["percdamp"].default,
         "llm-compressor default": f"SparseGPT {sg['dampening_frac']}, GPTQ {gq['dampening_frac']}",
         "cross-check": P["percdamp"]},
        {"setting": "block size (columns)", "ours": p["blocksize"].default,
         "llm-compressor default": f"SparseGPT {sg['block_size']}, GPTQ {gq['block_size']}",
         "cross-check": P["blocksize"]},
        {"setting": "layers compressed", "ours": "every nn.Linear inside the decoder blocks (not the LM head)",
         "llm-compressor default": f"targets {sg['targets']}, ignore {sg['ignore']}: the LM head too (it warns)",
         "cross-check": "ignore lm_head (same layers as ours)"},
        {"setting": "GPTQ grid", "ours": "per row, asymmetric min-max (0 always on the grid)",
         "llm-compressor default": f"symmetric={qa['symmetric']}, observer {qa['observer']} -> memoryless min-max; "
                                   f"its W4A16 preset: symmetric={w4['symmetric']}, {w4['strategy']} of "
                                   f"{w4['group_size']} columns",
         "cross-check": "strategy channel, symmetric=False"},
        {"setting": "GPTQ column order", "ours": "left to right (no act order)",
         "llm-compressor default": f"actorder {gq['actorder']} (static: columns by descending diag H)",
         "cross-check": "actorder None"},
        {"setting": "unstructured mask per block", "ours": "exactly floor(s * rows * B) lowest w²/[H⁻¹]²_jj",
         "llm-compressor default": "all at or below the floor(s * rows * B)-th lowest: one more (plus ties)",
         "cross-check": "as each library does it"},
        {"setting": "sequential", "ours": "block by block, next block fed the compressed block's outputs",
         "llm-compressor default": f"pipeline {one['pipeline']} -> sequential per decoder layer, propagate_error=True",
         "cross-check": "defaults"},
        {"setting": "calibration", "ours": f"{P['calib_samples']} windows of the context (notebook 10), batches of 8",
         "llm-compressor default": f"num_calibration_samples {one['num_calibration_samples']}, batch_size "
                                   f"{one['batch_size']}, shuffle {one['shuffle_calibration_samples']}",
         "cross-check": f"the same {samples} token windows per seed (sha256 checked), batches of {batch}, "
                        "shuffled as it does by default (torch generator seeded with the calibration seed); "
                        "batching and order change only the summation order of H"},
        {"setting": "Hessian scale", "ours": "H = 2 X Xᵀ / tokens",
         "llm-compressor default": "H = 2 X Xᵀ / sequences (a constant multiple)",
         "cross-check": "no effect: dampening is a share of mean diag H, the sweep is scale-free"},
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=cc.RESULTS)
    p.add_argument("--keep-weights", action="store_true",
                   help="keep llm-compressor's compressed weights (about 370 MB) after results.json is written")
    args = p.parse_args(argv)
    start = time.perf_counter()
    src = args.results.parent / "llmcompressor"
    if not (src / "meta.json").exists():
        sys.exit(f"{src / 'meta.json'} not found: run tools/crosscheck_llmcompressor.py in .venv-crosscheck first "
                 "(make crosscheck does both)")
    meta = json.loads((src / "meta.json").read_text())
    model, tokenizer = load_model(cc.PROTOCOL["model"], device="cpu"), load_tokenizer(cc.PROTOCOL["model"])
    ctx = perplexity.context_length(model)
    seeds = sorted({r["seed"] for r in meta["runs"] if r["variant"] == "matched"})
    calibs = cc.calibration_sets(tokenizer, ctx, seeds, meta["calib_samples"])
    texts, scope = cc.eval_texts(tokenizer, ctx)
    for s, c in calibs.items():  # json keys are strings
        if cc.digest(c) != meta["calibration_sha256"][str(s)]:
            sys.exit(f"seed {s}: llm-compressor's calibration windows differ from ours (sha256); rerun both halves")
    if {d: cc.digest(t) for d, t in texts.items()} != meta["eval_sha256"]:
        sys.exit("the evaluation windows differ between the two environments; rerun both halves")
    dense_ppl = perplexity.evaluate(model, texts, digits=cc.DIGITS)
    dense = cc.linear_weights(model)
    hessians = {s: cc.input_hessians(model, c) for s, c in calibs.items()}
    d0 = next(iter(texts))
    methods = {}
    for method, spec in cc.METHODS.items():
        matched = {r["seed"]: r for r in meta["runs"] if r["method"] == method and r["variant"] == "matched"}
        if not matched:
            continue
        side = {k: {"perplexity": [], "seconds": [], "sparsity": [], "errors": []} for k in ("ours", "llmcompressor")}
        agree, agree_order, reordered = [], [], []
        measure = (cc.mask_agreement if spec["family"] == "sparsegpt"
                   else lambda a, b, bits=spec["bits"]: cc.grid_agreement(dense, a, b, bits))
        for s in seeds:
            m, secs = ours(method, calibs[s])
            w_ours = cc.linear_weights(m)
            # the same windows in another order: how far summation order alone moves our result
            m_re, _ = ours(method, calibs[s][cc.reorder(len(calibs[s]), s)])
            reordered.append(perplexity.evaluate(m_re, texts, digits=cc.DIGITS)[d0])
            agree_order.append(measure(w_ours, cc.linear_weights(m_re)))
            m_theirs = theirs(src / matched[s]["file"])
            w_theirs = cc.linear_weights(m_theirs)
            for k, mm, w, t in (("ours", m, w_ours, secs),
                                ("llmcompressor", m_theirs, w_theirs, matched[s]["seconds"])):
                side[k]["perplexity"].append(perplexity.evaluate(mm, texts, digits=cc.DIGITS)[d0])
                side[k]["seconds"].append(t)
                side[k]["sparsity"].append(cc.sparsity(w))
                side[k]["errors"].append(cc.layer_errors(dense, w, hessians[s]))
            agree.append(measure(w_ours, w_theirs))
            print(f"{method} seed {s}: ours {side['ours']['perplexity'][-1]}, llm-compressor "
                  f"{side['llmcompressor']['perplexity'][-1]} (its own venv: {matched[s]['perplexity_here'][d0]})",
                  flush=True)
        for k in side:
            side[k]["errors"] = mean_errors(side[k]["errors"])
        side["llmcompressor"]["perplexity_own_venv"] = [matched[s]["perplexity_here"][d0] for s in seeds]
        variants = {}
        for r in meta["runs"]:
            if r["method"] == method and r["variant"] != "matched":
                v = variants.setdefault(r["variant"], {"seeds": [], "perplexity": [], "seconds": [], "sparsity": []})
                mv = theirs(src / r["file"])
                v["seeds"].append(r["seed"])
                v["perplexity"].append(perplexity.evaluate(mv, texts, digits=cc.DIGITS)[d0])
                v["seconds"].append(r["seconds"])
                v["sparsity"].append(cc.sparsity(cc.linear_weights(mv)))
        theirs_order = variants.get(cc.REORDERED, {})
        order = {"ours": {"perplexity": reordered, "agreement": [a["overall"] for a in agree_order],
                          "mean_abs_change": cc.mean_abs_change(side["ours"]["perplexity"], reordered)}}
        if theirs_order:
            order["llmcompressor"] = {"perplexity": theirs_order["perplexity"], "mean_abs_change": cc.mean_abs_change(
                [side["llmcompressor"]["perplexity"][seeds.index(s)] for s in theirs_order["seeds"]],
                theirs_order["perplexity"])}
        for v in variants.values():
            at = [seeds.index(s) for s in v["seeds"]]
            v["ours (same seeds)"] = [side["ours"]["perplexity"][i] for i in at]
            v["matched (same seeds)"] = [side["llmcompressor"]["perplexity"][i] for i in at]
            if len(at) > 1:
                v["gap"] = cc.gap_check(v["ours (same seeds)"], v["perplexity"])
        methods[method] = {
            "setting": spec["setting"], "ours": side["ours"], "llmcompressor": side["llmcompressor"],
            "gap": cc.gap_check(side["ours"]["perplexity"], side["llmcompressor"]["perplexity"]),
            "agreement": {"kind": "grid" if spec["family"] == "gptq" else "mask",
                          "overall": [a["overall"] for a in agree],
                          "per_layer": {n: sum(a["per_layer"][n] for a in agree) / len(agree) for n in dense}},
            "same_inputs": meta.get("same_inputs", {}).get(method), "order_noise": order,
            "modifier": matched[seeds[0]]["modifier"], "variants": variants}
    protocol = cc.PROTOCOL | {"seeds": seeds, "calib_samples": meta["calib_samples"], "calib_seqlen": ctx}
    res = {"model": cc.PROTOCOL["model"], "protocol": protocol,
           "evaluation": {"dataset": d0, "scope": scope}, "dense_perplexity": dense_ppl[d0],
           "error_measures": {"output": "||(W - W_hat) X||_F / ||W X||_F, X: the dense model's inputs to the layer "
                                        "on that seed's calibration windows; mean over seeds",
                              "weight": "||W - W_hat||_F / ||W||_F; mean over seeds"},
           "time": "wall seconds of one whole-model compression, calibration forwards included, 2 CPU threads",
           "versions": {"ours": {"peakllm": peakllm.__version__, "torch": version("torch"),
                                 "transformers": version("transformers")},
                        "llmcompressor": meta["versions"]},
           "settings": settings_table(meta["defaults"], meta["calib_samples"], meta["batch_size"]), "methods": methods}
    atomic_write_text(args.results, json.dumps(res, indent=1) + "\n")
    if not args.keep_weights:  # measured and recorded: the weights themselves are no longer needed
        for f in src.glob("*.safetensors"):
            f.unlink()
    for name, m in methods.items():
        g = m["gap"]
        print(f"{name:14s} ours {spread.fmt(m['ours']['perplexity'])}  llm-compressor "
              f"{spread.fmt(m['llmcompressor']['perplexity'])}  max gap {g['max_gap']:.3f} vs 2 sd {g['two_sd']:.3f}"
              f" -> {'within' if g['within'] else 'OUTSIDE'}; {m['agreement']['kind']} agreement "
              f"{sum(m['agreement']['overall']) / len(m['agreement']['overall']):.2%}")
        if m["same_inputs"]:
            print(f"    layer by layer on identical inputs: {m['same_inputs']['agreement']:.4%} equal")
        o = m["order_noise"]
        print(f"    the same windows in another order move ours by {o['ours']['mean_abs_change']:.3f} on average "
              f"(agreement with itself {sum(o['ours']['agreement']) / len(o['ours']['agreement']):.2%}), "
              f"llm-compressor by {o.get('llmcompressor', {}).get('mean_abs_change', float('nan')):.3f}")
        for name_v, v in m["variants"].items():
            print(f"    llm-compressor with {name_v}: {spread.fmt(v['perplexity'])} (seeds {v['seeds']}; matched "
                  f"{spread.fmt(v['matched (same seeds)'])}, ours {spread.fmt(v['ours (same seeds)'])})")
    print(f"dense {dense_ppl[d0]}; wrote {args.results} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
