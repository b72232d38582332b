"""Ours beside llm-compressor on tiny-opt: the second half of ``make crosscheck`` (workbook venv).

Reads what tools/crosscheck_llmcompressor.py left in runs/crosscheck/llmcompressor/ (weights
and meta.json), checks that both sides read the very same calibration and evaluation windows
(sha256), runs our SparseGPT and GPTQ (``peakllm.compress``, the one driver) on each seed's
windows, and measures both sides with the same code (``peakllm.workbook.crosscheck``):
perplexity on notebook 10's evaluation windows, mask / grid agreement, per-layer relative
output and weight error, time; and the noise floor two exact implementations share: ours on
the same windows in another order. Writes data/results/crosscheck/results.json, prints the table, and
removes llm-compressor's weight files (--keep-weights keeps them).

    .venv/bin/python tools/crosscheck.py [--results data/results/crosscheck/results.json] [--keep-weights]

``--model minilm`` (``make crosscheck-minilm``) compares on notebook 13's encoder instead: its
padded calibration lines (sha256 of ids and mask), its scores on its held-out lines (1 - cos,
recall@1), mask / grid agreement, per-layer errors (real tokens' H), time; and which Hessian
llm-compressor's first block was solved with (real tokens only, or padding included). It writes
the ``minilm`` part of results.json and keeps the rest.
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
from peakllm.cli import crosscheck as cc
from peakllm.compress import gptq, pruning
from peakllm.core import perplexity, spread
from peakllm.core.paths import REPO, atomic_write_text
from peakllm.core.timing import Timer
from peakllm.models import load_model, load_tokenizer
from peakllm.workbook import crosscheck as results


def ours(method: str, calib, model_name: str | None = None):
    """(model, seconds): a fresh tiny-opt (or ``model_name``) compressed by our implementation on
    ``calib`` (windows, or padded lines), timed with its forwards."""
    spec = cc.check_method(method)
    model = load_model(model_name or cc.PROTOCOL["model"], device="cpu")
    solver = dict(blocksize=cc.PROTOCOL["blocksize"], percdamp=cc.PROTOCOL["percdamp"], progress=False)
    with Timer() as t:
        if cc.solver(spec) == "sparsegpt":
            pruning.prune(model, calib, "sparsegpt", spec["sparsity"], spec["pattern"], **solver)
        else:
            gptq.quantize_model(model, calib, "gptq", spec["bits"], **solver)
    return model, t.seconds


def theirs(file: Path, model_name: str | None = None):
    """A fresh tiny-opt (or ``model_name``) whose block linear layers (and LM head, where it
    compressed that too) hold llm-compressor's compressed weights."""
    from peakllm.models.structure import all_linear_layers

    model = load_model(model_name or cc.PROTOCOL["model"], device="cpu")
    saved = load_file(str(file))
    layers = all_linear_layers(model) | {cc.HEAD: model.get_output_embeddings()}
    if set(saved) - {cc.HEAD} != set(layers) - {cc.HEAD}:
        raise ValueError(f"{file.name}: layers {sorted((set(saved) ^ set(layers)) - {cc.HEAD})} on one side only")
    with torch.no_grad():
        for n, w in saved.items():
            layers[n].weight.copy_(w)  # the head is tied to the input embeddings: both change, as there
    return model


def versions(meta: dict) -> dict:
    """The package versions behind both sides: ours here, llm-compressor's as its venv recorded them."""
    return {"ours": {"peakllm": peakllm.__version__, "torch": version("torch"), "transformers": version("transformers")},
            "llmcompressor": meta["versions"]}


def save(args, src: Path, **parts) -> None:
    """Write ``parts`` into the results file, keeping what the other half (tiny-opt or MiniLM) wrote
    there, then delete llm-compressor's weight files in ``src`` (measured and recorded: no longer
    needed) unless ``--keep-weights``."""
    import datetime
    import os

    from peakllm.core.hardware import cpuinfo

    res = results.load(args.results) or {}
    half = "minilm" if "minilm" in parts else "tiny-opt"
    if half == "tiny-opt":  # the tiny-opt half rewrites the whole file but make crosscheck-minilm's part
        res = {k: v for k, v in res.items() if k in ("minilm", "measured")}
    measured = res.pop("measured", {}) | {half: {  # where and when each half ran (the notebooks cite it)
        "date": datetime.date.today().isoformat(), "cpu": cpuinfo("model name") or "unknown",
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "device": "cpu"}}
    atomic_write_text(args.results, json.dumps(res | parts | {"measured": measured}, indent=1) + "\n")
    if not args.keep_weights:
        for f in src.glob("*.safetensors"):
            f.unlink()


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


# ---- MiniLM (notebook 13) -------------------------------------------------------------------

def first_block(dense: dict, w_theirs: dict, H_real: dict, H_pad: dict, spec: dict) -> dict:
    """Which Hessian llm-compressor's first block was solved with. Its first block reads the dense
    model's inputs on either side, so our solver on the dense inputs' H -- real tokens only (ours),
    or every padded position too -- must reproduce it up to summation order: the share of mask
    (grid) entries of its first block equal to each."""
    names = [n for n in dense if ".layer.0." in n]
    sub = {n: dense[n] for n in names}
    measure = (cc.mask_agreement if cc.solver(spec) == "sparsegpt"
               else lambda a, b: cc.grid_agreement(sub, a, b, spec["bits"]))
    theirs0 = {n: w_theirs[n] for n in names}
    return {k: measure({n: cc.solve(dense[n], H[n], spec, cc.MINILM['blocksize'], cc.MINILM['percdamp']) for n in names},
                          theirs0)["overall"]
            for k, H in (("real tokens only", H_real), ("padding included", H_pad))}


def main_minilm(args) -> int:
    """The MiniLM half (``--model minilm``): ours on notebook 13's padded calibration lines of every
    seed llm-compressor ran, both scored on its held-out lines with the same code; results.json's
    ``minilm`` part (the rest of the file kept)."""
    from peakllm.core import embeddings

    start = time.perf_counter()
    src = args.weights / "llmcompressor-minilm"
    if not (src / "meta.json").exists():
        sys.exit(f"{src / 'meta.json'} not found: run tools/crosscheck_llmcompressor.py --model minilm in "
                 ".venv-crosscheck first (make crosscheck-minilm does both)")
    meta = json.loads((src / "meta.json").read_text())
    name = cc.MINILM["model"]
    model, tokenizer = load_model(name, device="cpu"), load_tokenizer(name)
    seeds = sorted({r["seed"] for r in meta["runs"] if r["variant"] == "matched"})
    calibs = cc.minilm_calibration(tokenizer, seeds, meta["calib_samples"])
    for s, c in calibs.items():
        if cc.lines_digest(c) != meta["calibration_sha256"][str(s)]:
            sys.exit(f"seed {s}: llm-compressor's calibration lines differ from ours (sha256); rerun both halves")
    lines = cc.minilm_eval_lines(meta["eval_lines"])
    if cc.text_digest(lines) != meta["eval_sha256"]:
        sys.exit("the held-out lines differ between the two environments; rerun both halves")
    dense_emb = embeddings.embed(model, tokenizer, lines)
    dense = cc.linear_weights(model)
    H_real = {s: cc.input_hessians(model, c) for s, c in calibs.items()}
    H_pad = {s: cc.input_hessians(model, c, padding=True) for s, c in calibs.items()}
    score = lambda m: cc.embedding_scores(dense_emb, embeddings.embed(m, tokenizer, lines))  # noqa: E731
    methods = {}
    for method, spec in cc.MINILM_METHODS.items():
        runs = [r for r in meta["runs"] if r["method"] == method]
        matched = {r["seed"]: r for r in runs if r["variant"] == "matched"}
        if not matched:
            continue
        measure = (cc.mask_agreement if cc.solver(spec) == "sparsegpt"
                   else lambda a, b, bits=spec["bits"]: cc.grid_agreement(dense, a, b, bits))
        side = {k: {**{sc: [] for sc in results.SCORES}, "seconds": [], "sparsity": [], "errors": []}
                for k in ("ours", "llmcompressor")}
        agree, block0, w_ours_of = [], [], {}
        for s in seeds:
            m, secs = ours(method, calibs[s], name)
            w_ours_of[s] = w_ours = cc.linear_weights(m)
            m_theirs = theirs(src / matched[s]["file"], name)
            w_theirs = cc.linear_weights(m_theirs)
            for k, mm, w, t in (("ours", m, w_ours, secs), ("llmcompressor", m_theirs, w_theirs, matched[s]["seconds"])):
                for sc, v in score(mm).items():
                    side[k][sc].append(v)
                side[k]["seconds"].append(t)
                side[k]["sparsity"].append(cc.sparsity(w))
                side[k]["errors"].append(cc.layer_errors(dense, w, H_real[s]))
            agree.append(measure(w_ours, w_theirs))
            block0.append(first_block(dense, w_theirs, H_real[s], H_pad[s], spec))
            print(f"{method} seed {s}: ours 1 - cos {side['ours']['1 - cos'][-1]:.4f} recall@1 "
                  f"{side['ours']['recall@1'][-1]:.3f} ({secs:.1f} s); llm-compressor "
                  f"{side['llmcompressor']['1 - cos'][-1]:.4f} {side['llmcompressor']['recall@1'][-1]:.3f} "
                  f"({matched[s]['seconds']:.1f} s; its own venv: {matched[s]['scores_here']['1 - cos']:.4f}); "
                  f"{agree[-1]['overall']:.2%} equal; first block {block0[-1]}", flush=True)
        for k in side:
            side[k]["errors"] = mean_errors(side[k]["errors"])
        side["llmcompressor"]["scores_own_venv"] = {sc: [matched[s]["scores_here"][sc] for s in seeds]
                                                    for sc in results.SCORES}
        variants = {}
        for r in runs:
            if r["variant"] == "matched":
                continue
            v = variants.setdefault(r["variant"], {**{sc: [] for sc in results.SCORES}, "seeds": [], "seconds": [],
                                                   "sparsity": [], "overall": [], "errors": []})
            mv = theirs(src / r["file"], name)
            wv = cc.linear_weights(mv)
            for sc, x in score(mv).items():
                v[sc].append(x)
            v["seeds"].append(r["seed"])
            v["seconds"].append(r["seconds"])
            v["sparsity"].append(cc.sparsity(wv))
            v["overall"].append(measure(w_ours_of[r["seed"]], wv)["overall"])
            v["errors"].append(cc.layer_errors(dense, wv, H_real[r["seed"]]))
        for v in variants.values():
            v["errors"] = mean_errors(v["errors"])
            at = [seeds.index(s) for s in v["seeds"]]
            v["agreement"] = {"kind": "grid" if cc.solver(spec) == "gptq" else "mask", "overall": v.pop("overall")}
            for sc in results.SCORES:
                v[f"ours (same seeds) {sc}"] = [side["ours"][sc][i] for i in at]
            if len(at) > 1:
                v["gap"] = {sc: cc.gap_check(v[f"ours (same seeds) {sc}"], v[sc]) for sc in results.SCORES}
        methods[method] = {
            "setting": spec["setting"], "ours": side["ours"], "llmcompressor": side["llmcompressor"],
            "gap": {sc: cc.gap_check(side["ours"][sc], side["llmcompressor"][sc]) for sc in results.SCORES},
            "agreement": {"kind": "grid" if cc.solver(spec) == "gptq" else "mask",
                          "overall": [a["overall"] for a in agree],
                          "per_layer": {n: sum(a["per_layer"][n] for a in agree) / len(agree) for n in dense}},
            "first_block_agreement": block0, "same_inputs": meta.get("same_inputs", {}).get(method),
            "modifier": matched[seeds[0]]["modifier"], "variants": variants}
    part = {"model": name, "protocol": cc.MINILM | {"seeds": seeds, "calib_samples": meta["calib_samples"]},
            "evaluation": {"lines": len(lines), "scope": f"the first {len(lines)} test lines of five words or more",
                           "scores": "1 - cos: 1 - mean cos(dense, compressed embedding); recall@1: share of lines "
                                     "whose nearest other line is the dense model's (notebook 13)"},
            "padding_share": meta["padding_share"], "pipeline": meta["pipeline"],
            "time": "wall seconds of one whole-model compression, calibration forwards included, 2 CPU threads",
            "versions": versions(meta), "methods": methods}
    save(args, src, minilm=part)
    for method, m in methods.items():
        g = m["gap"]
        print(f"{method:22s} ours 1 - cos {spread.fmt(m['ours']['1 - cos'], 4)} recall@1 "
              f"{spread.fmt(m['ours']['recall@1'], 3)}; llm-compressor {spread.fmt(m['llmcompressor']['1 - cos'], 4)}"
              f" {spread.fmt(m['llmcompressor']['recall@1'], 3)}; max gap {g['1 - cos']['max_gap']:.4f} vs 2 sd "
              f"{g['1 - cos']['two_sd']:.4f}, {g['recall@1']['max_gap']:.3f} vs {g['recall@1']['two_sd']:.3f} -> "
              f"{'within' if all(x['within'] for x in g.values()) else 'OUTSIDE'}; {m['agreement']['kind']} agreement "
              f"{sum(m['agreement']['overall']) / len(m['agreement']['overall']):.2%}")
        if m["same_inputs"]:
            print(f"    layer by layer on identical inputs: {m['same_inputs']['agreement']:.4%} equal")
        b0 = {k: sum(b[k] for b in m["first_block_agreement"]) / len(m["first_block_agreement"])
              for k in m["first_block_agreement"][0]}
        print("    its first block against our solver on the dense inputs' H: " +
              ", ".join(f"{k} {x:.2%} equal" for k, x in b0.items()))
        err = {k: sum(e["output"] for e in m[k]["errors"].values()) / len(m[k]["errors"]) for k in ("ours", "llmcompressor")}
        print(f"    mean per-layer relative output error (real tokens): ours {err['ours']:.4f}, "
              f"llm-compressor {err['llmcompressor']:.4f}")
        for v_name, v in m["variants"].items():
            print(f"    llm-compressor with {v_name}: 1 - cos {spread.fmt(v['1 - cos'], 4)}, recall@1 "
                  f"{spread.fmt(v['recall@1'], 3)} (seeds {v['seeds']}; ours {spread.fmt(v['ours (same seeds) 1 - cos'], 4)}"
                  f"); agreement with ours {sum(v['agreement']['overall']) / len(v['agreement']['overall']):.2%}")
    print(f"wrote the minilm part of {args.results} in {time.perf_counter() - start:.0f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=results.RESULTS)
    p.add_argument("--weights", type=Path, default=REPO / "runs" / "crosscheck",
                   help="folder of llm-compressor's runs (its llmcompressor/ and llmcompressor-minilm/)")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep llm-compressor's compressed weights (about 370 MB) after results.json is written")
    p.add_argument("--model", choices=["tiny-opt", "minilm"], default="tiny-opt",
                   help="minilm: notebook 13's encoder (make crosscheck-minilm)")
    args = p.parse_args(argv)
    if args.model == "minilm":
        return main_minilm(args)
    start = time.perf_counter()
    src = args.weights / "llmcompressor"
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
           "versions": versions(meta),
           "settings": settings_table(meta["defaults"], meta["calib_samples"], meta["batch_size"]), "methods": methods}
    save(args, src, **res)
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
