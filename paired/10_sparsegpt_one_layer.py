# %% [markdown]
# # 10.1 · Case study 1: SparseGPT on one layer, by hand
#
# **Goal.** SparseGPT (Frantar & Alistarh, ICML 2023) removes half of a GPT-family model's weights
# **in one shot, without retraining**, by solving one sparse regression problem per linear layer.
# This notebook builds that solver by hand: the Optimal Brain Surgeon step for one weight, the
# same step repeated for several weights of a row, the row-Hessian problem, and the column order
# that lets every row share one sequence of inverses. Then SparseGPT, magnitude pruning and Wanda
# prune one real layer of the shipped model at every sparsity, and in the lab you write
# SparseGPT's column sweep yourself. Notebook 10.2 (`10_sparsegpt_one_shot_pruning`) takes the
# solver through the whole model and sets it beside the paper.
#
# **Prerequisites.** Notebook 00 (loading, perplexity protocol). Linear algebra: least squares,
# Cholesky.
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): under a minute; the last cell prints the
# time and the peak memory of this run.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to prune: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
methods: list = ["magnitude", "wanda", "sparsegpt"]  # pruning methods compared on the layer
calib_dataset: str = "shakespeare"  # calibration text: shakespeare (shipped train split) or c4 (Hub)
calib_samples: int = 128  # calibration windows (the paper: 128)
calib_seqlen: int = 0  # tokens per calibration window; 0 means the model's context (the paper: 2048)
calib_seed: int = 0  # seed of the calibration windows
blocksize: int = 128  # SparseGPT columns per block (mask selection and lazy updates)
percdamp: float = 0.01  # dampening: this share of the mean Hessian diagonal is added to it
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds the toy problems and everything that is not the calibration windows
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.compress import baselines, obs, pruning, sparsegpt
from peakllm.core import checks, perplexity, reference, timing
from peakllm.data import evaldata
from peakllm.workbook import diagrams, explore

rec, dev = peakllm.setup("10_sparsegpt_one_layer", globals())
checks.choices("methods", methods, pruning.PRUNING_METHODS)
checks.in_range("calib_samples", calib_samples, 1, 10**6)

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
seqlen = perplexity.check_seqlen(model, calib_seqlen or None)  # 0: the context; longer fails
N = models.count_params(model)["total"]
one_pass = 2 * N * calib_samples * seqlen          # forward FLOPs over the calibration set
retrain = 6 * N * 1e9                               # one epoch over 1 B tokens, forward + backward
print(f"{model_name}: N = {N:,} parameters, context {ctx}")
print(f"one-shot calibration pass : {one_pass:.2e} FLOPs ({calib_samples} x {seqlen} tokens)")
print(f"retraining on 1 B tokens  : {retrain:.2e} FLOPs ({retrain / one_pass:,.0f} x more)")
for e in reference.paper_numbers(metric="prune_seconds"):
    print(f"paper: {e['model']} pruned in {e['value'] / 3600:.0f} h ({e['note']})")

# %% [markdown]
# ## 2. Calibration data
#
# The paper takes 128 random windows of 2,048 tokens from C4's training set, with seed 0.
# Offline we take `calib_samples` random windows of the model's context from the **train** split
# of the corpus -- never from the test plays that notebook 10.2 scores the pruned models on.
# Every statistic of this notebook comes from these windows.

# %%
calib = evaldata.calibration(calib_dataset, tokenizer, calib_samples, seqlen, seed=calib_seed)
print(f"calibration: {tuple(calib.shape)} token ids from {calib_dataset!r} (seed {calib_seed})")
print(repr(tokenizer.decode(calib[0, :40])))

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
# $W_{:,j:} \mathrel{-}= \frac{W_{:,j} - Q_{:,j}}{U_{jj}}\, U_{j,j:}$ -- in `obs.column_sweep`, the
# product `err ⊗ Hinv1[i, i:]` (`update`) taken off the block's columns from i on. Checked on the
# tiny H, row by row:

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
# factor, squared -- not the diagonal of H⁻¹; `sparsegpt.lowest` finds them). The whole algorithm, in
# the library: the sweep GPTQ and SparseGPT share (its loop takes each column and row of the block as
# a view made once per block, and works in place), then what SparseGPT adds to it:

# %%
show_source(obs.column_sweep)
show_source(sparsegpt.SparseGPT)

# %%
name, layer, acc = explore.microscope_layer(model, calib)   # the largest layer of the second block, its H
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
    rows.append({"method": method, "relative output error": float(f"{err:.4g}"), "time": f"{t.seconds * 1e3:.1f} ms"})
    rec.add("layer_error", float(f"{err:.4g}"), "relative", method=method, sparsity=0.5)
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

# %% nbgrader={"grade": false, "grade_id": "lab-10-sweep", "locked": false, "schema_version": 3, "solution": true, "task": false}
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

# %% nbgrader={"grade": true, "grade_id": "lab-10-sweep-check", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false} tags=["check"]
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
# **Exercise 1.** SparseGPT chooses its mask block by block: at the first column of each block of
# B columns, from the block's weights as the earlier blocks' updates have left them. Name two
# things that would change if it chose the whole mask once, before the sweep, from the dense
# weights (the lowest saliencies of the whole matrix).

# %% [markdown] tags=["solution"]
# **Solution 1.** First, the saliencies would be those of the dense weights. The OBS updates of the
# earlier columns move every later weight of the row -- that is how the row compensates -- so by
# the time a block comes up, a weight that was small may have grown and a large one may have
# shrunk; choosing per block ranks each weight as it is when its columns are reached (the paper's
# "adaptive mask selection"). Second, the zeros could bunch up: a mask over the whole matrix may
# take most weights of some columns and few of others, while choosing per block removes exactly
# the share p of every block of B columns, so the sparsity is even across the layer's inputs.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Wanda scores a weight by |w_ij| · ‖x_j‖, the size of the weight times the norm
# of its input feature over the calibration tokens. Show that when H = 2XXᵀ/n is diagonal,
# Wanda's score ranks the weights of a row exactly as the OBS saliency ε_q = w_q² / [H⁻¹]_qq
# does. What does Wanda then leave out that SparseGPT keeps?

# %% [markdown] tags=["solution"]
# **Solution 2.** With H diagonal, H_qq = 2‖x_q‖²/n and [H⁻¹]_qq = 1/H_qq, so
# ε_q = w_q² · H_qq = (2/n) · (|w_q| · ‖x_q‖)²: the square of Wanda's score times a constant, the
# same order. Wanda therefore is the OBS saliency with the off-diagonal of H ignored, and it
# removes weights without the OBS update δ_q: the kept weights never compensate. SparseGPT keeps
# both, the correlations between input features (through the whole of chol(H⁻¹)) and the update of
# the columns still to come -- which is why its layer error in section 3 can be lower at the same
# sparsity, at the price of a Cholesky factorization and a column sweep.

# %% [markdown]
# **Exercise 3 (code).** Take row 0 of the layer of section 3 (`w_ex`) and its Hessian,
# dampened as the sweep dampens it (`H_ex`). Compute the OBS saliency ε_q = w_q² / [H⁻¹]_qq of
# every weight of the row (`eps_ex`, one value per column) and the index of the weight OBS
# would remove first (`q_star`). The check cell compares your figures with `obs.remove_one`.

# %% nbgrader={"grade": false, "grade_id": "ex10-1", "locked": false, "schema_version": 3, "solution": true, "task": false}
H_ex = obs.dampened(acc.H.double(), percdamp)  # (columns, columns), as the sweep dampens it
w_ex = W0[0].double()                        # (columns,) row 0 of the layer
### BEGIN SOLUTION
eps_ex = w_ex ** 2 / torch.linalg.inv(H_ex).diag()   # ε_q for every q
q_star = int(eps_ex.argmin())
### END SOLUTION
print(f"{len(eps_ex)} saliencies; OBS removes w_{q_star} first")

# %% nbgrader={"grade": true, "grade_id": "ex10-1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
sample = torch.randperm(len(w_ex), generator=torch.Generator().manual_seed(0))[:31].tolist() + [q_star]
increase_ex = {j: obs.remove_one(w_ex, H_ex, j)[1] for j in sample}   # the library: loss increase ε / 2
assert tuple(eps_ex.shape) == tuple(w_ex.shape)
assert all(abs(2 * increase_ex[j] - eps_ex[j].item()) <= 1e-6 * eps_ex[j].item() + 1e-18 for j in sample)
assert increase_ex[q_star] == min(increase_ex.values())
print("checks passed")

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
err_at_half = {m: rec.value("layer_error", method=m, sparsity=0.5) for m in methods}  # section 3's table
order = sorted(err_at_half, key=err_at_half.get)
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
* On {name} at 50%, the relative output errors order {" < ".join(f"{m} ({err_at_half[m]:.3g})" for m in order)}.
  Notebook 10.2 asks whether the whole model's perplexity keeps that order.
""")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
