# %% [markdown]
# # 10.2 · Case study 1: SparseGPT one-shot pruning of the whole model
#
# **Goal.** Reproduce the review's first case study: SparseGPT (Frantar & Alistarh, ICML 2023)
# removes half of a GPT-family model's weights **in one shot, without retraining**. Notebook 10.1
# built its solver on one layer; here the sequential driver takes it through the whole model. We
# compare it with magnitude pruning and Wanda at a moderate and an extreme sparsity and at 2:4,
# each calibrated method over several calibration seeds, time it at the paper's layer shapes, add
# 4-bit quantization, and set our numbers beside the paper's Table 1. On a model this small the
# paper's headline setting, 50%, costs every method little; the extreme sparsity and 2:4 are where
# the methods separate, and section 2 says by how much in each setting. In the lab you give the
# column sweep the 2:4 pattern.
#
# **Prerequisites.** Notebook 10.1 (the OBS step, the column sweep and its lab).
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): under 3 minutes, almost all of it in the
# prune-and-evaluate runs of section 2; the last cell prints the time and the peak memory of this run.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to prune: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
sparsities: list = [0.5, 0.8]  # unstructured sparsities of the method comparison (share of each layer's weights removed)
patterns: list = ["2:4"]  # N:M patterns compared too (N zeros in every M inputs): 2:4, 4:8, or [] for none
methods: list = ["magnitude", "wanda", "sparsegpt"]  # pruning methods to compare
seeds: list = [0, 1, 2]  # calibration seeds: each calibrated method runs once per seed (magnitude needs no data)
calib_dataset: str = "shakespeare"  # calibration text: shakespeare (shipped train split) or c4 (Hub)
calib_samples: int = 128  # calibration windows (the paper: 128)
calib_seqlen: int = 0  # tokens per calibration window; 0 means the model's context (the paper: 2048)
eval_datasets: list = ["shakespeare"]  # perplexity texts: shakespeare, wikitext2, ptb, c4
eval_windows: int = 64  # windows of each evaluation text every pruned model is scored on (0: the whole test split)
blocksize: int = 128  # SparseGPT columns per block (mask selection and lazy updates)
percdamp: float = 0.01  # dampening: this share of the mean Hessian diagonal is added to it
joint_bits: int = 4  # bits of the joint sparsity + quantization step
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds everything that is not a calibration seed
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.compress import bench, formats, obs, pruning, sequential, sparsegpt
from peakllm.core import checks, perplexity, reference, spread, timing
from peakllm.data import evaldata
from peakllm.infer import speak
from peakllm.workbook import compare, crosscheck, explore

# isort: split
from tqdm.auto import tqdm  # after peakllm, which quiets tqdm's notice about missing ipywidgets

rec, dev = peakllm.setup("10_sparsegpt_one_shot_pruning", globals())
checks.choices("methods", methods, pruning.PRUNING_METHODS)
sparsities = [float(s) for s in sparsities]
for s in sparsities:
    checks.in_range("sparsities", s, 0, 1)
for p in patterns:
    pruning.parse_pattern(p)
seeds = checks.seeds("seeds", seeds)
checks.in_range("eval_windows", eval_windows, 0, 10**9)

# %% [markdown]
# ## 1. The model, calibration and evaluation data
#
# Notebook 10.1 pruned one layer on one calibration set. The paper takes 128 random windows of 2,048 tokens from C4's training set, with seed 0.
# Offline we take `calib_samples` random windows of the model's context from the **train** split
# of the corpus -- never from the test plays we evaluate on -- once per calibration seed, so
# that every comparison below comes with its spread over calibration sets. Every pruned model
# is scored on the same fixed windows of the test split (the cell says how many).

# %%
model, tokenizer = models.load(model_name, device=device)
ctx = models.context_length(model)
seqlen = perplexity.check_seqlen(model, calib_seqlen or None)  # 0: the context; longer fails
N = models.count_params(model)["total"]
print(f"{model_name}: N = {N:,} parameters, context {ctx}")
calibs = {s: evaldata.calibration(calib_dataset, tokenizer, calib_samples, seqlen, seed=s) for s in seeds}
calib = calibs[seeds[0]]
print(f"calibration: {len(seeds)} sets of {tuple(calib.shape)} token ids from {calib_dataset!r} (seeds {seeds})")
print(repr(tokenizer.decode(calib[0, :40])))
eval_ids = {d: evaldata.eval_ids(d, tokenizer, ctx) for d in eval_datasets}
total = {d: ids.numel() // ctx for d, ids in eval_ids.items()}
n_eval = {d: min(eval_windows or total[d], total[d]) for d in eval_datasets}
scored = {d: ids[:, : n_eval[d] * ctx] for d, ids in eval_ids.items()}
scope = ", ".join(f"{d}: first {n_eval[d]} of {total[d]} test windows" for d in eval_datasets)
print(f"scored on {scope}")

# %% [markdown]
# ## 2. The whole model, over calibration seeds
#
# The sequential driver (`peakllm.compress.sequential`) runs notebook 10.1's layer solver block after block; block i+1 is
# calibrated on the outputs of the *already pruned* block i. It knows no model family: OPT,
# Llama, Mixtral, BERT and T5/Switch go through the same code.

# %%
show_source(sequential.compress_sequentially)

# %% [markdown]
# Every setting -- each unstructured sparsity and each N:M pattern -- runs every method; Wanda
# and SparseGPT once per calibration seed, magnitude pruning once (it reads no data). Each run
# prunes a fresh copy of the model and is scored on the same windows. The dense model is scored on
# those windows too: the first `eval_windows` of the test split (section 1). Notebooks 00 and 01
# score it on every window of the split, so their dense perplexity differs from this one: the same
# model on more text.

# %%
settings = dict(blocksize=blocksize, percdamp=percdamp)  # the same solver settings for every run
d0 = eval_datasets[0]
dense_ppl = perplexity.evaluate(model, scored)
for d, v in dense_ppl.items():
    rec.add("perplexity", v, "ppl", method="dense", pattern="dense", sparsity=0.0, dataset=d, scope=scope)
grid = [("unstructured", s) for s in sparsities] + [(p, pruning.parse_pattern(p)[0] / pruning.parse_pattern(p)[1]) for p in patterns]
runs = [(pat, s, m, sd) for pat, s in grid for m in methods for sd in (seeds[:1] if m == "magnitude" else seeds)]
results, layer_checks, sparse_24 = [], {}, None
spoken = {"dense": speak.speak(model, tokenizer)}  # one prompt, continued greedily by each model
for pat, s, method, sd in tqdm(runs, desc="prune + evaluate"):
    m, layer_rows, wall = pruning.prune_fresh(model_name, calibs[sd], device, method=method, sparsity=s,
                                              pattern=pat, **settings)
    ppl = perplexity.evaluate(m, scored)
    secs = sum(r["seconds"] for r in layer_rows)  # statistics + solve, without the shared forwards
    setting = f"{s:.0%} unstructured" if pat == "unstructured" else pat
    run_seed = None if method == "magnitude" else sd
    results.append({"setting": setting, "pattern": pat, "sparsity": s, "method": method, "seed": run_seed,
                    **ppl, "prune s": secs, "wall s": wall})
    for d, v in ppl.items():
        rec.add("perplexity", v, "ppl", method=method, pattern=pat, sparsity=s, dataset=d, seed=run_seed, scope=scope)
    rec.add("prune_seconds", secs, "s", method=method, pattern=pat, sparsity=s, seed=run_seed,
            scope="statistics + solve")
    rec.add("prune_wall_seconds", wall, "s", method=method, pattern=pat, sparsity=s, seed=run_seed)
    if sd == seeds[0]:
        layer_checks[(method, setting)] = pruning.sparsity_report(models.structure.all_linear_layers(m), pat)
        if s == max(sparsities) and pat == "unstructured" or pat != "unstructured":
            spoken[f"{method}, {setting}"] = speak.speak(m, tokenizer)
        if (method, pat) == ("sparsegpt", "2:4"):
            sparse_24 = m  # section 6 stores it
    del m
runs_df = pd.DataFrame(results)
ppl_table = spread.table(runs_df, ["setting", "method"], d0)["mean ± sd"].unstack("method")[methods]
ppl_table.insert(0, "dense", f"{dense_ppl[d0]:.2f}")
print(f"{d0} perplexity ({scope}); mean ± sd over calibration seeds {seeds} (magnitude: no data, one run)")
ppl_table

# %% [markdown]
# The same runs drawn: one group per setting, one bar per method, the whiskers ± one standard
# deviation over the calibration seeds (log scale; the dotted line is the dense model).

# %%
stats = runs_df.groupby(["setting", "method"], sort=False)[d0].agg(["mean", "std"]).fillna(0.0)
labels = list(dict.fromkeys(runs_df.setting))
x, width = np.arange(len(labels)), 0.8 / len(methods)
fig, ax = plt.subplots(figsize=(7, 4))
for i, method in enumerate(methods):
    mean = [stats.loc[(lab, method), "mean"] for lab in labels]
    sd = [stats.loc[(lab, method), "std"] for lab in labels]
    ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=sd, capsize=3, label=method)
ax.axhline(dense_ppl[d0], color="k", ls=":", label="dense")
ax.set(xticks=x, xticklabels=labels, yscale="log", ylabel=f"{d0} perplexity", title=f"{model_name}: one-shot pruning")
ax.legend(); fig.tight_layout(); plt.show()

# %% [markdown]
# **Reading it with its noise.** A difference between two methods counts only when it is larger
# than their spread over calibration seeds: where the intervals mean ± sd overlap we call it a
# tie. Each verdict below is computed from the runs above:

# %%
verdicts = []
for lab in labels:
    per = {m: runs_df[(runs_df.setting == lab) & (runs_df.method == m)][d0].tolist() for m in methods}
    for a, b in [("sparsegpt", "magnitude"), ("sparsegpt", "wanda"), ("wanda", "magnitude")]:
        if a in per and b in per:
            v = spread.verdict(per[a], per[b])
            verdicts.append({"setting": lab, "A vs B": f"{a} vs {b}", "A": spread.fmt(per[a]), "B": spread.fmt(per[b]),
                             "verdict": "tie" if v == "tie" else f"{a} {v}"})
pd.DataFrame(verdicts)

# %% tags=["nbval-ignore-output"]
from peakllm.workbook import lessons

calibrated = runs_df[runs_df.seed.notna()].groupby(["setting", "method"])[d0].apply(list)  # per-seed perplexities
peakllm.say(lessons.noise_sentence("10_sparsegpt_one_shot_pruning", "perplexity", calibrated.tolist(), "perplexities"))

# %% tags=["nbval-ignore-output"]
# What this run shows, setting by setting: each method's perplexity as a multiple of dense, and the verdicts
ppl_mean = runs_df.groupby(["setting", "method"])[d0].mean()
lines = []
for lab in labels:
    parts = [f"{m} {ppl_mean[(lab, m)] / dense_ppl[d0]:.2f}x" for m in methods if (lab, m) in ppl_mean]
    said = [(f"{v['A vs B'].split(' vs ')[0]} tied with {v['A vs B'].split(' vs ')[1]}" if v["verdict"] == "tie"
             else f"{v['verdict']} than {v['A vs B'].split(' vs ')[1]}") for v in verdicts if v["setting"] == lab]
    lines.append(f"* **{lab}**: " + ", ".join(parts) + " dense" + (f" ({'; '.join(said)})" if said else "") + ".")
if "wanda" in methods and "magnitude" in methods:
    worse = [lab for lab in labels if spread.verdict(
        runs_df[(runs_df.setting == lab) & (runs_df.method == "wanda")][d0].tolist(),
        runs_df[(runs_df.setting == lab) & (runs_df.method == "magnitude")][d0].tolist()) == "worse"]
    lines.append(f"* Wanda is worse than magnitude pruning in {len(worse)} of the {len(labels)} settings here"
                 + (f" ({', '.join(worse)})" if worse else "") + ": its score weighs each weight by the norm of its input "
                 "feature, built for the few huge input features of large LLMs (exercise 2 looks at this model's).")
peakllm.say("**What this run shows** (perplexity as a multiple of dense; ties called by the seed spread):\n\n" + "\n".join(lines))

# %% [markdown]
# **What the pruned models write.** One prompt from the test split, continued greedily for the same number of tokens by the dense model and by each method's model (first calibration seed) at the extreme sparsity and at each N:M pattern. A perplexity says how much was lost; the words show what that loss looks like.

# %% tags=["nbval-ignore-output"]
print("prompt:", speak.PROMPT)
speak.table(spoken)

# %% [markdown]
# Every layer really is as sparse as asked -- zeros counted, N:M groups checked (the first
# calibration seed's models):

# %%
layer_table = pd.DataFrame([{"method": k[0], "setting": k[1], "layers": len(v),
                             "min sparsity": round(min(r["sparsity"] for r in v), 4),
                             "max sparsity": round(max(r["sparsity"] for r in v), 4),
                             "N:M holds everywhere": all(r["n:m holds"] for r in v) if "n:m holds" in v[0] else "n/a"}
                            for k, v in layer_checks.items()])
assert (layer_table["N:M holds everywhere"] != False).all()  # noqa: E712 (the column holds "n/a" too)
layer_table

# %% [markdown]
# Two rows can differ slightly from the asked sparsity. Where a SparseGPT row's maximum lies a
# little above it, the solver found **dead inputs**: input features that were zero on every
# calibration token (H_jj = 0). Their weights cannot affect the output on that data, so
# `obs.prepare` sets them to zero before the sweep, on top of the mask. Where Wanda's minimum lies
# a little below it, the count was rounded: Wanda removes ⌊s·d⌋ weights from each row of d
# inputs, which is a little under s whenever s·d is not a whole number.

# %% [markdown]
# ### Beside the production library
#
# Practitioners prune with llm-compressor (`SparseGPTModifier`), whose compressed checkpoints vLLM
# serves. `make crosscheck` runs it in a second environment (it pins an older transformers than
# this workbook) on this notebook's default protocol -- `tiny-opt`, the same 128 calibration
# windows per seed, seeds 0-2 -- and scores its pruned weights and ours with one code path
# (`peakllm.workbook.crosscheck`). When its results file exists, the cell below shows both
# libraries' perplexity per setting, llm-compressor's difference to ours read with the same noise
# rule as above, and the share of mask entries both libraries choose alike. The rows after them
# run llm-compressor again: on the same windows in another order (the noise any two exact
# implementations share, since the Hessians are summed in another order), and with its own
# default kept where it differs from ours (it prunes the LM head too). When the file does not
# exist, the cell says how to make it.

# %%
production = crosscheck.production_rows("sparsegpt")  # None, after saying how to make it, without `make crosscheck`
if production is not None:
    display(production)

# %% [markdown]
# ## 3. How long pruning takes
#
# SparseGPT's cost is a Cholesky of each layer's d × d Hessian plus one column sweep; Wanda needs
# only the norm of each input feature. The Wanda paper times both as the time for the pruning
# statistics and the solve, *without* the calibration forwards both methods share; `prune s`
# above is that time, `wall s` the whole run with its forwards:

# %%
timing_table = runs_df.groupby("method", sort=False)[["prune s", "wall s"]].mean()
display(timing_table.map("{:.2f} s".format))
if {"wanda", "sparsegpt"} <= set(methods):
    ratio = timing_table.loc["sparsegpt", "prune s"] / timing_table.loc["wanda", "prune s"]
    print(f"on {model_name}, Wanda needs {ratio:.0f}x less time than SparseGPT for its statistics and solve")

# %% [markdown]
# The solver's time depends on the layer shapes only, not on the weights' values, so
# `peakllm.compress.bench` times it on random weights at OPT-125M's shapes (`python -m peakllm bench`
# does `OPT-1.3B` and a Switch expert too) and adds up the decoder's layers -- beside the paper's
# OPT-175B on one A100:

# %%
bench_rows = bench.run(models=["OPT-125M"], device=dev, repeats=1, rec=rec, progress=False)
display(bench.table(bench_rows, digits=3))
whole = bench.whole_model_seconds(bench_rows, "OPT-125M", "sparsegpt 50%")
rec.add("prune_seconds", round(whole, 2), "s", method="sparsegpt", model="OPT-125M", scope="solver, all layers (bench)")
print(f"SparseGPT 50% solver over all {bench.BLOCKS['OPT-125M'] * sum(bench.PER_BLOCK.values())} layers of OPT-125M "
      f"on this {dev.type}: {whole:.1f} s (calibration forwards not included)")
for e in reference.paper_numbers(metric="prune_seconds"):
    print(f"paper: {e['model']}, whole run: about {e['value'] / 3600:.0f} h ({e['note']})")
for card, gpu_rows in bench.stored().items():  # GPU runs on record (python -m peakllm gpucheck)
    print(f"{card}: SparseGPT 50% solver over all layers of OPT-125M "
          f"{bench.whole_model_seconds(gpu_rows, 'OPT-125M', 'sparsegpt 50%'):.2f} s")
    display(bench.table(gpu_rows, digits=4))

# %% [markdown]
# ## 4. Sparsity and quantization together
#
# SparseGPT's sweep can also round every kept weight to a grid as it goes (paper section 3.5),
# using the same quantizer as GPTQ (`peakllm.compress.quant`): 50% zeros *and* 4-bit values.

# %%
m, _, secs = pruning.prune_fresh(model_name, calib, device, method="sparsegpt", sparsity=0.5,
                                bits=joint_bits, **settings)
joint = perplexity.evaluate(m, scored)
levels = max(len(torch.unique(row[row != 0])) for lin in models.structure.all_linear_layers(m).values() for row in lin.weight)
zeros = sum(int((lin.weight == 0).sum()) for lin in models.structure.all_linear_layers(m).values())
total_w = sum(lin.weight.numel() for lin in models.structure.all_linear_layers(m).values())
print(f"50% + {joint_bits}-bit (seed {seeds[0]}): perplexity {joint}; {zeros / total_w:.1%} zeros; "
      f"at most {levels} distinct nonzero values in any row (a {joint_bits}-bit grid has {2 ** joint_bits})")
for d, v in joint.items():
    rec.add("perplexity", v, "ppl", method=f"sparsegpt+{joint_bits}bit", pattern="unstructured", sparsity=0.5,
            bits=joint_bits, dataset=d, seed=seeds[0], scope=scope)
at50 = runs_df[(runs_df.setting == "50% unstructured") & (runs_df.method == "sparsegpt") & (runs_df.seed == seeds[0])]
pd.DataFrame([{"setting": "dense", **dense_ppl}]
             + [{"setting": "SparseGPT 50%", **at50.iloc[0][list(scored)].to_dict()} for _ in range(len(at50) > 0)]
             + [{"setting": f"SparseGPT 50% + {joint_bits}-bit", **joint}])

# %% [markdown]
# ## 5. Paper vs ours
#
# The paper's Table 1 (WikiText2) and its PTB / C4 figures at 50%, beside ours. The paper's rows
# are those of `model_name` where the paper reports it (run with `-p model_name facebook/opt-350m`
# and the paper's texts `-p eval_datasets '["wikitext2","ptb","c4"]' -p eval_windows 0` on a GPU
# with the Hub); for a model the paper never pruned, its smallest OPT stands in, and the column
# says so. Our figures are means over the calibration seeds.

# %%
SPARSEGPT = "Frantar & Alistarh, SparseGPT, ICML 2023, arXiv 2301.00774"
paper_m, same = reference.paper_model(model_name, metric="perplexity", paper=SPARSEGPT)
label = paper_m.split("/")[-1].upper() + ("" if same else "*")
paper = compare.paper_table({m: {"method": m} for m in ["dense", "magnitude", "sparsegpt"]},
                            {f"paper {label} {ds}": {"dataset": ds} for ds in ["wikitext2", "ptb", "c4"]},
                            index="method", metric="perplexity", model=paper_m, paper=SPARSEGPT,
                            pattern=("dense", "unstructured"), sparsity=(0.0, 0.5),
                            where=("Table 1", "appendix (PTB/C4 results)"))
at_half = runs_df[(runs_df.pattern == "unstructured") & (runs_df.sparsity == 0.5)]
ours = {f"ours {model_name} {d}": {"dense": dense_ppl[d], **at_half.groupby("method")[d].mean().round(2).to_dict()}
        for d in eval_datasets}
if not same:
    print(f"* the paper never pruned {model_name}; its smallest OPT stands in")
display(compare.with_ours(paper, ours))

# %% [markdown]
# How much of magnitude pruning's damage SparseGPT avoids: the perplexity increase of SparseGPT
# over that of magnitude pruning, at 50%, in the paper (every OPT size of Table 1) and here:

# %%
t1 = {(e["model"], e["method"]): e["value"] for e in reference.paper_numbers(
    metric="perplexity", paper=SPARSEGPT, dataset="wikitext2", where="Table 1", pattern=("dense", "unstructured"),
    sparsity=(0.0, 0.5))}
sizes = sorted({mm for mm, _ in t1}, key=reference.model_size)
inc_rows = [{"model": f"paper {mm.split('/')[-1]} wikitext2",
             "magnitude / dense": round(t1[(mm, "magnitude")] / t1[(mm, "dense")], 2),
             "SparseGPT / dense": round(t1[(mm, "sparsegpt")] / t1[(mm, "dense")], 2),
             "increase, SparseGPT / magnitude": round((t1[(mm, "sparsegpt")] - t1[(mm, "dense")])
                                                      / (t1[(mm, "magnitude")] - t1[(mm, "dense")]), 3) + 0.0}
            for mm in sizes if {(mm, "dense"), (mm, "magnitude"), (mm, "sparsegpt")} <= set(t1)]
mean_at = runs_df.groupby(["setting", "method"])[d0].mean()
for lab in labels:
    if {(lab, "magnitude"), (lab, "sparsegpt")} <= set(mean_at.index):
        mag, sgpt = mean_at[(lab, "magnitude")], mean_at[(lab, "sparsegpt")]
        inc_rows.append({"model": f"ours {model_name} {d0}, {lab}", "magnitude / dense": round(mag / dense_ppl[d0], 2),
                         "SparseGPT / dense": round(sgpt / dense_ppl[d0], 2),
                         "increase, SparseGPT / magnitude": round((sgpt - dense_ppl[d0]) / (mag - dense_ppl[d0]), 3)})
pd.DataFrame(inc_rows)

# %% [markdown]
# The seed spread: the paper reports SparseGPT's spread over calibration seeds once (OPT-2.7B,
# 50%, WikiText2); ours comes from the runs above. Relative to the mean, so that models of
# different perplexity compare:

# %%
spread_rows = [{"": f"paper {e['model'].split('/')[-1]} {e['dataset']}", "mean": e["value"], "sd": e["sd"],
                "seeds": e["seeds"], "sd / mean": f"{e['sd'] / e['value']:.2%}"}
               for e in reference.paper_numbers(metric="perplexity", paper=SPARSEGPT, where="section 4 (seed variance)")]
for lab in labels:
    v = runs_df[(runs_df.setting == lab) & (runs_df.method == "sparsegpt")][d0]
    if len(v) > 1:
        s = spread.summarize(v)
        spread_rows.append({"": f"ours {model_name} {d0}, {lab}", "mean": round(s["mean"], 2), "sd": round(s["sd"], 3),
                            "seeds": s["n"], "sd / mean": f"{s['sd'] / s['mean']:.2%}"})
pd.DataFrame(spread_rows)

# %% [markdown]
# What differs between the paper's setting and ours, computed from this run's settings:

# %%
n_paper = reference.model_size(paper_m)
print(f"model      : {model_name}, {N / 1e6:.1f} M parameters; paper {paper_m.split('/')[-1]}, "
      f"about {n_paper / 1e6:.0f} M ({n_paper / N:.0f}x ours)")
print(f"calibration: {calib_samples} x {seqlen} tokens of {calib_dataset!r}; paper 128 x 2048 C4 tokens "
      f"({128 * 2048 / (calib_samples * seqlen):.0f}x ours)")
print(f"evaluation : {scope}; paper: the whole WikiText2 / PTB / C4 test texts in windows of 2048")

# %% [markdown]
# In the paper, magnitude pruning at 50% does not get worse with size in any orderly way: the
# table above shows its perplexity increase factor for every OPT size of Table 1, and SparseGPT's.
# On our model the gap between the methods opens with the sparsity: compare the rows of section
# 2's table.
#
# ## 6. What sparsity buys at inference
#
# Zeros only save memory in a sparse format, and only save time where a kernel exploits them.
# Bytes of the pruned linear layers at 16-bit values:

# %%
m = sparse_24 if sparse_24 is not None else pruning.prune_fresh(
    model_name, calib, device, method="sparsegpt", sparsity=0.5, pattern="2:4", **settings)[0]
layers = models.structure.all_linear_layers(m)
fmt_rows = []
for fmt in ["dense", "csr", "bitmask", "2:4"]:
    b = sum(formats.storage_bytes(lin.weight, fmt) for lin in layers.values())
    fmt_rows.append({"format": fmt, "bytes": b, "vs dense": round(b / fmt_rows[0]["bytes"], 3) if fmt_rows else 1.0})
    rec.add("weight_bytes", b, "B", method="sparsegpt", pattern="2:4", scope=fmt)
pd.DataFrame(fmt_rows)

# %% [markdown]
# On an NVIDIA GPU (compute capability >= 8.0), 2:4 sparse tensor cores multiply at up to twice
# the dense rate; the paper measures 1.54-1.79x on OPT-175B's layer shapes. Here we time the
# model's own layer shapes (and OPT-175B's) with `torch.sparse.to_sparse_semi_structured`:

# %%
if dev.type == "cuda" and torch.cuda.get_device_capability(dev) >= (8, 0):
    shapes = sorted({tuple(lin.weight.shape) for lin in layers.values()}) + [(12288, 12288), (49152, 12288), (12288, 49152)]
    speed = pd.DataFrame(formats.semi_structured_speedup(shapes, device=dev))
    for r in speed.itertuples():
        rec.add("speedup", round(r.speedup, 3), "x", method="2:4 sparse matmul", scope=f"{r.shape[0]}x{r.shape[1]}")
    display(speed)
else:
    print(f"skipped: 2:4 sparse matmul needs an NVIDIA GPU of compute capability >= 8.0; this run uses {dev.type}.")
    print("paper: 1.54-1.79x on OPT-175B shapes (GPU); 1.82x end to end with DeepSparse on CPU (OPT-2.7B, 50%).")

# %% [markdown]
# ## Lab: the 2:4 pattern in the column sweep
#
# Section 2's 2:4 rows come from notebook 10.1's column sweep with another mask rule (SparseGPT
# section 3, its extension to N:M sparsity): in every row, N of each group of M consecutive inputs
# are removed, the pattern that NVIDIA's sparse tensor cores multiply fast (section 6). The first
# cell below takes notebook 10.1's layer again -- the largest of the second block, calibrated on
# the first calibration set -- and prints its one-layer errors at 50%, which exercise 2 reads. The
# second hands you `W_in_nm_lab` and `Hinv_nm_lab` = U, as notebook 10.1's lab did (dead inputs
# zeroed, H dampened, U the upper Cholesky factor of H⁻¹, U_jj its diagonal), the pattern
# `N_lab, M_lab = 2, 4`, and `B_nm_lab` = 32 columns per block, a multiple of M, so that no group
# straddles two blocks.
#
# The sweep is notebook 10.1's with one change, the mask rule:
#
# 1. **Columns left to right, in blocks of B** (i₁ … i₂ − 1). For each column j of the block, for
#    all rows at once: q_j is w_j with the removed entries set to 0, e_j = (w_j − q_j) / U_jj, and
#    $W_{:,\,j:i_2} \mathrel{-}= e_j\, U_{j,\,j:i_2}$; column j is then q_j. After the block, the
#    lazy update $W_{:,\,i_2:} \mathrel{-}= E\, U_{i_1:i_2,\;i_2:}$ with E the block's errors.
# 2. **The N:M mask, group by group.** When the sweep reaches the first column j of a group (j a
#    multiple of M inside the block), it ranks that group's M columns, in each row separately, by
#    the saliency
#
#    $$\varepsilon_{rj} = \frac{w_{rj}^2}{U_{jj}^2}$$
#
#    of the weights **as the updates have left them at that moment**, and removes the N lowest of
#    each row. The unstructured rule of notebook 10.1 chose a block's whole mask at its start;
#    here each group also sees the updates of the group before it.
#
# Return the pruned weights and the mask (True = removed). Hints: `torch.topk(s, N, dim=1,
# largest=False).indices` gives each row's N lowest of s (rows × M); `mask1[:, j:j + M].scatter_(1,
# idx, True)` marks them in the block's mask. The check compares your mask and weights with the
# library's `sparsegpt.SparseGPT.prune(prunen=2, prunem=4)` on a copy of the layer with the same
# Hessian, block width and dampening, checks that every group of 4 inputs of every row has exactly
# 2 removed, and that your updates did their job: your layer error is below that of your own mask
# applied without them. It prints SparseGPT's unstructured 50% error on the same layer beside.

# %%
# Notebook 10.1's layer, calibrated on the first calibration set, and its errors at 50% (exercise 2)
name, layer, acc = explore.microscope_layer(model, calibs[seeds[0]])
W0 = layer.weight.detach().clone()                            # (rows, columns) dense weights
one_layer = explore.layer_sweep(acc, [0.5], methods, blocksize=blocksize, percdamp=percdamp)
one_layer = {m: e[0] for m, e in one_layer["error"].items()}  # method -> relative output error at 50%
print(f"{name} {tuple(W0.shape)}, relative output error at 50%: " + ", ".join(f"{m} {e:.3g}" for m, e in one_layer.items()))

# %% nbgrader={"grade": false, "grade_id": "lab-10-nm", "locked": false, "schema_version": 3, "solution": true, "task": false}
# The lab's inputs: the layer and its Hessian, prepared as the library's sweep prepares them
N_lab, M_lab, B_nm_lab = 2, 4, 32                              # N zeros in every M inputs; columns per block
W_in_nm_lab, Hinv_nm_lab = obs.prepare(W0, acc.H, percdamp)   # (rows, columns) fp32 copy; (columns, columns) upper Cholesky factor U


def sparsegpt_nm_sweep(W, Hinv, N, M, B):
    """SparseGPT's column sweep with an N:M mask (Algorithm 1, N:M mask selection), on one layer.

    W: (rows, columns) weights, left unchanged; Hinv: (columns, columns) upper Cholesky factor U
    of the dampened H⁻¹; N, M: N of every M consecutive inputs removed in each row; B: columns
    per block, a multiple of M. Returns (W_hat, mask): the pruned and updated weights
    (rows, columns) and the bool mask (rows, columns) of the removed weights (True = removed).
    """
    W = W.clone()                                              # (rows, columns), swept in place
    rows, columns = W.shape
    mask = torch.zeros_like(W, dtype=torch.bool)               # (rows, columns), True = removed
    ### BEGIN SOLUTION
    for i1 in range(0, columns, B):
        i2 = min(i1 + B, columns)
        W1 = W[:, i1:i2].clone()                               # (rows, B) the block, after earlier blocks' updates
        Q1 = torch.zeros_like(W1)                              # (rows, B) its final weights
        Err1 = torch.zeros_like(W1)                            # (rows, B) its scaled errors e
        Hinv1 = Hinv[i1:i2, i1:i2]                             # (B, B)
        d = torch.diag(Hinv1)                                  # (B,) U_jj
        mask1 = torch.zeros_like(W1, dtype=torch.bool)         # (rows, B)
        for i in range(i2 - i1):
            if i % M == 0:                                     # first column of a group: choose its mask now
                saliency = W1[:, i:i + M] ** 2 / d[None, i:i + M] ** 2       # (rows, M) w² / U_jj²
                low = torch.topk(saliency, N, dim=1, largest=False).indices  # (rows, N)
                mask1[:, i:i + M].scatter_(1, low, True)
            w = W1[:, i]                                       # (rows,) column j = i1 + i
            q = w.masked_fill(mask1[:, i], 0.0)                # pruned weights -> 0
            err = (w - q) / d[i]                               # e = (w - q) / U_jj
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]  # OBS update of the block's later columns
            Q1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]                   # lazy update of the columns after the block
    ### END SOLUTION
    return W, mask


with timing.Timer(dev) as t_nm_lab:
    W_hat_nm_lab, mask_nm_lab = sparsegpt_nm_sweep(W_in_nm_lab, Hinv_nm_lab, N_lab, M_lab, B_nm_lab)
print(f"{name}: {tuple(W_hat_nm_lab.shape)} swept in blocks of {B_nm_lab} columns in {t_nm_lab.seconds:.2f} s; "
      f"{mask_nm_lab.float().mean():.1%} of the weights removed")

# %% nbgrader={"grade": true, "grade_id": "lab-10-nm-check", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false} tags=["check"]
import copy

from peakllm.workbook import labs

lib_nm_lab = sparsegpt.SparseGPT(copy.deepcopy(layer))         # the library's pruner, on a copy of the layer
lib_nm_lab.share(acc)                                          # the same Hessian H and token count
lib_nm_lab.layer.weight.data = W0.clone()
mask_lib_nm_lab = lib_nm_lab.prune(prunen=N_lab, prunem=M_lab, blocksize=B_nm_lab, percdamp=percdamp)
# a choice near a tie can go either way with another summation order (threads): most entries,
# and the layer error, must match
labs.agree("mask", mask_nm_lab, mask_lib_nm_lab, at_least=0.99)
labs.agree("W_hat", W_hat_nm_lab, lib_nm_lab.layer.weight, at_least=0.99)
err_nm_lab = obs.layer_error(W0, W_hat_nm_lab, acc.H)
err_lib_nm_lab = obs.layer_error(W0, lib_nm_lab.layer.weight.detach(), acc.H)
labs.ratio_at_most("layer error", err_nm_lab, err_lib_nm_lab, 1.01)
per_group = mask_nm_lab.reshape(W0.shape[0], -1, M_lab).sum(-1)  # (rows, columns / M) removed per group
labs.outcome(bool((per_group == N_lab).all()), f"{int((per_group != N_lab).sum())} of your {per_group.numel()} groups "
             f"of {M_lab} inputs do not have exactly {N_lab} removed")
labs.outcome(bool((W_hat_nm_lab[mask_nm_lab] == 0).all()), "some weights your mask removes are not zero in W_hat")
err_masked_nm_lab = obs.layer_error(W0, W0.masked_fill(mask_nm_lab, 0.0), acc.H)  # your mask, without the OBS updates
labs.outcome(err_nm_lab < err_masked_nm_lab, f"your layer error {err_nm_lab:.4g} is not below that of your mask "
             f"applied without the OBS updates ({err_masked_nm_lab:.4g}): the updates should repair what the mask removes")
signal_nm_lab = obs.layer_error(W0, torch.zeros_like(W0), acc.H)  # ||W X||² / n
print(f"relative output error at {N_lab}:{M_lab}: yours {err_nm_lab / signal_nm_lab:.3g}, the library's "
      f"{err_lib_nm_lab / signal_nm_lab:.3g}; your mask without the updates {err_masked_nm_lab / signal_nm_lab:.3g}; "
      f"SparseGPT at 50% unstructured {one_layer.get('sparsegpt', float('nan')):.3g}")
labs.passed("the 2:4 column sweep")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** In section 2's table, compare each method at 2:4 with the same method at 50% unstructured. Which methods pay for the constraint, which do not, and why would you still choose 2:4?

# %% [markdown] tags=["solution"]
# **Solution 1.** Magnitude pruning and Wanda pay for the constraint: their 2:4 perplexity is clearly above their 50% unstructured one, far outside the seed spread. SparseGPT's two rows are within each other's spread: its updates move the error of the forced zeros onto the weights it keeps, so the constraint costs it next to nothing here. 2:4 forces exactly two zeros in every group of four inputs, so no method can put the zeros where they hurt least; you still choose it because NVIDIA's sparse tensor cores multiply 2:4 matrices up to twice as fast (section 6), while unstructured zeros save no time on a GPU without a sparse kernel.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Notebook 10.1 (section 3) compares the methods on one layer -- the lab's first cell prints that table again at 50% -- and section 2 here on the whole model. Do the two agree about Wanda and magnitude pruning? What does the layer-level error leave out?

# %% [markdown] tags=["solution"]
# **Solution 2.** They disagree. On the one layer of notebook 10.1, Wanda's output error is below magnitude pruning's; over the whole model, Wanda's perplexity is above magnitude pruning's in every setting, and the verdict table says the gap is larger than the seed spread. The layer error scores one layer alone, on the dense model's inputs, with every output feature weighted equally. The model's loss does not work that way: each layer's error passes through every later layer and the LM head, and some output features matter far more than others. Wanda's score |w|·‖x‖ also compares weights within each row (every output keeps the same share), while magnitude pruning ranks the whole matrix at once and may keep more of the rows that hold large weights. Wanda is motivated by the few input features of large LLMs whose activations are orders of magnitude larger than the rest (Dettmers et al. 2022); where there are none, ‖x‖ does little to separate important weights from unimportant ones. Check the lab's layer: `acc.H.diag().sqrt()` holds ‖x_j‖ up to a constant -- compare its largest value with its median.

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
ppl_seeds = runs_df.groupby(["setting", "method"])[d0].apply(list).to_dict()  # (setting, method) -> perplexity per seed
than = {"better": "better than", "worse": "worse than", "tie": "tied with"}  # spread.verdict in words
lo, hi = f"{min(sparsities):.0%} unstructured", f"{max(sparsities):.0%} unstructured"
nm = patterns[0] if patterns else ""
if {"magnitude", "wanda", "sparsegpt"} <= set(methods) and lo != hi and nm:
    sg = {lab: ppl_seeds[(lab, "sparsegpt")] for lab in labels}
    mag = {lab: ppl_seeds[(lab, "magnitude")] for lab in labels}
    wa = {lab: ppl_seeds[(lab, "wanda")] for lab in labels}
    lead = {lab: min(np.mean(mag[lab]), np.mean(wa[lab])) - np.mean(sg[lab]) for lab in (lo, hi)}  # SparseGPT's lead
    cost_nm = {"tie": "about as little as", "worse": "more than", "better": "less than"}[spread.verdict(sg[nm], sg[lo])]
    wanda_worse = [lab for lab in labels if spread.verdict(wa[lab], mag[lab]) == "worse"]
    wanda_where = f"in {len(wanda_worse)} of the {len(labels)} settings"
    if len(wanda_worse) == len(labels):
        wanda_where = "in every setting"
    err_w, err_m = one_layer["wanda"], one_layer["magnitude"]           # notebook 10.1's layer (the lab)
    whole = f"""* On the whole model at {lo.split()[0]}, SparseGPT moves perplexity from {dense_ppl[d0]:.2f}
  to {spread.fmt(sg[lo])} ({np.mean(sg[lo]) / dense_ppl[d0] - 1:+.1%}), magnitude pruning to {spread.fmt(mag[lo])}
  and Wanda to {spread.fmt(wa[lo])} (mean ± sd over the calibration seeds); at {hi.split()[0]} the gap
  {"opens" if lead[hi] > lead[lo] else "does not open"} ({spread.fmt(sg[hi])} against {spread.fmt(mag[hi])}
  and {spread.fmt(wa[hi])}), and {nm} costs SparseGPT {cost_nm} {lo} ({spread.fmt(sg[nm])}).
* Read with the seed spread (section 2's rule), SparseGPT at {lo.split()[0]} is
  {than[spread.verdict(sg[lo], mag[lo])]} magnitude pruning and Wanda is {than[spread.verdict(wa[lo], mag[lo])]}
  it. Wanda is worse than magnitude pruning {wanda_where} of section 2, while on the one layer of
  notebook 10.1 its output error was {"below" if err_w < err_m else "not below"} magnitude pruning's
  ({err_w:.3g} against {err_m:.3g})."""
else:
    whole = "* Section 2's table and verdicts compare the methods on the whole model, with their seed spread."
peakllm.say(whole)

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
