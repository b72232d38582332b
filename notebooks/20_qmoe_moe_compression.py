# %% [markdown]
# # 20 · Case study 2: QMoE -- compressing a mixture of experts below one bit per parameter
#
# **Goal.** Reproduce the review's second case study: QMoE (Frantar & Alistarh, MLSys 2024)
# compresses the 1.6-trillion-parameter SwitchTransformer-c2048 from terabytes in bf16 to under
# 160 GB -- under one bit per parameter -- so it runs on one server. We follow its steps on our own MoE: where the
# parameters live, calibration through the router, GPTQ with a ternary grid on every expert, the
# natural sparsity that follows, and the dictionary code that stores it, with Tables 4 and 6 of
# the paper beside our figures.
#
# **Prerequisites.** Notebook 10 (the OBS / GPTQ column sweep). Notebook 21 shows GPTQ on a dense model.
#
# **Runtime on the default** (`tiny-moe`, 2 CPU cores): about 1.5 minutes; peak memory about 1.1 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-moe"  # MoE to compress: tiny-moe (shipped), a local directory, or a Hub id such as google/switch-base-8
bits: str = "ternary"  # headline grid of the experts: ternary, 2, 3 or 4
method: str = "gptq"  # headline method: gptq (QMoE) or rtn (round to nearest)
grid_bits: list = ["ternary", 2, 3]  # bit widths of the loss-vs-bits comparison (each with rtn and gptq)
seeds: list = [0, 1, 2]  # calibration seeds: GPTQ runs once per seed (RTN reads no data)
calib_samples: int = 128  # calibration windows of the train split
calib_seqlen: int = 256  # tokens per calibration window
exclude_special: bool = True  # take special tokens out of the calibration text (QMoE masks them)
percdamp: float = 0.1  # dampening, as a share of the mean Hessian diagonal (QMoE: 0.1, 10x GPTQ's)
max_tokens_mult: float = 4.0  # cap each expert's calibration tokens at this multiple of the mean (0: no cap)
dict_log2: int = 12  # the dictionary holds 2**dict_log2 entries; codewords are dict_log2 bits wide
max_pairs: int = 14  # longest sequence of ternary pairs one codeword stands for (QMoE: 14)
eval_windows: int = 0  # test windows for the loss; 0 means all of the test split
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds everything that is not a calibration seed
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import models, show_source
from peakllm.compress import obs, qmoe, quant, ternary_coding
from peakllm.core import checks, spread
from peakllm.data import evaldata
from peakllm.workbook import compare
from tqdm.auto import tqdm  # after peakllm, which quiets tqdm's notice about missing ipywidgets

rec, dev = peakllm.setup("20_qmoe_moe_compression", globals())
bits, grid_bits = quant.parse_bits(bits), [quant.parse_bits(b) for b in grid_bits]
checks.choice("method", method, qmoe.QUANT_METHODS)
seeds = checks.seeds("seeds", seeds)
for k, v in dict(calib_samples=calib_samples, calib_seqlen=calib_seqlen, max_pairs=max_pairs).items():
    checks.positive_int(k, v)
checks.in_range("dict_log2", dict_log2, 4, 24, high_inclusive=True)

# %% [markdown]
# ## 1. Where the parameters of an MoE live
#
# A mixture-of-experts layer replaces one feed-forward block by E copies (experts) and a router
# that sends each token to k of them. Parameters grow E-fold, compute per token only k-fold:
# that is why MoEs are cheap to run per token and expensive to *store*.

# %%
model, tokenizer = models.load(model_name, device=str(dev))
qmoe.check_moe(model)
E, k = models.moe.routing(model.config)
share = qmoe.experts_share(model)
print(f"{type(model).__name__}: {E} experts per layer, {k} per token")
pd.DataFrame([{"part": "experts", "parameters": share["experts"], "share": round(share["share"], 3)},
              {"part": "everything else (attention, embeddings, routers, norms)", "parameters": share["dense"],
               "share": round(1 - share["share"], 3)}]).set_index("part")

# %% [markdown]
# ## 2. Calibration through the router
#
# GPTQ needs, for each matrix, the inputs it sees. An expert sees only the tokens the router sends
# it, so each expert matrix gets its **own** Hessian from its routed tokens. Two QMoE details:
# special tokens are taken out of the calibration text, and no expert gets more than
# `max_tokens_mult` times the mean number of tokens (N k / E).

# %%
seqlen = min(calib_seqlen, models.context_length(model))
calibs = {}
for s in seeds:  # one calibration set per seed
    c = evaldata.calibration("shakespeare", tokenizer, nsamples=calib_samples, seqlen=seqlen, seed=s)
    if exclude_special:
        flat = qmoe.without_special_tokens(c.reshape(-1), tokenizer)
        c = flat[: len(flat) // seqlen * seqlen].view(-1, seqlen)
    calibs[s] = c
calib = calibs[seeds[0]]
test_ids = evaldata.eval_ids("shakespeare", tokenizer)
sentinel = qmoe.first_sentinel(tokenizer)  # T5's <extra_id_0> for SwitchTransformers' span-corruption loss
eval_seqlen = min(256, models.context_length(model))
n_windows = eval_windows or None
cap = qmoe.token_cap(model.config, calib.numel(), max_tokens_mult)
print(f"calibration: {calib.shape[0]} windows x {calib.shape[1]} tokens = {calib.numel():,} tokens; "
      f"mean per expert {calib.numel() * k / E:,.0f}; cap {cap if cap else 'none'}")
show_source(obs.Calibration.take)  # every collector counts (seen) and caps (n <= cap) its tokens

# %% [markdown]
# ## 3. One expert: RTN vs GPTQ on the ternary and 2-bit grids
#
# The **ternary** grid of a row has three values {wmin, 0, wmax}: w > wmax/2 goes to wmax,
# w < wmin/2 to wmin, the rest to 0. We take one expert matrix, collect its routed inputs, and
# compare the output error ||W X - Ŵ X||² / ||W X||² of round-to-nearest and of GPTQ.

# %%
import torch

names = list(qmoe.expert_layers(model))
name = names[len(names) // 2]
probe = qmoe.calibrate_expert(model, calib, name)
W0 = probe.layer.weight.detach().clone()
signal = obs.layer_error(W0, torch.zeros_like(W0), probe.H)
one = []
for b in ["ternary", 2]:
    err_rtn = obs.layer_error(W0, quant.rtn(W0, b), probe.H) / signal
    probe.quantize(b, percdamp=percdamp)
    err_gptq = obs.layer_error(W0, probe.layer.weight, probe.H) / signal
    with torch.no_grad():
        probe.layer.weight.copy_(W0)  # put the dense expert back
    one.append({"bits": str(b), "rtn": round(err_rtn, 4), "gptq": round(err_gptq, 4), "gptq / rtn": round(err_gptq / err_rtn, 3)})
    rec.add("layer_error", round(err_gptq, 4), "relative", method="gptq", bits=str(b))
    rec.add("layer_error", round(err_rtn, 4), "relative", method="rtn", bits=str(b))
print(f"{name}: {tuple(W0.shape)}, {probe.n:,} routed calibration tokens")
pd.DataFrame(one).set_index("bits")

# %% [markdown]
# ## 4. All experts: loss on the test split
#
# `qmoe.compress` runs the sequential driver of notebook 10 over the blocks; in every block each
# expert matrix is quantized from its own routed tokens, and nothing else in the model changes.

# %%
show_source(qmoe.compress)

# %%
import copy

dense_loss = qmoe.eval_loss(model, test_ids, eval_seqlen, max_windows=n_windows, sentinel=sentinel)
rec.add("loss", round(dense_loss, 4), "nats", method="dense", bits="32")
variants, reports, seed_rows = {}, {}, []
grid = sorted(set(grid_bits) | {bits}, key=lambda b: (b != "ternary", b))
runs = [(b, m, s) for b in grid for m in ["rtn", "gptq"] for s in (seeds if m == "gptq" else seeds[:1])]
for b, m, s in tqdm(runs, desc="RTN and GPTQ"):
    mm = copy.deepcopy(model)
    report = qmoe.compress(mm, calibs[s], bits=b, method=m, percdamp=percdamp, max_tokens_mult=max_tokens_mult,
                           progress=False)
    loss = qmoe.eval_loss(mm, test_ids, eval_seqlen, max_windows=n_windows, sentinel=sentinel)
    seed_rows.append({"method": m, "bits": str(b), "seed": s if m == "gptq" else None, "loss": loss})
    rec.add("loss", round(loss, 4), "nats", method=m, bits=str(b), seed=s if m == "gptq" else None)
    if s == seeds[0]:  # the first seed's models serve the sections below
        reports[(m, b)] = report
        variants[(m, b)] = {"loss": loss, "zeros": qmoe.zero_share(mm)}
        if (m, b) == (method, bits):
            compressed = mm
    del mm
runs_df = pd.DataFrame(seed_rows)
loss_table = spread.table(runs_df, ["method", "bits"], "loss", digits=4)
loss_table["increase"] = (loss_table["mean"] - dense_loss).round(4)
print(f"dense loss {dense_loss:.4f}; GPTQ: mean ± sd over calibration seeds {seeds} (RTN reads no data: one run)")
loss_table[["mean ± sd", "n", "increase"]]

# %%
for b in ["ternary", "2"]:
    g = runs_df[(runs_df.method == "gptq") & (runs_df.bits == b)].loss.tolist()
    r = runs_df[(runs_df.method == "rtn") & (runs_df.bits == b)].loss.tolist()
    if g and r:
        v = spread.verdict(g, r)
        print(f"{b:>7}: loss increase RTN {r[0] - dense_loss:+.4f}, GPTQ {spread.summarize(g)['mean'] - dense_loss:+.4f} "
              f"(sd {spread.summarize(g)['sd']:.4f}) -> GPTQ keeps {1 - (spread.summarize(g)['mean'] - dense_loss) / (r[0] - dense_loss):.0%} "
              f"of RTN's damage away: {'a tie' if v == 'tie' else 'GPTQ ' + v}")
hist = qmoe.routing_histogram(reports.get(("gptq", bits), []))
if len(hist):
    piv = hist.pivot_table(index="expert", columns="layer", values="routed")
    ax = piv.plot.bar(figsize=(8, 3), title="calibration tokens the router sent to each expert")
    if cap:
        ax.axhline(cap, color="k", ls=":", label=f"cap ({max_tokens_mult:g} x mean)")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=7, ncol=2)

# %% [markdown]
# ## 5. The natural sparsity of ternary experts
#
# With three levels and the threshold at half the row's extreme, most weights land on 0.
# QMoE sees 86-89% zeros on Switch; that skew is what lets an entropy coder go below one bit.

# %%
zrows = []
for (m, b), v in variants.items():
    if b == "ternary":
        zrows.append({"method": m, "zero share": round(v["zeros"], 4)})
        rec.add("zero_share", round(v["zeros"], 4), "fraction", bits="ternary", method=m)
pd.DataFrame(zrows).set_index("method") if zrows else print("no ternary variant in grid_bits")

# %% [markdown]
# ## 6. Storing ternary weights below one bit
#
# The ideal (zero-order entropy) bound of three symbols with our frequencies, a generic compressor
# (`lzma`), and QMoE's scheme (`peakllm.compress.ternary_coding`): pairs of ternary weights (9 symbols), a
# dictionary of the most frequent sequences of up to `max_pairs` pairs, fixed-width codewords
# so a GPU can decode rows in parallel, and per row a 32-bit offset plus bf16 wmin / wmax.

# %%
print(ternary_coding.__doc__)

# %%
if bits == "ternary":
    enc = qmoe.encode_experts(compressed, size=2 ** dict_log2, max_pairs=max_pairs)
    print(f"decoded {enc['verified']} expert matrices from their bytes: bit-exact")
    coder_rows = [
        {"coder": "entropy bound", "codes only": round(enc["entropy"], 4), "with rows + dictionary": None},
        {"coder": "lzma (generic)", "codes only": round(enc["lzma"], 4), "with rows + dictionary": None},
        {"coder": f"dictionary 2^{dict_log2}", "codes only": round(enc["codes"], 4), "with rows + dictionary": round(enc["all"], 4)}]
    for r, c in zip(coder_rows, ["entropy", "lzma", "dictionary"]):
        rec.add("bits_per_param", r["codes only"], "bit", scope="experts", coder=c, counts="codes")
    rec.add("bits_per_param", round(enc["all"], 4), "bit", scope="experts", coder="dictionary", counts="all")
    display(pd.DataFrame(coder_rows).set_index("coder"))
    print(f"codes: {enc['codes'] / enc['entropy']:.3f} x the entropy bound; "
          f"{enc['codes']:.3f} bit per expert parameter for the codewords alone")
    print(f"where the 'all' figure goes: codewords {enc['code_bits'] / enc['params']:.3f}, "
          f"rows {enc['row_bits'] / enc['params']:.3f}, dictionary {enc['dictionary_bits'] / enc['params']:.3f} bit/param")
else:
    print(f"bits={bits!r}: the dictionary code is for ternary weights; a {bits}-bit grid is stored as {bits} bits "
          "per weight plus a scale and zero per row")

# %% [markdown]
# Our rows are short (192 and 256 columns), so the 64 bits of each row weigh 64/256 to 64/192 bit per
# parameter. Switch's expert rows have 768 to 6,144 columns: the same code on wider rows, with our
# model's symbol frequencies, shows the all-inclusive figure falling toward the codes alone.

# %%
if bits == "ternary":
    allq = torch.cat([torch.sign(l.weight.detach()).reshape(-1) for l in qmoe.expert_layers(compressed).values()])
    probs = tuple((allq == v).float().mean().item() for v in (-1, 0, 1))
    scale = pd.DataFrame(qmoe.bits_at_scale(probs, [192, 768, 3072, 6144], size=2 ** dict_log2, max_pairs=max_pairs)).round(4)
    display(scale.set_index("columns"))

# %% [markdown]
# ## 7. Compression ratio
#
# Against bf16 storage (16 bits per weight), as in the paper: experts only, and the whole model
# with its dense part kept in bf16.

# %%
if bits == "ternary":
    expert_bits = enc["code_bits"] + enc["row_bits"] + enc["dictionary_bits"]
    ratio_experts = 16 * share["experts"] / expert_bits
    ratio_full = 16 * share["total"] / (16 * share["dense"] + expert_bits)
    rec.add("compression_ratio", round(ratio_experts, 2), "x", scope="experts")
    rec.add("compression_ratio", round(ratio_full, 2), "x", scope="full")
    print(f"experts: {16 * share['experts'] / 8 / 2**20:.2f} MiB in bf16 -> {expert_bits / 8 / 2**20:.2f} MiB  ({ratio_experts:.2f}x)")
    print(f"full model: {16 * share['total'] / 8 / 2**20:.2f} MiB -> {(16 * share['dense'] + expert_bits) / 8 / 2**20:.2f} MiB  ({ratio_full:.2f}x)")

# %% [markdown]
# ## 8. Paper vs ours
#
# Tables 4 and 6 of QMoE (Switch models, C4 masked-LM loss) beside our `tiny-moe` (next-token loss
# on held-out Shakespeare).

# %%
losses = {"dense loss": dict(metric="loss", method="dense")}
losses |= {f"{'QMoE' if m == 'gptq' else 'RTN'} {'ternary' if b == 'ternary' else '2-bit'}": dict(metric="loss", method=m, bits=b)
           for m in ["rtn", "gptq"] for b in [2, "ternary"]}
columns = losses | {"zeros (ternary)": dict(metric="zero_share"),
                    "ratio experts": dict(metric="compression_ratio", scope="experts"),
                    "ratio full": dict(metric="compression_ratio", scope="full")}
paper = compare.paper_table({m: {"model": m} for m in ["google/switch-base-128", "google/switch-large-128",
                                                       "google/switch-c-2048"]}, columns, index="model",
                            where="Tables 4 and 6")
ours = {"dense loss": round(dense_loss, 3)}
ours |= {name: round(variants[(f["method"], f["bits"])]["loss"], 3) if (f["method"], f["bits"]) in variants else None
         for name, f in losses.items() if name != "dense loss"}
ours["zeros (ternary)"] = round(variants[("gptq", "ternary")]["zeros"], 3) if ("gptq", "ternary") in variants else None
ours["ratio experts"] = round(ratio_experts, 2) if bits == "ternary" else None
ours["ratio full"] = round(ratio_full, 2) if bits == "ternary" else None
pd.concat([paper, pd.DataFrame([ours], index=pd.Index([f"ours: {model_name}"], name="model"))])

# %% [markdown]
# What differs and why:
#
# * **The same pattern, at a smaller scale.** Ternary RTN is far worse than ternary GPTQ there as
#   here; 2-bit GPTQ is close to dense.
# * **Fewer zeros, so more bits.** Our experts come out with fewer zeros than Switch's 86-89%:
#   their rows are 192-256 weights long (Switch: 768-6,144) and the model was trained briefly, so
#   the row extremes sit closer to the bulk; the threshold wmax / 2 then keeps more weights. The
#   entropy bound rises with it, and the dictionary code follows the bound.
# * **Short rows** make the per-row metadata and the dictionary expensive (section 6); the table
#   of growing row widths shows where the paper's 0.8 bit comes from.
# * **Loss**: the paper reports C4 masked-LM loss of encoder-decoder models; ours is next-token
#   loss on held-out plays. With `-p model_name google/switch-base-8` (GPU, Hub) the same cells
#   run on a real SwitchTransformer with a span-corruption loss.

# %%
import math

fig, ax = plt.subplots(figsize=(6, 4))
cols = {"rtn": "tab:red", "gptq": "tab:blue"}
mean_cols = sum(l.weight.shape[1] * l.weight.shape[0] for l in qmoe.expert_layers(model).values()) / \
            sum(l.weight.shape[0] for l in qmoe.expert_layers(model).values())
for m in ["rtn", "gptq"]:
    pts = []
    for (mm_, b), v in variants.items():
        if mm_ != m:
            continue
        if b == "ternary":
            x = enc["all"] if bits == "ternary" else math.log2(3) + 32 / mean_cols
        else:
            x = b + 32 / mean_cols  # b bits + a 16-bit scale and zero per row
        pts.append((x, v["loss"]))
    pts.sort()
    ax.plot(*zip(*pts), "o-", color=cols[m], label=m)
ax.axhline(dense_loss, color="k", ls=":", label="dense (fp32)")
ax.set(xlabel="bits per expert parameter (with per-row metadata)", ylabel="test loss (nats/token)",
       title=f"{model_name}: loss against storage")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `percdamp` to 0.01 (GPTQ's default) and rerun. What happens to the ternary GPTQ loss, and why does a coarse grid need stronger dampening?

# %% [markdown] tags=["solution"]
# **Solution 1.** Compare the ternary GPTQ loss and the share of zero expert weights that the run prints with those of the default. The dampening adds a share of the mean diagonal to H before inverting it. With a grid of only three levels every rounding error is large, GPTQ pushes each onto the columns still to be rounded, and where H has small eigenvalues a weakly damped inverse amplifies them; a stronger dampening also pulls the updates toward plain rounding, which leaves more weights at zero. On our small Hessians the effect is modest; on Switch-c2048 QMoE found 0.1 necessary for stable results.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Set `dict_log2` to 8 and then 16. How do the codes-only and all-inclusive bits per parameter move, and which dictionary size suits this model?

# %% [markdown] tags=["solution"]
# **Solution 2.** A bigger dictionary finds longer frequent sequences, so the codewords alone get cheaper; but the dictionary itself ((entries - 9) x (codeword bits + 4) bits) is stored once for all expert weights, so its share per parameter is that size divided by the expert parameter count of section 1. For a model with a few million expert weights that share grows quickly with the dictionary, and the all-inclusive figure is lowest at a middle size; QMoE's 2^16 entries cost nothing per parameter at 1.6 trillion parameters.

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
