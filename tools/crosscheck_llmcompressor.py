"""llm-compressor's SparseGPT and GPTQ on tiny-opt, on the workbook's own calibration windows.

Runs in .venv-crosscheck (requirements/crosscheck.txt: llm-compressor and the transformers it
pins, with peakllm installed --no-deps for its loader and data). For every method of
``peakllm.workbook.crosscheck.METHODS`` and every calibration seed it loads tiny-opt the way
``peakllm.models.loading`` does, runs ``llmcompressor.oneshot`` with the modifier set to our
settings ("matched"), saves the compressed linear weights (safetensors) and times the call;
more runs keep one of llm-compressor's own defaults each, so the effect of every difference
is measured. ``tools/crosscheck.py`` (workbook venv) compares them with ours.

    .venv-crosscheck/bin/python tools/crosscheck_llmcompressor.py [--seeds 0 1 2] [--out DIR]

``--model minilm`` (``make crosscheck-minilm``) does the same for notebook 13's encoder,
all-MiniLM-L6-v2 (``BertModel``), on its padded calibration lines with their attention mask:
the three methods of ``cc.MINILM_METHODS`` with our settings, the pooler left alone as ours
leaves it; ``--variants`` adds each on the same lines unpadded, one line per batch (padding
never enters its Hessians then), which measures what padding does to it.

    .venv-crosscheck/bin/python tools/crosscheck_llmcompressor.py --model minilm [--variants] [--pipeline P]
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # one bar per calibration batch otherwise
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # two METRIC lines per layer otherwise

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from peakllm.cli import crosscheck as cc  # noqa: E402
from peakllm.core import perplexity  # noqa: E402
from peakllm.core.paths import REPO  # noqa: E402
from peakllm.models.loading import load_model, load_tokenizer  # noqa: E402

OUT = REPO / "runs" / "crosscheck" / "llmcompressor"  # weights: large, never committed


def modifier(method: str, variant: str = "matched", ignore: list | None = None):
    """The llm-compressor modifier for ``method``: our settings, or with one of its defaults kept.
    ``ignore``: the layers it must leave alone (default: tiny-opt's LM head)."""
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    spec = cc.check_method(method)
    common = dict(block_size=cc.PROTOCOL["blocksize"], dampening_frac=cc.PROTOCOL["percdamp"])
    if cc.solver(spec) == "sparsegpt":
        ignore = ignore or ([] if variant == "lm_head pruned too (default targets)" else ["re:.*lm_head"])
        return SparseGPTModifier(sparsity=spec["sparsity"], targets=["Linear"], ignore=ignore,
                                 mask_structure="0:0" if spec["pattern"] == "unstructured" else spec["pattern"],
                                 **common)
    ignore = ignore or ["lm_head"]
    if variant == USUAL:  # the preset its examples use, every other setting at its default
        return GPTQModifier(scheme=f"W{spec['bits']}A16", targets=["Linear"], ignore=ignore)
    weights = dict(num_bits=spec["bits"], type="int", strategy="channel", symmetric=variant == "symmetric grid")
    actorder = "static" if variant == "static act order (default)" else None
    return GPTQModifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}},
                        ignore=ignore, actorder=actorder, **common)


BATCH = 8  # calibration windows per forward, as ours (pruning.prune's batch_size); its default is 1
USUAL = "W4A16 preset (symmetric, groups of 128, static act order)"
ORDER = cc.REORDERED  # its run-to-run spread from the summation order alone
VARIANTS = {"sparsegpt 50%": [ORDER, "lm_head pruned too (default targets)"], "sparsegpt 2:4": [ORDER],
            "gptq 4-bit": [ORDER, "static act order (default)", "symmetric grid", USUAL]}


def defaults() -> dict:
    """llm-compressor's own defaults, read from its classes and its oneshot signature."""
    from compressed_tensors.quantization import QuantizationArgs, preset_name_to_scheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    def fields(cls, names):
        return {n: repr(cls.model_fields[n].get_default(call_default_factory=True)) for n in names}

    sig = inspect.signature(oneshot).parameters
    return {"SparseGPTModifier": fields(SparseGPTModifier, ["block_size", "dampening_frac", "mask_structure",
                                                            "targets", "ignore"]),
            "GPTQModifier": fields(GPTQModifier, ["block_size", "dampening_frac", "actorder", "ignore"]),
            "QuantizationArgs": fields(QuantizationArgs, ["symmetric", "strategy", "group_size", "observer"]),
            "W4A16": preset_name_to_scheme("W4A16", ["Linear"]).weights.model_dump(
                include={"num_bits", "symmetric", "strategy", "group_size"}, mode="json"),
            "oneshot": {n: repr(sig[n].default) for n in ["num_calibration_samples", "max_seq_length", "batch_size",
                                                           "shuffle_calibration_samples", "pipeline"]}}


@torch.no_grad()
def same_inputs(calib, model_name: str | None = None, methods: dict | None = None) -> dict:
    """Both implementations layer by layer on identical inputs -- the dense model's weights (tiny-opt,
    or ``model_name``) and the Hessians of its inputs on ``calib`` (for padded lines: their real
    tokens, as our driver takes them) -- through llm-compressor's own solver functions
    (``sparsify_weight``, ``quantize_weight``; qparams as its min-max observer computes them):
    share of equal mask (grid) entries and the largest weight difference. This isolates the
    algorithms from the pipelines around them (batching, summation order, propagation)."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import sparsify_weight

    from peakllm.compress.pruning import parse_pattern

    model = load_model(model_name or cc.PROTOCOL["model"], device="cpu")
    H, dense = cc.input_hessians(model, calib), cc.linear_weights(model)
    B, damp = cc.PROTOCOL["blocksize"], cc.PROTOCOL["percdamp"]
    out = {}
    for method, spec in (methods or cc.METHODS).items():
        ours, theirs = {}, {}
        for n, W in dense.items():
            ours[n] = cc.solve(W, H[n], spec, B, damp)
            if cc.solver(spec) == "sparsegpt":
                pn, pm = parse_pattern(spec["pattern"])
                other = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
                other.weight.copy_(W)
                theirs[n] = sparsify_weight(other, {other: H[n].clone()}, spec["sparsity"], pn, pm, B, damp, False)[1]
            else:
                qa = QuantizationArgs(num_bits=spec["bits"], type="int", strategy="channel", symmetric=False)
                scale, zp = calculate_qparams(W.min(dim=1, keepdim=True).values, W.max(dim=1, keepdim=True).values, qa)
                theirs[n] = quantize_weight(W[None].clone(), H[n][None].clone(), scale[None], zp[None], None, qa,
                                            B, damp)[0][0]
        agree = (cc.mask_agreement(ours, theirs) if cc.solver(spec) == "sparsegpt"
                 else cc.grid_agreement(dense, ours, theirs, spec["bits"]))
        out[method] = {"agreement": agree["overall"], "layers": len(dense),
                       "max_abs_diff": max((ours[n] - theirs[n]).abs().max().item() for n in dense)}
        print(f"{method}, layer by layer on identical inputs: {agree['overall']:.4%} equal, largest weight "
              f"difference {out[method]['max_abs_diff']:.2g}", flush=True)
    return out


def run(method: str, seed: int, calib: torch.Tensor, texts: dict, variant: str, out: Path) -> dict:
    from datasets import Dataset
    from llmcompressor import oneshot

    model = load_model(cc.PROTOCOL["model"], device="cpu")
    head = model.get_output_embeddings().weight.detach().clone()  # tied to the input embeddings
    mod = modifier(method, variant)
    # its default shuffles the windows with torch's global generator: seeded, a rerun takes the same order
    torch.manual_seed(seed + (1000 if variant == ORDER else 0))
    t0 = time.perf_counter()
    oneshot(model=model, dataset=Dataset.from_dict({"input_ids": calib.tolist()}), recipe=mod,
            num_calibration_samples=len(calib), max_seq_length=calib.shape[1], batch_size=BATCH)
    seconds = time.perf_counter() - t0
    weights = cc.linear_weights(model)
    if not torch.equal(head, model.get_output_embeddings().weight):  # only where the LM head was compressed too
        weights[cc.HEAD] = model.get_output_embeddings().weight.detach().float().clone()
    stem = method.replace(" ", "_").replace(":", "of").replace("%", "pct")
    file = f"{stem}-{variant.split()[0]}-seed{seed}.safetensors"
    save_file({n: w.contiguous() for n, w in weights.items()}, str(out / file))
    ppl = perplexity.evaluate(model, texts, digits=cc.DIGITS)
    print(f"llm-compressor {method} ({variant}) seed {seed}: {seconds:.1f} s, ppl {ppl}", flush=True)
    return {"method": method, "variant": variant, "seed": seed, "seconds": seconds, "file": file,
            "perplexity_here": ppl, "sparsity": cc.sparsity(cc.linear_weights(model)),
            "modifier": json.loads(mod.model_dump_json(exclude_none=True))}


# ---- MiniLM (notebook 13): a BertModel on padded lines --------------------------------------

MINILM_OUT = REPO / "runs" / "crosscheck" / "llmcompressor-minilm"
MINILM_IGNORE = ["re:.*pooler.*"]  # BertModel's pooler: outside the blocks (ours leaves it), unused by the embedding


def minilm_dataset(calib: dict, variant: str):
    """(datasets.Dataset, batch size): the padded lines as they are, in batches of 8 (its hooks
    then fold the padding positions into H too), or -- ``cc.UNPADDED`` -- each line's real tokens
    alone in batches of one (no padding anywhere: H from the same tokens as ours)."""
    from datasets import Dataset

    if variant == cc.UNPADDED:
        ids = cc.unpad(calib)
        return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}), 1
    return Dataset.from_dict({"input_ids": calib["input_ids"].tolist(),
                              "attention_mask": calib["attention_mask"].tolist()}), BATCH


def run_minilm(method: str, seed: int, calib: dict, variant: str, out: Path, pipeline: str | None,
               tokenizer, lines: list, dense_emb: torch.Tensor) -> dict:
    """One oneshot of llm-compressor on a fresh MiniLM with notebook 13's calibration lines of
    ``seed`` (the attention mask in every batch), its compressed block weights saved, its scores
    on the held-out lines computed here too (a check of the other venv's)."""
    from llmcompressor import oneshot

    from peakllm.core import embeddings

    model = load_model(cc.MINILM["model"], device="cpu")
    mod = modifier(method, ignore=MINILM_IGNORE)
    ds, batch = minilm_dataset(calib, variant)
    torch.manual_seed(seed)  # its default shuffle draws from torch's global generator
    kw = {} if pipeline is None else {"pipeline": pipeline}
    t0 = time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=mod, num_calibration_samples=len(ds),
            max_seq_length=calib["input_ids"].shape[1], batch_size=batch, **kw)
    seconds = time.perf_counter() - t0
    weights = cc.linear_weights(model)
    stem = method.replace(" ", "_").replace(":", "of").replace("%", "pct")
    file = f"{stem}-{variant.split()[0]}-seed{seed}.safetensors"
    save_file({n: w.contiguous() for n, w in weights.items()}, str(out / file))
    scores = cc.embedding_scores(dense_emb, embeddings.embed(model, tokenizer, lines))
    print(f"llm-compressor {method} ({variant}) seed {seed}: {seconds:.1f} s, 1 - cos {scores['1 - cos']:.4f}, "
          f"recall@1 {scores['recall@1']:.3f}", flush=True)
    return {"method": method, "variant": variant, "seed": seed, "seconds": seconds, "file": file,
            "scores_here": scores, "sparsity": cc.sparsity(weights), "batch_size": batch,
            "modifier": json.loads(mod.model_dump_json(exclude_none=True))}


def main_minilm(args) -> int:
    """llm-compressor on MiniLM: every method of ``cc.MINILM_METHODS`` on every seed's lines, padded
    as notebook 13 calibrates; ``--variants``: also on the same lines unpadded, one per batch."""
    from peakllm.core import embeddings

    out = args.out or MINILM_OUT
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cc.MINILM["model"])
    calibs = cc.minilm_calibration(tokenizer, args.seeds, args.samples)
    lines = cc.minilm_eval_lines()
    dense_emb = embeddings.embed(load_model(cc.MINILM["model"], device="cpu"), tokenizer, lines)
    start = time.perf_counter()
    identical = same_inputs(calibs[args.seeds[0]], cc.MINILM["model"], cc.MINILM_METHODS)
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            runs.append(run_minilm(method, seed, calibs[seed], "matched", out, args.pipeline, tokenizer, lines,
                                   dense_emb))
        for seed in args.seeds[: args.variant_seeds] if args.variants else []:
            runs.append(run_minilm(method, seed, calibs[seed], cc.UNPADDED, out, args.pipeline, tokenizer, lines,
                                   dense_emb))
    meta = {"model": cc.MINILM["model"],
            "versions": {k: version(k) for k in ["llmcompressor", "compressed-tensors", "torch", "transformers"]},
            "threads": torch.get_num_threads(), "calib_samples": args.samples or cc.MINILM["calib_samples"],
            "batch_size": BATCH, "pipeline": args.pipeline or "its default (inferred: sequential)",
            "calibration_sha256": {s: cc.lines_digest(c) for s, c in calibs.items()},
            "padding_share": {s: cc.padding_share(c) for s, c in calibs.items()},
            "eval_lines": len(lines), "eval_sha256": cc.text_digest(lines), "defaults": defaults(),
            "same_inputs": identical | {"seed": args.seeds[0]}, "runs": runs}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(runs)} MiniLM runs to {out} in {time.perf_counter() - start:.0f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny-opt", "minilm"], default="tiny-opt",
                   help="minilm: notebook 13's encoder on its padded calibration lines (make crosscheck-minilm)")
    p.add_argument("--pipeline", default=None, help="minilm: oneshot's calibration pipeline (default: its own choice)")
    p.add_argument("--variants", action="store_true", help="minilm: also the unpadded lines, batch 1")
    p.add_argument("--seeds", type=int, nargs="+", default=cc.PROTOCOL["seeds"])
    p.add_argument("--methods", nargs="+", default=None, choices=list(cc.METHODS | cc.MINILM_METHODS))
    p.add_argument("--samples", type=int, default=None, help="calibration windows (lines) per seed")
    p.add_argument("--no-variants", action="store_true", help="only the runs with our settings")
    p.add_argument("--variant-seeds", type=int, default=None, help="run the variants on the first N seeds (all)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.model == "minilm":
        args.methods = args.methods or list(cc.MINILM_METHODS)
        return main_minilm(args)
    args.methods = args.methods or list(cc.METHODS)
    args.samples = args.samples or cc.PROTOCOL["calib_samples"]
    args.out = args.out or OUT
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cc.PROTOCOL["model"])
    ctx = perplexity.context_length(load_model(cc.PROTOCOL["model"], device="cpu"))
    calibs = cc.calibration_sets(tokenizer, ctx, args.seeds, args.samples)
    texts, scope = cc.eval_texts(tokenizer, ctx)
    start = time.perf_counter()
    identical = same_inputs(calibs[args.seeds[0]])
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            runs.append(run(method, seed, calibs[seed], texts, "matched", args.out))
        for variant in [] if args.no_variants else VARIANTS.get(method, []):
            for seed in args.seeds[: args.variant_seeds]:
                runs.append(run(method, seed, calibs[seed], texts, variant, args.out))
    meta = {"versions": {k: version(k) for k in ["llmcompressor", "compressed-tensors", "torch", "transformers"]},
            "threads": torch.get_num_threads(), "calib_samples": args.samples, "batch_size": BATCH,
            "calibration_sha256": {s: cc.digest(c) for s, c in calibs.items()},
            "eval_sha256": {d: cc.digest(t) for d, t in texts.items()}, "scope": scope, "defaults": defaults(),
            "same_inputs": identical | {"seed": args.seeds[0]},
            "runs": runs}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(runs)} runs to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
