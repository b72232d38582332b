# %% [markdown]
# # 21 · Case study 2: weight quantization -- bitsandbytes, RTN and GPTQ
#
# **Goal.** Fewer bits per weight make a model smaller and, where decoding is memory-bound,
# faster (notebook 22). Compare the two families the review describes: quantization at load time
# with **bitsandbytes** (LLM.int8(), 4-bit NF4 and FP4, with and without double quantization,
# through `transformers`' `BitsAndBytesConfig`) and one-shot post-training quantization on a
# per-row grid, **RTN** and **GPTQ**, at 4 and 3 bits. For each: perplexity, bytes of weights, bits
# per parameter and forward latency, with the GPTQ paper's OPT-125M rows beside ours.
#
# **Prerequisites.** Notebook 10 (the OBS column sweep GPTQ shares with SparseGPT).
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): about 1.5 minutes; peak memory about 0.9 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to quantize: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
bnb_methods: list = ["int8", "nf4", "nf4-dq", "fp4", "fp4-dq"]  # bitsandbytes formats (-dq: double quantization)
grid_bits: list = [4, 3]  # bit widths of RTN and GPTQ
calib_dataset: str = "shakespeare"  # calibration text for GPTQ: shakespeare (shipped train split) or c4 (Hub)
calib_samples: int = 128  # calibration windows (the paper: 128)
calib_seqlen: int = 0  # tokens per calibration window; 0 means the model's context (the paper: 2048)
eval_datasets: list = ["shakespeare"]  # perplexity texts: shakespeare, wikitext2, ptb, c4
blocksize: int = 128  # GPTQ columns per block (lazy batch updates)
percdamp: float = 0.01  # dampening, as a share of the mean Hessian diagonal
latency_batch: int = 1  # sequences per timed forward pass
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds calibration sampling and everything else
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import models, show_source
from peakllm.compress import formats, gptq, quant
from peakllm.core import checks, memory
from peakllm.data import evaldata
from peakllm.workbook import compare, measure
from tqdm.auto import tqdm  # after peakllm, which quiets tqdm's notice about missing ipywidgets

rec, dev = peakllm.setup("21_weight_quantization", globals())
checks.choices("bnb_methods", bnb_methods, [m for m in models.QUANTIZATIONS if m != "none"])
for q in bnb_methods:
    models.bnb_config(q, dev)  # bitsandbytes present and able to run on this device
grid_bits = [quant.parse_bits(b) for b in grid_bits]

# %% [markdown]
# ## 1. The baseline and what we measure
#
# * **perplexity** on each evaluation text (the protocol of notebook 00);
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
x = next(iter(eval_ids.values()))[:, :ctx].repeat(latency_batch, 1).to(dev)


rows = [measure.model_row(model, "dense", 32, eval_ids, x, ctx)]
pd.DataFrame(rows)

# %% [markdown]
# ## 2. bitsandbytes: quantized as the model loads
#
# `models.load_model(..., quantization=...)` hands transformers a `BitsAndBytesConfig`; every
# `nn.Linear` inside the blocks becomes a bitsandbytes layer:
#
# * **int8** -- LLM.int8() (Dettmers et al. 2022): int8 weights with a scale per row; at run time,
#   input columns with outliers (|x| > 6) are multiplied in 16-bit, the rest in int8;
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
    rows.append(measure.model_row(m, f"bnb-{q}", 8 if q == "int8" else 4, eval_ids, x, ctx, memory.weight_bytes(m), 8 * b / n))
    del m
pd.DataFrame(rows)

# %% [markdown]
# ## 3. RTN and GPTQ on a per-row grid
#
# Both round each row of W to 2^b levels between its min and max. RTN rounds every weight to the
# nearest level; GPTQ rounds columns left to right and moves each rounding error onto the columns
# still to come (the OBS update), from 128 calibration windows. Stored, a b-bit matrix takes b bits
# per weight plus a 16-bit scale and zero per row (`formats.packed_bytes`); here the rounded values
# stay in fp32 tensors, so the forward latency is the dense one.

# %%
show_source(gptq.GPTQ)
calib = evaldata.calibration(calib_dataset, tokenizer, nsamples=calib_samples, seqlen=seqlen, seed=seed)
linear = memory.linear_weights(model)
head_and_rest = memory.weight_bytes(model) - linear[0]

# %%
import copy

grid = {}
for b in tqdm(grid_bits, desc="bit widths"):
    for method in ["rtn", "gptq"]:
        m = copy.deepcopy(model)
        layer_rows = gptq.quantize_model(m, calib, method=method, bits=b, blocksize=blocksize, percdamp=percdamp, progress=False)
        packed = sum(formats.packed_bytes(*r["shape"], b) for r in layer_rows)
        rows.append(measure.model_row(m, method, b, eval_ids, x, ctx, head_and_rest + packed, 8 * packed / linear[1]))
        del m
table = pd.DataFrame(rows)
dense = table.iloc[0]
for d in eval_datasets:
    table[f"increase {d}"] = (table[f"ppl {d}"] - dense[f"ppl {d}"]).round(3)
for _, r in table.iterrows():
    for d in eval_datasets:
        rec.add("perplexity", r[f"ppl {d}"], "ppl", method=r["method"], bits=r["bits"], dataset=d)
    rec.add("weight_bytes", int(r["weight bytes"]), "B", method=r["method"], bits=r["bits"])
table.assign(**{"weight bytes": table["weight bytes"].map(memory.human)})

# %%
d0 = eval_datasets[0]
inc = {(r["method"], r["bits"]): r[f"increase {d0}"] for _, r in table.iterrows()}
for b in grid_bits:
    if ("rtn", str(b)) in inc:
        print(f"{b}-bit on {d0}: perplexity increase RTN {inc[('rtn', str(b))]:+.3f}, GPTQ {inc[('gptq', str(b))]:+.3f}")
if ("rtn", "4") in inc and inc[("rtn", "4")] > 0:
    print(f"GPTQ 4-bit / RTN 4-bit increase: {inc[('gptq', '4')] / inc[('rtn', '4')]:.2f}")

fig, ax = plt.subplots(figsize=(6.5, 4))
for fam, style in [("bnb", "s"), ("rtn", "o"), ("gptq", "^")]:
    sub = table[table.method.str.startswith(fam)]
    ax.scatter(sub["bits/param (linear)"], sub[f"ppl {d0}"], marker=style, s=50, label=fam)
    for _, r in sub.iterrows():
        ax.annotate(r["method"] if fam == "bnb" else f"{r['method']} {r['bits']}",
                    (r["bits/param (linear)"], r[f"ppl {d0}"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
ax.axhline(dense[f"ppl {d0}"], color="k", ls=":", label="dense fp32")
ax.set(xscale="log", xlabel="bits per linear-layer weight (with constants)", ylabel=f"perplexity ({d0})",
       title=f"{model_name}: quality against storage")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 4. Paper vs ours
#
# The GPTQ paper's OPT-125M rows (Tables 2-3; fp16 baseline) beside ours. As in notebook 10,
# compare the pattern -- GPTQ recovers most of what RTN loses, and more so at 3 bits -- rather
# than the digits: our model is 30x smaller and its test text is held-out Shakespeare. With
# `-p model_name facebook/opt-125m -p eval_datasets '["wikitext2","ptb","c4"]' -p calib_dataset c4`
# (Hub access) the same cells run the paper's setting.

# %%
settings = [("dense", 16), ("rtn", 4), ("gptq", 4), ("rtn", 3), ("gptq", 3)]
paper = compare.paper_table({f"{m} {b}-bit": dict(method=m, bits=b) for m, b in settings},
                            {f"paper OPT-125M {ds}": dict(dataset=ds) for ds in ["wikitext2", "ptb", "c4"]},
                            metric="perplexity", model="facebook/opt-125m")
ours = {f"{r['method']} {16 if r['method'] == 'dense' else r['bits']}-bit": r for _, r in table.iterrows()}
compare.with_ours(paper, {f"ours {model_name} {d}": {k: r[f"ppl {d}"] for k, r in ours.items()} for d in eval_datasets})

# %% [markdown]
# What differs and why:
#
# * **RTN at 3 bits** destroys OPT-125M (perplexity 1,300) but barely hurts our model: the tiny
#   model's rows have few outliers, so a min-max grid of 8 levels still fits them.
# * **bitsandbytes on a CPU** dequantizes in software: the 4-bit and int8 forwards are slower
#   here, not faster. The speed comes on a GPU, where the kernels read 4 or 8 bits per weight
#   from memory (notebook 22, and `data/results/gpu/` where a GPU run was recorded).
# * **NF4 vs FP4**: NF4's levels follow the normal distribution of trained weights and lose less.

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Add `2` to `grid_bits` and rerun. Where does GPTQ's advantage over RTN grow, and why?

# %% [markdown] tags=["solution"]
# **Solution 1.** The coarser the grid, the larger each rounding error, and the more GPTQ gains by moving every error onto the columns still to be rounded (the OBS update) instead of leaving it in the layer's output. Read the RTN and GPTQ rows bit width by bit width: the gap between them is the value of those updates, and it widens as the bits fall.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** From the table, compute how many bytes a 7B-parameter model needs in each format, and which fit a 24 GB GPU with room left for the KV cache.

# %% [markdown] tags=["solution"]
# **Solution 2.** Bytes = 6.74e9 weights x bits / 8, with each format's bits per parameter from the table (row scales and block constants included): e.g. `6.74e9 * 16 / 8 / 1e9` GB for bf16. fp32 does not fit a 24 GB GPU; bf16 fits with little room left for the KV cache and activations; int8 and the 4-bit formats leave most of the card free.

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
