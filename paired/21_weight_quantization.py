# %% [markdown]
# # 21 · Case study 2: weight quantization -- bitsandbytes, RTN and GPTQ
#
# **Goal.** Fewer bits per weight make a model smaller and, where decoding is memory-bound,
# faster (notebook 22). Compare the two families the review describes: quantization at load time
# with **bitsandbytes** (LLM.int8(), 4-bit NF4 and FP4, with and without double quantization,
# through `transformers`' `BitsAndBytesConfig`) and one-shot post-training quantization on a
# per-row grid, **RTN** and **GPTQ**, at 4, 3 and 2 bits, GPTQ over several calibration seeds. For
# each: perplexity, bytes of weights, bits per parameter and forward latency, with the GPTQ
# paper's rows beside ours. First, LLM.int8() by hand on one layer -- vector-wise absmax
# quantization with its outlier decomposition -- checked against bitsandbytes' `Linear8bitLt`.
#
# **Prerequisites.** Notebook 10.1 (the OBS column sweep GPTQ shares with SparseGPT).
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): about 2 minutes; peak memory about 1 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to quantize: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
bnb_methods: list = ["int8", "nf4", "nf4-dq", "fp4", "fp4-dq"]  # bitsandbytes formats (-dq: double quantization)
grid_bits: list = [4, 3, 2]  # bit widths of RTN and GPTQ
seeds: list = [0, 1, 2]  # calibration seeds: GPTQ runs once per seed (RTN reads no data)
calib_dataset: str = "shakespeare"  # calibration text for GPTQ: shakespeare (shipped train split) or c4 (Hub)
calib_samples: int = 128  # calibration windows (the paper: 128)
calib_seqlen: int = 0  # tokens per calibration window; 0 means the model's context (the paper: 2048)
eval_datasets: list = ["shakespeare"]  # perplexity texts: shakespeare, wikitext2, ptb, c4
eval_windows: int = 64  # windows of each evaluation text every model is scored on (0: the whole test split)
blocksize: int = 128  # GPTQ columns per block (lazy batch updates)
percdamp: float = 0.01  # dampening, as a share of the mean Hessian diagonal
latency_batch: int = 1  # sequences per timed forward pass
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds everything that is not a calibration seed
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import models, show_source
from peakllm.compress import formats, gptq, quant
from peakllm.core import checks, memory, reference, spread
from peakllm.data import evaldata
from peakllm.infer import speak
from peakllm.workbook import compare, crosscheck, measure

# isort: split
from tqdm.auto import tqdm  # after peakllm, which quiets tqdm's notice about missing ipywidgets

rec, dev = peakllm.setup("21_weight_quantization", globals())
checks.choices("bnb_methods", bnb_methods, [m for m in models.QUANTIZATIONS if m != "none"])
for q in bnb_methods:
    models.bnb_config(q, dev)  # bitsandbytes present and able to run on this device
grid_bits = [quant.parse_bits(b) for b in grid_bits]
seeds = checks.seeds("seeds", seeds)
checks.in_range("eval_windows", eval_windows, 0, 10**9)

# %% [markdown]
# ## 1. The baseline and what we measure
#
# * **perplexity** on each evaluation text (the protocol of notebook 00), on the same fixed
#   windows for every model (the cell says how many);
# * **bytes of weights** as stored: every parameter and buffer, plus the quantization constants
#   bitsandbytes keeps beside its weights (NF4's per-64-weight absmax, int8's per-row scales);
# * **bits per parameter** of the linear layers that are quantized (the embedding and LM head
#   stay in full precision everywhere, as in the papers);
# * **forward latency** of `latency_batch` x context tokens on this device (best of 3).

# %%
model, tokenizer = models.load(model_name, device=str(dev))
ctx = models.context_length(model)
seqlen = calib_seqlen or ctx
eval_ids = {d: evaldata.eval_ids(d, tokenizer, ctx) for d in eval_datasets}
total = {d: ids.numel() // ctx for d, ids in eval_ids.items()}
scored = {d: ids[:, : min(eval_windows or total[d], total[d]) * ctx] for d, ids in eval_ids.items()}
scope = ", ".join(f"{d}: first {scored[d].numel() // ctx} of {total[d]} test windows" for d in eval_datasets)
print(f"scored on {scope}")
x = next(iter(eval_ids.values()))[:, :ctx].repeat(latency_batch, 1).to(dev)
rows = [measure.model_row(model, "dense", 32, scored, x, ctx) | {"seed": None}]
pd.DataFrame(rows)

# %% [markdown]
# ## 2. LLM.int8() by hand, on one layer
#
# LLM.int8() (Dettmers et al. 2022, section 3) multiplies $X W^\top$ in int8 with one scale per
# row of each matrix (vector-wise quantization): row $i$ of the input $X$ (one token) is stored as
#
# $$X_{i8,\,i} = \operatorname{round}\!\left(\frac{127}{s_{X,i}}\, X_i\right), \qquad s_{X,i} = \max_j |X_{ij}|,$$
#
# each output row of $W$ likewise with $s_{W}$, and the exact int32 product is scaled back by both:
# $X W^\top \approx \frac{1}{127^2}\, (s_X s_W^\top) \odot (X_{i8} W_{i8}^\top)$. A few input
# features of trained transformers carry outliers far larger than the rest, and one such value
# stretches its row's scale and leaves the row's other values only a few of the 255 steps. The
# mixed-precision decomposition takes the outlier columns $O = \{ j : \max_i |X_{ij}| \ge 6 \}$
# out and multiplies them in 16-bit:
#
# $$X W^\top \approx \sum_{j \in O} X_{:,j}\, W_{:,j}^\top \;+\; \frac{1}{127^2}\, (s_X s_W^\top) \odot \sum_{j \notin O} X_{i8,:,j}\, W_{i8,:,j}^\top .$$
#
# Below, on the input of the first block's `fc2` in the shipped `tiny-opt` (the MLP's second
# matrix, reading the ReLU's output) for one window of held-out text, on the CPU, against the
# `Linear8bitLt` layer bitsandbytes puts in its place.

# %%
import bitsandbytes as bnb
import torch

from peakllm.compress import levels

tok8 = models.load_tokenizer("tiny-opt")
ids8 = evaldata.eval_ids("shakespeare", tok8)[:, :256]            # one window of held-out text
dense8 = models.load_model("tiny-opt", device="cpu")
int8 = models.load_model("tiny-opt", device="cpu", quantization="int8")  # every block linear -> Linear8bitLt
name8 = "model.decoder.layers.0.fc2"                               # d_in 1024 (after the ReLU) -> d_out 256
layer8 = int8.get_submodule(name8)
inputs = {}
hook = dense8.get_submodule(name8).register_forward_hook(lambda mod, args, out: inputs.update(X=args[0].detach()))
with torch.no_grad():
    dense8(ids8)
hook.remove()
X = inputs["X"].reshape(-1, inputs["X"].shape[-1])                # (T, d_in): what fc2 reads
W, bias = dense8.get_submodule(name8).weight.detach(), dense8.get_submodule(name8).bias.detach()  # (d_out, d_in), (d_out,)
threshold = layer8.state.threshold
print(f"{name8}: {type(layer8).__name__}, X {tuple(X.shape)}, W {tuple(W.shape)}, outlier threshold {threshold}")

# %%
X16, W16 = X.half(), W.half()                    # bitsandbytes quantizes from fp16
s_W = W16.abs().amax(1).float()                   # (d_out,) absmax of each row of W
W_i8 = torch.round(W16 * (127 / s_W[:, None])).to(torch.int8)
assert torch.equal(W_i8, layer8.weight.data) and torch.equal(s_W, layer8.weight.SCB)  # the layer's stored weight
outlier = X16.abs() >= threshold                  # (T, d_in)
O = outlier.any(0).nonzero().flatten()            # the outlier columns (input features)  # noqa: E741 (the paper's O)
X_rest = X16.masked_fill(outlier, 0)              # bitsandbytes zeroes the outlier entries before the absmax
s_X = X_rest.abs().amax(1).float()                # (T,) absmax of each row of X
X_i8 = torch.round(X_rest * (127 / s_X[:, None])).to(torch.int8)
X_i8[:, O] = 0                                    # whole outlier columns leave the int8 product
C = X_i8.float() @ W_i8.float().T                 # int8 x int8: exact integers (int32 in the kernels)
Y_int8 = C * (s_X[:, None] * s_W[None, :]) / 127**2
Y_16 = X[:, O] @ (W_i8[:, O].float() * s_W[:, None] / 127).T  # the outlier columns in 16-bit (fp32 here)
Y = Y_int8 + bias + Y_16
with torch.no_grad():
    Y_bnb = layer8(X)                             # bitsandbytes on the same input
print(f"{len(O)} outlier columns of {X.shape[1]} ({outlier.sum().item()} entries >= {threshold}, "
      f"in {outlier.any(1).sum().item()} of {X.shape[0]} tokens; the largest |x| is {X.abs().max():.2f})")
print("outlier columns:", O.tolist())
print(f"max |Y by hand - Linear8bitLt| = {(Y - Y_bnb).abs().max():.1e} (the output reaches {Y_bnb.abs().max():.1f})")
ax = levels.plot_outlier_columns(X, threshold, title=f"{name8}: largest |x| of each input column, {X.shape[0]} tokens")

# %% [markdown]
# Close, not equal: bitsandbytes' CPU path rescales the int32 product with its own constant
# (its default torch kernel, which `Linear8bitLt` calls on a CPU), slightly off $1/127^2$. Read it
# from the kernel, use it, and the difference falls to float rounding:

# %%
ones = torch.ones(1)
cpu_scale = torch.ops.bitsandbytes.int8_mm_dequant(torch.ones(1, 1, dtype=torch.int32), ones, ones, dtype=torch.float32).item()
print(f"bitsandbytes' CPU rescale of an int32 1 with unit scales: {cpu_scale:.7g}; 1/127^2 = {1 / 127**2:.8g}")
print(f"relative difference {cpu_scale * 127**2 - 1:.1e} (its CUDA kernel uses 6.200012e-05, which is 1/127^2)")
Y_cpu = C * (s_X[:, None] * s_W[None, :]) * cpu_scale + bias + Y_16
torch.testing.assert_close(Y_cpu, Y_bnb, rtol=0, atol=1e-5)
print(f"with the CPU constant: max |Y by hand - Linear8bitLt| = {(Y_cpu - Y_bnb).abs().max():.1e}")
s_all = X16.abs().amax(1).float()                 # no decomposition: every column in int8
Y_naive = (torch.round(X16 * (127 / s_all[:, None])).float() @ W_i8.float().T) * (s_all[:, None] * s_W[None, :]) / 127**2 + bias
Y_fp32 = X @ W.T + bias
rms = {k: (v - Y_fp32).pow(2).mean().sqrt().item() for k, v in {"decomposed": Y, "all int8": Y_naive}.items()}
print(f"rms error against fp32: {rms['decomposed']:.4f} with the decomposition, {rms['all int8']:.4f} with every column in int8")
del dense8, int8

# %% tags=["nbval-ignore-output"]
peak = X.abs().max().item()
peakllm.say(f"The outliers of the small shipped `tiny-opt` are {'mild' if peak < 2 * threshold else 'strong'}: the largest |x| is "
            f"{peak:.2f}, {peak / threshold:.1f} times the threshold. The decomposition "
            f"{'buys little here' if rms['decomposed'] > 0.8 * rms['all int8'] else 'pays off here'}: the rms error against fp32 "
            f"is {rms['decomposed']:.4f} with it and {rms['all int8']:.4f} with every column in int8.")

# %% [markdown]
# The LLM.int8() paper finds such features growing with scale until, in models of several billion
# parameters, they sit in every layer and plain int8 loses the model's quality -- the case the
# decomposition was made for. Section 3 runs every linear layer of the blocks this way.

# %% [markdown]
# ## 3. bitsandbytes: quantized as the model loads
#
# `models.load_model(..., quantization=...)` hands transformers a `BitsAndBytesConfig`; every
# `nn.Linear` inside the blocks becomes a bitsandbytes layer:
#
# * **int8** -- LLM.int8() (Dettmers et al. 2022): int8 weights with a scale per row; at run time,
#   input columns with outliers (|x| >= 6) are multiplied in 16-bit, the rest in int8 (section 2);
# * **nf4 / fp4** -- 4-bit NormalFloat (levels at the quantiles of a normal distribution: QLoRA,
#   Dettmers et al. 2023) or 4-bit float, one absmax per block of 64 weights;
# * **-dq** -- double quantization: the block absmaxes themselves stored in 8 bits (one fp32
#   constant per 256 of them), 32/64 -> 8/64 + 32/(64·256) bits of overhead per weight.

# %%
show_source(models.bnb_config)

# %%
for q in tqdm(bnb_methods, desc="bitsandbytes"):
    m = models.load_model(model_name, device=str(dev), quantization=q)
    b, n = memory.linear_weights(m)
    rows.append(measure.model_row(m, f"bnb-{q}", 8 if q == "int8" else 4, scored, x, ctx, memory.weight_bytes(m), 8 * b / n)
                | {"seed": None})
    del m
pd.DataFrame(rows)

# %% [markdown]
# ## 4. RTN and GPTQ on a per-row grid
#
# Both round each row of W to 2^b levels between its min and max. RTN rounds every weight to the
# nearest level; GPTQ rounds columns left to right and moves each rounding error onto the columns
# still to come (the OBS update), from `calib_samples` calibration windows -- a fresh set per
# calibration seed. Stored, a b-bit matrix takes b bits per weight plus a 16-bit scale and zero
# per row (`formats.packed_bytes`); here the rounded values stay in fp32 tensors, so the forward
# is the dense one and is not timed again.

# %%
show_source(gptq.GPTQ)
calibs = {s: evaldata.calibration(calib_dataset, tokenizer, nsamples=calib_samples, seqlen=seqlen, seed=s) for s in seeds}
linear = memory.linear_weights(model)
head_and_rest = memory.weight_bytes(model) - linear[0]

# %%
import copy

spoken = {"dense": speak.speak(model, tokenizer)}  # one prompt, continued greedily by each model
runs = [(b, "rtn", seeds[0]) for b in grid_bits] + [(b, "gptq", s) for b in grid_bits for s in seeds]
for b, method, s in tqdm(runs, desc="RTN and GPTQ"):
    m = copy.deepcopy(model)
    layer_rows = gptq.quantize_model(m, calibs[s], method=method, bits=b, blocksize=blocksize, percdamp=percdamp,
                                     progress=False)
    packed = sum(formats.packed_bytes(*r["shape"], b) for r in layer_rows)
    rows.append(measure.model_row(m, method, b, scored, None, ctx, head_and_rest + packed, 8 * packed / linear[1])
                | {"seed": s if method == "gptq" else None})
    if s == seeds[0]:
        spoken[f"{method} {b}-bit"] = speak.speak(m, tokenizer)
    del m
table = pd.DataFrame(rows)
d0 = eval_datasets[0]
dense = table.iloc[0]
for _, r in table.iterrows():
    for d in eval_datasets:
        rec.add("perplexity", r[f"ppl {d}"], "ppl", method=r["method"], bits=r["bits"], dataset=d,
                seed=None if pd.isna(r["seed"]) else int(r["seed"]), scope=scope)
summary = spread.table(table, ["method", "bits"], f"ppl {d0}")
first = table.drop_duplicates(["method", "bits"]).set_index(["method", "bits"])
for k, r in first.iterrows():
    rec.add("weight_bytes", int(r["weight bytes"]), "B", method=k[0], bits=k[1])
print(f"perplexity on {scope}; GPTQ: mean ± sd over calibration seeds {seeds}")
first[["bits/param (linear)", "forward"]].assign(**{
    "weight bytes": first["weight bytes"].map(memory.human), f"ppl {d0} (mean ± sd)": summary["mean ± sd"],
    "seeds": summary["n"]})

# %% [markdown]
# **What the quantized models write.** One prompt from the test split, continued greedily for the same number of tokens by the dense model and by RTN and GPTQ at each bit width (first calibration seed):

# %% tags=["nbval-ignore-output"]
print("prompt:", speak.PROMPT)
speak.table(spoken)

# %% [markdown]
# GPTQ against RTN at each bit width, with the seed spread: a difference inside it is a tie.
# The plot shows every format's perplexity increase over the dense model against its storage.

# %%
verdicts = []
for b in grid_bits:
    g = table[(table.method == "gptq") & (table.bits == str(b))][f"ppl {d0}"].tolist()
    r = table[(table.method == "rtn") & (table.bits == str(b))][f"ppl {d0}"].tolist()
    v = spread.verdict(g, r)
    verdicts.append({"bits": b, "RTN": spread.fmt(r), "GPTQ": spread.fmt(g),
                     "RTN increase over dense": f"{r[0] - dense[f'ppl {d0}']:+.2f}",
                     "GPTQ increase over dense": f"{spread.summarize(g)['mean'] - dense[f'ppl {d0}']:+.2f}",
                     "verdict": "tie" if v == "tie" else f"GPTQ {v}"})
display(pd.DataFrame(verdicts))
stats = table.groupby(["method", "bits"], sort=False)[f"ppl {d0}"].agg(["mean", "std"]).fillna(0.0)
bits_of = table.groupby(["method", "bits"], sort=False)["bits/param (linear)"].first()
fig, ax = plt.subplots(figsize=(6.5, 4))
for fam, style in [("bnb", "s"), ("rtn", "o"), ("gptq", "^")]:
    keys = [k for k in stats.index if k[0].startswith(fam)]
    inc = [100 * (stats.loc[k, "mean"] / dense[f"ppl {d0}"] - 1) for k in keys]
    err = [100 * stats.loc[k, "std"] / dense[f"ppl {d0}"] for k in keys]
    ax.errorbar([bits_of[k] for k in keys], inc, yerr=err, fmt=style, capsize=3, label=fam)
    for k, y in zip(keys, inc):
        ax.annotate(k[0] if fam == "bnb" else f"{k[0]} {k[1]}", (bits_of[k], y), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
ax.axhline(0, color="k", ls=":", label="dense fp32")
ax.set(xscale="log", xlabel="bits per linear-layer weight (with constants)",
       ylabel=f"perplexity increase over dense (%, {d0})", title=f"{model_name}: quality against storage")
ax.legend(fontsize=8)
fig.tight_layout()

# %% tags=["nbval-ignore-output"]
from peakllm.workbook import lessons

calibrated = table[table.method == "gptq"].groupby("bits")[f"ppl {d0}"].apply(list)  # GPTQ's per-seed perplexities
peakllm.say(lessons.noise_sentence("21_weight_quantization", "perplexity", calibrated.tolist(), "perplexities"))

# %% [markdown]
# ### Beside the production library
#
# Practitioners quantize with llm-compressor (`GPTQModifier`), whose checkpoints vLLM serves.
# `make crosscheck` runs it in a second environment (it pins an older transformers than this
# workbook) with our grid -- 4 bits, one scale and zero point per row, weights only -- on
# notebook 10.2's calibration windows for `tiny-opt`, seeds 0-2, and scores its quantized weights
# and ours with one code path (`peakllm.workbook.crosscheck`). When its results file exists, the
# cell below shows both libraries' perplexity, llm-compressor's difference to ours read with the
# same noise rule as above, and the share of weights both libraries put on the same level of the
# row's grid. The rows after them run llm-compressor again: on the same windows in another order
# (the noise any two exact implementations share, since the Hessians are summed in another
# order), and with one of its own defaults kept each (its static activation order, a symmetric
# grid, its W4A16 preset). When the file does not exist, the cell says how to make it.

# %%
production = crosscheck.production_rows("gptq")  # None, after saying how to make it, without `make crosscheck`
if production is not None:
    display(production)

# %% [markdown]
# ## 5. Paper vs ours
#
# The GPTQ paper's rows (Tables 2-3; fp16 baseline) beside ours (means over the calibration
# seeds): those of `model_name` where the paper reports it, else its smallest OPT as a stand-in.
# Compare the pattern -- how much of RTN's loss GPTQ recovers as the bits fall -- rather than
# the digits: the default `tiny-opt` is about 30 times smaller than OPT-125M and its test text is held-out Shakespeare. With
# `-p model_name facebook/opt-125m -p eval_datasets '["wikitext2","ptb","c4"]' -p calib_dataset c4`
# (Hub access) the same cells run the paper's setting.

# %%
GPTQ_PAPER = "Frantar et al., GPTQ, ICLR 2023, arXiv 2210.17323"
paper_m, same = reference.paper_model(model_name, metric="perplexity", paper=GPTQ_PAPER)
label = paper_m.split("/")[-1].upper() + ("" if same else "*")
settings = [("dense", 16), ("rtn", 4), ("gptq", 4), ("rtn", 3), ("gptq", 3)]
paper = compare.paper_table({f"{m} {b}-bit": dict(method=m, bits=b) for m, b in settings},
                            {f"paper {label} {ds}": dict(dataset=ds) for ds in ["wikitext2", "ptb", "c4"]},
                            metric="perplexity", model=paper_m, paper=GPTQ_PAPER)
means = table.groupby(["method", "bits"], sort=False)[[f"ppl {d}" for d in eval_datasets]].mean().round(2)
ours = {f"{k[0]} {16 if k[0] == 'dense' else k[1]}-bit": r for k, r in means.iterrows()}
if not same:
    print(f"* the paper never quantized {model_name}; its smallest OPT stands in")
compare.with_ours(paper, {f"ours {model_name} {d}": {k: r[f"ppl {d}"] for k, r in ours.items()} for d in eval_datasets})

# %% [markdown]
# What differs and why:

# %% tags=["nbval-ignore-output"]
ppl_dense = rec.value("perplexity", method="dense", dataset=d0)
ppl_of = {(m, b): [r["value"] for r in rec.find("perplexity", method=m, bits=str(b), dataset=d0)]
          for m in ("rtn", "gptq") for b in grid_bits}
gain = {b: ppl_of[("rtn", b)][0] - spread.summarize(ppl_of[("gptq", b)])["mean"] for b in grid_bits}  # > 0: GPTQ lower
widest, coarsest = max(grid_bits), min(grid_bits)
p_dense16, p_rtn3 = (reference.paper_value(metric="perplexity", method=m, bits=b, dataset="wikitext2",
                                           model="facebook/opt-125m", paper=GPTQ_PAPER) for m, b in [("dense", 16), ("rtn", 3)])
rise = {m: spread.summarize(ppl_of[(m, widest)])["mean"] - ppl_dense for m in ("rtn", "gptq")}
clear = spread.verdict(ppl_of[("gptq", coarsest)], ppl_of[("rtn", coarsest)]) != "tie" and abs(gain[coarsest]) > abs(gain[widest])  # beyond the seed spread
bullets = ""
if 3 in grid_bits:
    bullets += f"""* **RTN at 3 bits** destroys OPT-125M in the paper (perplexity {p_rtn3:,.0f} against {p_dense16:.2f} dense) and moves
  ours from {ppl_dense:.2f} to {ppl_of[("rtn", 3)][0]:.2f}. Rounding hurts most where a row holds a few large weights that
  stretch its min-max grid.
"""
bullets += f"""* **The seed spread.** At {widest} bits both methods stay within {max(abs(x) for x in rise.values()):.2f} perplexity points of
  dense (RTN {rise["rtn"]:+.2f}, GPTQ {rise["gptq"]:+.2f}); the verdicts compare against the spread over calibration seeds only (RTN, which reads no
  data, has none), not against the spread over evaluation texts, which this notebook does not
  measure (our fixed windows are a sample of the test split). {"The gap between them widens" if clear else "The gap between them does not widen"}
  where the grid gets coarse: RTN minus GPTQ (means) is {gain[widest]:+.2f} at {widest} bits and {gain[coarsest]:+.2f} at {coarsest}.
* **bitsandbytes on a CPU** dequantizes in software: the forward times in section 3 measure
  those CPU kernels, not the GPU kernels the formats were built for. Notebook 22 measures
  decoding speed per format, and shows the GPU runs on record.
* **NF4 vs FP4**: NF4's levels follow the normal distribution of trained weights; compare their
  rows in section 3.
"""
peakllm.say(bullets)

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
ppl_bnb = {q: rec.value("perplexity", method=f"bnb-{q}", dataset=d0) for q in ("int8", "nf4-dq", "fp4-dq")}
bits_bnb = {q: first.loc[(f"bnb-{q}", "8" if q == "int8" else "4"), "bits/param (linear)"] for q in ppl_bnb}
int8_change = ppl_bnb["int8"] / ppl_dense - 1
per_bits = []
for b in grid_bits:
    v = spread.verdict(ppl_of[("gptq", b)], ppl_of[("rtn", b)])
    per_bits.append(f"at {b} bits RTN reaches {spread.fmt(ppl_of[('rtn', b)])} and GPTQ {spread.fmt(ppl_of[('gptq', b)])} "
                    f"({'a tie' if v == 'tie' else 'GPTQ ' + v})")
best = max(grid_bits, key=gain.get)  # where GPTQ's mean lies furthest below RTN's
bullets = f"""
* LLM.int8() is two int8 matrices with a scale per row plus a few input columns in 16-bit: on
  block 0's `fc2`, {len(O)} of {X.shape[1]} columns cross the threshold of {threshold}, and the few lines of section 2
  reproduce bitsandbytes' `Linear8bitLt` to {(Y_cpu - Y_bnb).abs().max():.1e} -- once its CPU rescaling constant
  ({cpu_scale:.7g}{", not 1/127²" if abs(cpu_scale * 127**2 - 1) > 1e-7 else ", which is 1/127²"}) is used.
* Loaded through bitsandbytes, int8 {"keeps perplexity within 0.1% of dense" if abs(int8_change) < 0.001 else f"moves perplexity {int8_change:+.2%} from dense"}
  ({ppl_bnb["int8"]:.2f} against {ppl_dense:.2f}) at {bits_bnb["int8"]:.3f} bits per linear weight; NF4 with double quantization
  needs {bits_bnb["nf4-dq"]:.3f} bits for {ppl_bnb["nf4-dq"]:.2f}, and FP4 at the same size {"loses more" if ppl_bnb["fp4-dq"] > ppl_bnb["nf4-dq"] else "loses no more"} ({ppl_bnb["fp4-dq"]:.2f}).
* RTN and GPTQ store {" / ".join(f"{first.loc[('rtn', str(b)), 'bits/param (linear)']:.3f}" for b in grid_bits)} bits per weight with their row scales
  ({" / ".join(str(b) for b in grid_bits)} bits). Against the dense {ppl_dense:.2f}: {"; ".join(per_bits)}.
  {"The OBS updates matter most where the grid is coarsest" if best == coarsest else f"The OBS updates gain most at {best} bits, not where the grid is coarsest"}:
  there GPTQ's mean lies {abs(gain[best]):.2f} {"below" if gain[best] > 0 else "above"} RTN's.
"""
if 3 in grid_bits:
    rtn3 = ppl_of[("rtn", 3)][0]
    bullets += f"""* RTN at 3 bits moves our model's perplexity by {rtn3 / ppl_dense - 1:+.1%} ({rtn3:.2f} against {ppl_dense:.2f}), while OPT-125M
  collapses in the GPTQ paper ({p_dense16:.2f} to {p_rtn3:,.0f} on WikiText2).
"""
peakllm.say(bullets)

# %% [markdown]
# ## Lab: GPTQ's column loop on one layer
#
# Sections 4 and 5 ran the library's GPTQ on every layer. Here you write its core for one layer:
# Algorithm 1 of the GPTQ paper (Frantar et al. 2022, section 3) on the grid of its experiments
# (section 5: uniform, asymmetric, per row, between the row's min and max), at 4 bits.
#
# **The grid.** Each row of $W$ gets a scale $s$ and a zero point $z$, found once from the row
# before the sweep, with $w_{\min} = \min(\min_j W_{ij},\, 0)$ and $w_{\max} = \max(\max_j W_{ij},\, 0)$:
#
# $$s = \frac{w_{\max} - w_{\min}}{2^b - 1}, \qquad z = \operatorname{round}\!\left(\frac{-w_{\min}}{s}\right), \qquad
# \operatorname{quant}(w) = s\,\Big(\operatorname{clamp}\big(\operatorname{round}(w / s) + z,\ 0,\ 2^b - 1\big) - z\Big).$$
#
# **The sweep.** With $U$ the upper Cholesky factor of the dampened inverse Hessian
# ("$H^{-1} \leftarrow \operatorname{Cholesky}(H^{-1})^\top$" in Algorithm 1; section 3.3), the
# columns $j = 0, 1, \dots$ are quantized from left to right:
#
# $$Q_{:,j} = \operatorname{quant}(W_{:,j}), \qquad E_{:,j} = \frac{W_{:,j} - Q_{:,j}}{U_{jj}}, \qquad
# W_{:,j+1:} \leftarrow W_{:,j+1:} - E_{:,j}\, U_{j,\,j+1:} .$$
#
# The last step is the OBS update (section 3.1): the rounding error of column $j$ moves onto the
# columns not yet quantized, through one row of $U$ shared by every row of $W$.
#
# **Prepared for you** in the cell below, from the dense `model` (it stays dense):
#
# * `W_lab` (rows x cols, fp32): the weights of the first block's `fc2` (for another model, the
#   first linear layer with more inputs than outputs), a dead input's column zeroed as the library
#   does (an input that was zero on every calibration token);
# * `U_lab` (cols x cols): the upper Cholesky factor of $(H + \lambda I)^{-1}$, with
#   $\lambda$ = `percdamp` times the mean of $H$'s diagonal and $H = 2 X X^\top / n$ collected over
#   32 of the calibration windows by the library's accumulator (`obs.prepare` does both steps).
#
# **Hints.**
#
# * Work on a clone of `W`: the sweep changes the columns still to come.
# * Fit $s$ and $z$ once, from `W` before the loop, one value per row; an all-zero row
#   ($w_{\min} = w_{\max} = 0$) takes $w_{\min} = -1$ and $w_{\max} = 1$, as the library does.
# * Write $\operatorname{quant}$ exactly as above, in that order of operations: the check compares
#   your weights with the library's one by one, and a weight that lands on the other level
#   because of a difference in the last bit changes the updates of the rest of its row.
# * You do not need the lazy batches of section 3.2: they regroup the same updates for speed.
#
# The check runs the library's `gptq.GPTQ` on a copy of the same layer with the same $H$, compares
# your $Q$ with its result, and checks that your layer error $\|(W - Q) X\|^2 / n$
# (`obs.layer_error`) is below that of round-to-nearest (RTN) on the same grid.

# %% nbgrader={"grade": false, "grade_id": "lab-21-gptq", "locked": false, "schema_version": 3, "solution": true}
# The lab's layer and its Hessian, from the dense `model` (the library's GPTQ below holds a copy of the layer)
from peakllm.compress import obs, sequential

layers_lab = models.structure.all_linear_layers(model)
name_lab = next(n for n, lin in layers_lab.items() if lin.weight.shape[1] > lin.weight.shape[0])  # OPT: block 0's fc2
W0_lab = layers_lab[name_lab].weight.detach().float().cpu().clone()  # (rows, cols) the dense weights
gptq_lab = gptq.GPTQ(torch.nn.Linear(W0_lab.shape[1], W0_lab.shape[0], bias=False))  # the library's GPTQ, on a copy
hook_lab = layers_lab[name_lab].register_forward_hook(lambda m, inp, out: gptq_lab.add_batch(inp[0].detach().cpu()))
sequential.forward_calibration(model, calibs[seeds[0]][:32], [hook_lab])  # fills H = 2 X X^T / n, then removes the hook
H_lab = gptq_lab.H                                    # (cols, cols)
W_lab, U_lab = obs.prepare(W0_lab, H_lab, percdamp)   # dead inputs zeroed; U = upper Cholesky factor of (H + λI)^-1
print(f"{name_lab}: W {tuple(W_lab.shape)}, H from {gptq_lab.n:,} calibration tokens")


def gptq_quantize(W, U, bits=4):
    """GPTQ's column loop (Algorithm 1, without lazy batches) on a per-row asymmetric min-max grid.

    W: (rows, cols) fp32 weights; U: (cols, cols) upper Cholesky factor of the dampened H^-1.
    Returns Q (rows, cols): every weight on its row's grid of 2^bits levels.
    """
    ### BEGIN SOLUTION
    W = W.clone()
    maxq = 2 ** bits - 1
    wmin = W.min(dim=1).values.clamp(max=0)                  # (rows,)
    wmax = W.max(dim=1).values.clamp(min=0)                  # (rows,)
    flat = wmin == wmax                                      # an all-zero row
    wmin, wmax = torch.where(flat, -1.0, wmin), torch.where(flat, 1.0, wmax)
    s = (wmax - wmin) / maxq                                 # (rows,) scale
    z = torch.round(-wmin / s)                               # (rows,) zero point
    Q = torch.zeros_like(W)
    for j in range(W.shape[1]):
        w = W[:, j]                                          # (rows,) column j, with the updates so far
        q = s * (torch.clamp(torch.round(w / s) + z, 0, maxq) - z)
        Q[:, j] = q
        e = (w - q) / U[j, j]                                # (rows,) scaled rounding error
        W[:, j + 1:] -= e[:, None] * U[j, j + 1:][None, :]   # OBS update of the columns still to come
    return Q
    ### END SOLUTION


Q_lab = gptq_quantize(W_lab, U_lab)  # (rows, cols)

# %% nbgrader={"grade": true, "grade_id": "lab-21-gptq-check", "locked": true, "points": 4, "schema_version": 3, "solution": false} tags=["check"]
from peakllm.workbook import labs

with torch.no_grad():
    gptq_lab.layer.weight.copy_(W0_lab)  # the dense weights, however often this cell runs
gptq_lab.quantize(4, blocksize=blocksize, percdamp=percdamp)  # the library's GPTQ on the same layer and H
Q_ref_lab = gptq_lab.layer.weight.detach().clone()
# a weight near a grid midpoint can round the other way with another summation order (threads, lazy
# updates), and the error feedback carries it along its row: most entries, and the error, must match
labs.agree("Q_lab", Q_lab, Q_ref_lab, at_least=0.99)
err_lab = obs.layer_error(W0_lab, Q_lab, H_lab)
labs.ratio_at_most("layer error", err_lab, obs.layer_error(W0_lab, Q_ref_lab, H_lab), 1.01)
err_rtn_lab = obs.layer_error(W0_lab, quant.rtn(W0_lab, 4), H_lab)
labs.outcome(err_lab < err_rtn_lab, f"your layer error {err_lab:.4g} is not below RTN's {err_rtn_lab:.4g} on the same 4-bit grid")
print(f"{name_lab}, 4 bits: layer error ||(W - Q) X||^2 / n = {err_lab:.4g} with your GPTQ, {err_rtn_lab:.4g} with RTN "
      f"({err_rtn_lab / err_lab:.1f}x yours)")
labs.passed("GPTQ's column loop (4 bits, one layer)")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** The default runs RTN and GPTQ at 4, 3 and 2 bits. Where does GPTQ's advantage over RTN grow, and why? Then rerun with `-p seeds "[0]"`: which verdicts change, and can you still trust them?

# %% [markdown] tags=["solution"]
# **Solution 1.** The coarser the grid, the larger each rounding error, and the more GPTQ gains by moving every error onto the columns still to be rounded (the OBS update) instead of leaving it in the layer's output. Read the RTN and GPTQ rows bit width by bit width: the gap between them is the value of those updates, and it widens as the bits fall. With one calibration seed GPTQ has no spread, and RTN (which reads no data) never has one, so the rule "a tie where the mean ± sd intervals overlap" calls every difference a win or a loss, however small: a gap of a few hundredths, which the default run calls a tie, becomes a verdict. One seed cannot tell a real gap from the luck of the calibration draw.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** From the table, compute how many bytes a 7B-parameter model needs in each format, and which fit a 24 GB GPU with room left for the KV cache.

# %% [markdown] tags=["solution"]
# **Solution 2.** Bytes = 6.74e9 weights x bits / 8, with each format's bits per parameter from the table (row scales and block constants included): e.g. `6.74e9 * 16 / 8 / 1e9` GB for bf16. fp32 does not fit a 24 GB GPU; bf16 fits with little room left for the KV cache and activations; int8 and the 4-bit formats leave most of the card free.

# %% [markdown]
# **Exercise 3 (code).** Vector-wise quantization of one row, without the outlier decomposition:
# for `row`, the first token's input to `fc2` in fp16, compute its absmax `s_row` (a float32
# scalar) and `row_i8`, the row in int8 as section 2 quantizes it. The check compares both with
# bitsandbytes' `int8_vectorwise_quant`.

# %% nbgrader={"grade": false, "grade_id": "ex21-row", "locked": false, "schema_version": 3, "solution": true, "task": false}
row = X16[0]  # (d_in,) fp16
### BEGIN SOLUTION
s_row = row.abs().max().float()
row_i8 = torch.round(row.float() * (127 / s_row)).to(torch.int8)
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex21-row-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
CA, SCA, _ = bnb.functional.int8_vectorwise_quant(row[None].clone())  # threshold 0: no outlier columns
assert row_i8.dtype == torch.int8 and torch.equal(s_row.reshape(1), SCA)
assert (row_i8.int() - CA[0].int()).abs().max() <= 1  # equal up to rounding order
err = (row_i8.float() * s_row / 127 - row.float()).abs().max()
print(f"absmax {s_row:.3f}: one int8 step is {s_row / 127:.4f}, the largest rounding error {err:.4f} (at most half a step)")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
