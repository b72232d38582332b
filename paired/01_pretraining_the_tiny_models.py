# %% [markdown]
# # 01 · Pretraining the tiny models
#
# **Goal.** See how the shipped decoder models -- `tiny-opt` and `tiny-moe` -- were made, what
# they cost in FLOPs (the 6·N·D rule), and how good they are (test perplexity against a unigram
# baseline). Every later notebook compresses, prunes or fine-tunes these models (and notebook
# 20 the third, `tiny-switch`, an encoder-decoder trained by the same loop on span corruption).
#
# **Prerequisites.** Notebook 00 (loading, perplexity).
#
# **Runtime on the default** (a short run; 2 CPU cores): about a minute; peak memory about 1 GiB RSS.
# With `full_run=True` it reproduces the shipped run: about 15 minutes per model on 2 CPU cores.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # which tiny model to pretrain: tiny-opt or tiny-moe
full_run: bool = False  # True reproduces the shipped run (about 15 min on 2 CPU cores); False runs a short demo
short_steps: int = 30  # optimizer steps of the short demo run
batch_size: int = 8  # windows per step of the short run (the full run uses the shipped recipe)
seq_len: int = 128  # tokens per window of the short run (the full run uses the context, 256)
out_dir: str = ""  # directory to save the trained checkpoint in; empty saves nothing (an existing checkpoint is never overwritten)
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds the initialisation and the order of training windows
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import models, show_source
from peakllm.core import perplexity, roofline
from peakllm.data import evaldata
from peakllm.models import pretraining as pretrain

rec, dev = peakllm.setup("01_pretraining_the_tiny_models", globals())
# The recipe of this run, checked before anything is trained.
if full_run:
    cfg = pretrain.PretrainConfig(model_name=model_name, device=device, seed=seed)
else:
    cfg = pretrain.PretrainConfig(model_name=model_name, steps=short_steps, batch_size=batch_size,
                                  seq_len=seq_len, warmup=max(1, short_steps // 10),
                                  eval_every=max(1, short_steps // 3), eval_windows=16, device=device, seed=seed)
cfg.check()
shipped = json.loads((models.MODELS / model_name / "pretrain.json").read_text())

# %% [markdown]
# ## 1. The recipe
#
# A plain next-token loop in the style of nanoGPT: random windows from the train split, AdamW
# (weight decay on the matrices only), linear warmup then cosine decay, gradient
# clipping at norm 1 (`grad_clip`), validation loss on held-out plays. The shipped run used these defaults:

# %%
show_source(pretrain.PretrainConfig, until="    def check")

# %%
steps = range(shipped["config"]["steps"])
full_cfg = pretrain.PretrainConfig(**shipped["config"])
plt.figure(figsize=(5, 2.5))
plt.plot(steps, [pretrain.lr_at(s, full_cfg) for s in steps])
plt.xlabel("step"); plt.ylabel("learning rate"); plt.title("warmup + cosine decay (shipped run)")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. The architectures
#
# `tiny-opt` is an `OPTForCausalLM` and `tiny-moe` a `MixtralForCausalLM` from transformers:
# the same classes as `facebook/opt-125m` and Mixtral-8x7B, only smaller. In the MoE model each
# token passes through 2 of 8 experts per layer, so it **stores** many more parameters than it
# **uses** per token.
# `tiny-switch` is a `SwitchTransformersForConditionalGeneration`, the QMoE paper's family: an
# encoder-decoder with 8 experts, each as wide as Switch's (d_ff = 4 d_model), and top-1 routing in
# every other block.

# %%
rows = []
for name in models.SHORT_NAMES:
    m = models.new_tiny(name)
    n = models.count_params(m)
    rows.append({"model": name, "class": type(m).__name__, "parameters": n["total"], "experts": n["experts"],
                 "FLOPs/token (6N)": pretrain.flops_per_token(m)})
pd.DataFrame(rows)

# %% [markdown]
# ## 3. What the shipped run cost: C ≈ 6·N·D
#
# Training a transformer costs about 6 FLOPs per weight per token (Kaplan et al. 2020, Table 1):
# 2 for the forward pass, 4 for the backward pass. For N weights and D training tokens,
#
# $$C \approx 6\,N\,D \ \text{FLOPs}.$$
#
# N counts the weights of the matrix multiplies a token passes through: the blocks' linear
# layers (for the MoE: the shared parts plus 2 of 8 experts) and the LM head. Embedding lookups -- the token and position tables --
# read one row and multiply nothing, so they are left out; the tied LM head multiplies by the
# token table and counts once.

# %%
show_source(pretrain.flops_per_token)

# %%
C = pretrain.flops_per_token(models.new_tiny(model_name)) * shipped["tokens"]
secs = shipped["seconds"]
print(f"shipped {model_name}: {shipped['config']['steps']} steps x {shipped['config']['batch_size']} x "
      f"{shipped['config']['seq_len']} tokens = D = {shipped['tokens']:,} tokens")
print(f"C = 6 N D = {C // shipped['tokens']:,} x {shipped['tokens']:,} = {C:.3g} FLOPs")
print(f"trained in {secs / 60:.1f} min with torch {shipped['torch']} -> {C / secs / 1e9:.1f} GFLOP/s achieved "
      "on the machine that trained it")
print(f"for scale: GPT-3 (N = 175e9, D = 300e9) needed {6 * 175e9 * 300e9:.2g} FLOPs, "
      f"{6 * 175e9 * 300e9 / C:.1e} times more")
rec.add("train_flops", C, "FLOP", model=model_name)
rec.add("train_seconds", secs, "s", model=model_name)

# %% [markdown]
# ## 4. Train
#
# The default is a short run from scratch (a few dozen steps), enough to watch the loss fall; its
# curve is drawn over the shipped run's. `full_run=True` repeats the shipped run exactly (same
# seed, same windows), and `out_dir` saves the result.
#
# The loss it prints is the mean next-token **cross-entropy** over the T predicted tokens of the
# windows, in nats, and the perplexity of section 5 is its exponential:
#
# $$\mathcal{L} = -\frac{1}{T}\sum_{t=1}^{T} \log p_\theta(x_t \mid x_{<t}), \qquad \mathrm{PPL} = e^{\mathcal{L}}.$$
#
# A model that guessed uniformly among the V tokens of the vocabulary would have
# $\mathcal{L} = \ln V$ and $\mathrm{PPL} = V$.

# %%
result = pretrain.pretrain(cfg, out_dir=out_dir or None)
last = result["log"][-1]
achieved = pretrain.flops_per_token(result["model"]) * result["tokens"] / result["seconds"]
info = roofline.describe(device, bandwidth=False)  # the FLOP/s ceiling is all this cell needs
print(f"{cfg.steps} steps, {result['tokens']:,} tokens in {result['seconds']:.1f} s "
      f"({result['tokens'] / result['seconds']:.0f} tok/s)")
print(f"this run: {achieved / 1e9:.1f} GFLOP/s achieved on {dev.type}, "
      f"{achieved / info['peak_flops_fp32']:.0%} of this device's measured fp32 peak (the validation passes not counted)")
print(f"train loss {result['log'][0]['train_loss']:.2f} -> {last['train_loss']:.2f}, validation loss {last['val_loss']:.2f}")
rec.add("val_loss", round(last["val_loss"], 2), "nats/token", method="full" if full_run else "short", model=model_name)
rec.add("tokens_per_s", result["tokens"] / result["seconds"], "tok/s", method="pretrain", model=model_name)

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
pretrain.plot_loss(pretrain.read_log(models.MODELS / model_name / "train_log.csv"), ax=ax, title="shipped")
pretrain.plot_loss(result["log"], ax=ax, title="this run")
ax.set_title(f"pretraining {model_name}")
fig.tight_layout(); plt.show()

# %% [markdown]
# ## 5. How good are the shipped models?
#
# Test-split perplexity (two held-out plays, *Hamlet* and *The Tempest*) with the papers'
# protocol, next to a unigram baseline that knows only how often each token occurs. The gap is
# what the models learned about context.

# %%
rows = []
for name in models.SHORT_NAMES:
    model, tok = models.load(name, device=device)
    meta = json.loads((models.MODELS / name / "pretrain.json").read_text())
    if model.config.is_encoder_decoder:  # tiny-switch: no next-token perplexity; its validation loss instead
        last_val = [r["val_loss"] for r in pretrain.read_log(models.MODELS / name / "train_log.csv") if r["val_loss"] is not None][-1]
        print(f"{name}: an encoder-decoder trained on span corruption; last validation loss of its shipped run "
              f"{last_val:.2f} nats per target token (notebook 20 compresses it)")
        continue
    ids = evaldata.eval_ids("shakespeare", tok)
    ppl = perplexity.perplexity(model, ids)
    uni = perplexity.unigram_perplexity(evaldata.eval_ids("shakespeare", tok, split="train"), ids, len(tok))
    rows.append({"model": name, "parameters": meta["params"]["total"], "train tokens": meta["tokens"],
                 "train time": f"{meta['seconds'] / 60:.1f} min", "test perplexity": round(ppl, 2),
                 "unigram perplexity": round(uni, 2)})
    rec.add("perplexity", round(ppl, 2), "ppl", method="dense", dataset="shakespeare", model=name)
pd.DataFrame(rows)

# %% [markdown]
# ## Lab: one pretraining step
#
# Write `train_step_lab(model, optimizer, x, max_norm)`, the body of section 4's loop: one step of
# next-token pretraining on a batch `x` of B windows of T token ids.
#
# 1. **Forward**: the logits, (B, T, V) for a vocabulary of V tokens. Position t has seen
#    $x_1 \dots x_t$ and predicts $x_{t+1}$.
# 2. **Loss**: the mean next-token cross-entropy of section 4 over the B (T - 1) positions that
#    have a next token -- the logits of positions 1 to T - 1 against the labels $x_2 \dots x_T$, the
#    input shifted left by one:
#    $$\mathcal{L} = -\frac{1}{B\,(T-1)} \sum_{b=1}^{B} \sum_{t=1}^{T-1} \log \operatorname{softmax}\big(z_{b,t}\big)_{x_{b,t+1}}.$$
# 3. **Backward**: $g = \nabla_\theta \mathcal{L}$ for every parameter.
# 4. **Clip by the global norm** (Pascanu, Mikolov & Bengio 2013, section 3.2): the norm of all
#    gradients taken together, $\lVert g \rVert = \sqrt{\sum_i \lVert g_i \rVert^2}$, and every gradient scaled
#    by $\min\big(1,\ c / (\lVert g \rVert + 10^{-6})\big)$ with $c$ = `max_norm` (`grad_clip`, 1.0):
#    a step that would be too long is shortened, its direction kept.
# 5. **Optimizer step**, then **zero the gradients**. Return the loss as a float.
#
# **Prepared for you**, as `pretrain.pretrain` prepares them (read its loop with
# `show_source(pretrain.pretrain)`): `model_lab`, a freshly initialised `tiny-opt` (the dense model,
# whose loss is the cross-entropy alone; `tiny-moe` adds its routers' balancing loss) from the
# recipe's seed; `opt_lab`, the library's optimizer (`pretrain.optimizer`) -- AdamW with the recipe's betas and weight
# decay on the matrices only; `batches_lab`, the first windows the library draws from the train
# split; and the loop around your function, which sets the learning rate of each step
# (`pretrain.lr_at`: warmup, then cosine) -- `cfg_lab` is the notebook's recipe cut to a few short steps.
#
# **Hints.** `model(input_ids=x).logits`; `torch.nn.functional.cross_entropy` takes (N, V) logits
# and (N,) labels, so flatten with `reshape(-1, V)`. Take the loss in fp32 (`.float()` on the
# logits). Write the clipping yourself (`torch.nn.utils.clip_grad_norm_` does the same; the
# point is to see it). The check runs the library's own loop, `pretrain.pretrain`, for the same
# steps from the same seed and compares its losses and final weights with yours, and checks that
# your steps lowered the loss on the first batch.

# %% nbgrader={"grade": false, "grade_id": "lab-01-train-step", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["nbval-ignore-output"]
import dataclasses
import itertools

import torch
import torch.nn.functional as F

from peakllm.data.windows import window_batches

cfg_lab = dataclasses.replace(cfg, model_name="tiny-opt", steps=4, batch_size=4, seq_len=64, warmup=2,
                              eval_every=4, eval_windows=1)      # the same recipe, four short steps
torch.manual_seed(cfg_lab.seed)                                  # as pretrain.pretrain starts
model_lab = models.new_tiny(cfg_lab.model_name, seed=cfg_lab.seed).to(dev).train()
opt_lab = pretrain.optimizer(model_lab, cfg_lab)                 # the library's AdamW: decay on matrices only
train_ids_lab = pretrain.token_ids("train", models.load_tokenizer(cfg_lab.model_name))  # the train split, (N,)
batches_lab = [x.to(dev) for x in itertools.islice(                                     # (B, T) each
    window_batches(train_ids_lab, cfg_lab.batch_size, cfg_lab.seq_len, cfg_lab.seed), cfg_lab.steps)]


def train_step_lab(model, optimizer, x, max_norm):
    """One step of next-token pretraining on ``x`` (B, T) token ids: forward, shifted
    cross-entropy, backward, clipping to a global gradient norm of ``max_norm``, optimizer
    step, gradients zeroed. Returns the loss (a float), as computed before the step."""
    ### BEGIN SOLUTION
    logits = model(input_ids=x).logits                          # (B, T, V): position t predicts x_{t+1}
    V = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(),  # (B (T-1), V)
                           x[:, 1:].reshape(-1))                # (B (T-1),): the labels, shifted by one
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))        # ||g|| over every parameter together
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)       # shorten the step only when too long
    for g in grads:
        g.mul_(scale)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
    ### END SOLUTION


losses_lab = []
for step_lab, x_lab in enumerate(batches_lab):
    for group_lab in opt_lab.param_groups:
        group_lab["lr"] = pretrain.lr_at(step_lab, cfg_lab)     # warmup, then cosine, as the library's loop
    losses_lab.append(train_step_lab(model_lab, opt_lab, x_lab, cfg_lab.grad_clip))
print("your losses per step:", ", ".join(f"{v:.4f}" for v in losses_lab))

# %% nbgrader={"grade": true, "grade_id": "lab-01-train-step-check", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false} tags=["check"]
from peakllm.workbook import labs

assert len(losses_lab) == cfg_lab.steps, f"train_step_lab returned {len(losses_lab)} losses of the {cfg_lab.steps} steps"
ref_lab = pretrain.pretrain(cfg_lab, progress=False)            # the library's loop: same seed, recipe, batches
labs.close("loss per step", losses_lab, [row["train_loss"] for row in ref_lab["log"]], rtol=1e-4)
flat_lab = {name: torch.cat([p.detach().flatten().cpu() for p in m.parameters()])  # every weight, one vector
            for name, m in [("yours", model_lab), ("library", ref_lab["model"]),
                            ("initial", models.new_tiny(cfg_lab.model_name, seed=cfg_lab.seed))]}
# Adam amplifies rounding where a gradient is near zero (a ReLU unit at its kink), so single weights
# may differ by a fraction of one step: compare the whole difference with the whole change instead
gap_lab = ((flat_lab["yours"] - flat_lab["library"]).norm() / (flat_lab["library"] - flat_lab["initial"]).norm()).item()
labs.outcome(gap_lab <= 1e-2, f"weights after the steps: yours differ from the library's by {gap_lab:.3g} of the change "
             "its steps made (norm of the difference / norm of the change); allowed 0.01")
with torch.no_grad():                                           # the first batch again, after the steps
    after_lab = model_lab(input_ids=batches_lab[0], labels=batches_lab[0]).loss.item()
labs.outcome(after_lab < losses_lab[0], f"the loss on the first batch did not fall: {losses_lab[0]:.4f} before "
             f"your steps, {after_lab:.4f} after")
labs.passed("one pretraining step")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** With C = 6 N D, how long would the shipped `tiny-opt` run take on one H100 (989 TFLOP/s dense bf16) at a realistic 40% model FLOP utilisation?

# %% [markdown] tags=["solution"]
# **Solution 1.** t = C / (40% × 989·10¹² FLOP/s), with C from section 3: evaluate `C / (0.4 * 989e12)` in a cell -- well under one second, against the minutes the shipped run took on its CPU (section 3). The same recipe is thousands of times cheaper on a GPU, if the GPU could be kept that busy with so small a model (it could not: at this size kernel launches, not FLOPs, set the pace).

# %% [markdown] tags=["exercise"]
# **Exercise 2.** The Chinchilla rule of thumb is about 20 training tokens per parameter. How many tokens would `tiny-opt` want, and how many did it get?

# %% [markdown] tags=["solution"]
# **Solution 2.** About 20 × N tokens, with N the parameter count of section 2's table: `20 * models.count_params(models.new_tiny("tiny-opt"))["total"]`, tens of millions. The shipped run saw D = steps × batch × sequence length (section 3), roughly twenty times fewer. Its loss curve is still falling at the end: more steps (and more text) would still pay.

# %% [markdown]
# **Exercise 3 (code).** Recompute the cost of the shipped `tiny-opt` run yourself. From its
# recorded recipe (`meta["config"]`: `steps`, `batch_size`, `seq_len`) compute the training
# tokens `D_ex`; from the model `tiny` the weights a token passes through, `N_ex`, counted as
# section 3 counts them: every parameter, minus the token and position tables (lookups, no
# multiply), plus the token table once more as the tied LM head; then `C_ex = 6 N D`.

# %% nbgrader={"grade": false, "grade_id": "ex01-1", "locked": false, "schema_version": 3, "solution": true, "task": false}
tiny = models.new_tiny("tiny-opt")
meta = json.loads((models.MODELS / "tiny-opt" / "pretrain.json").read_text())
### BEGIN SOLUTION
D_ex = meta["config"]["steps"] * meta["config"]["batch_size"] * meta["config"]["seq_len"]
tables = tiny.model.decoder.embed_tokens.weight.numel() + tiny.model.decoder.embed_positions.weight.numel()
N_ex = sum(p.numel() for p in tiny.parameters()) - tables + tiny.model.decoder.embed_tokens.weight.numel()
C_ex = 6 * N_ex * D_ex
### END SOLUTION
print(f"D = {D_ex:,} tokens, N = {N_ex:,} weights, C = 6 N D = {C_ex:.3g} FLOPs")

# %% nbgrader={"grade": true, "grade_id": "ex01-1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
assert D_ex == meta["tokens"]
assert 6 * N_ex == pretrain.flops_per_token(tiny)
assert C_ex == pretrain.flops_per_token(tiny) * meta["tokens"]
print("checks passed")

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
flops = rec.value("train_flops", model=model_name)
n_per_token = flops / shipped["tokens"] / 6  # the weights a token passes through (section 3)
gpt3 = 6 * 175e9 * 300e9
fpt = {name: pretrain.flops_per_token(models.new_tiny(name)) for name in ("tiny-opt", "tiny-moe")}
scores = pd.DataFrame(rows).set_index("model")  # section 5's table
unigrams = sorted(set(scores["unigram perplexity"]))
unigram = (f"{unigrams[0]:.2f} for a unigram model" if len(unigrams) == 1
           else "unigram models at " + ", ".join(f"{u:.2f}" for u in unigrams))
first_loss, last_loss = result["log"][0]["train_loss"], last["train_loss"]
shipped_val = [r["val_loss"] for r in pretrain.read_log(models.MODELS / model_name / "train_log.csv") if r["val_loss"] is not None]
peakllm.say(f"""
* Training costs C ≈ 6 · N · D FLOPs: the shipped `{model_name}` run passed D = {shipped['tokens']:,} tokens
  through N = {n_per_token:,.0f} weights, {flops:.3g} FLOPs -- GPT-3's {gpt3:.2g} is {gpt3 / flops:.1e} times more.
* N counts the weights a token passes through, not those stored: `tiny-moe` stores {scores.loc['tiny-moe', 'parameters']:,}
  parameters (`tiny-opt` {scores.loc['tiny-opt', 'parameters']:,}) but, visiting 2 of 8 experts, costs
  {"fewer" if fpt["tiny-moe"] < fpt["tiny-opt"] else "no fewer"} FLOPs per token than `tiny-opt`
  ({fpt['tiny-moe']:,} against {fpt['tiny-opt']:,}, section 2's table).
* The training loss is the mean next-token cross-entropy in nats, and perplexity its
  exponential: on the held-out plays `tiny-opt` scores {rec.value("perplexity", method="dense", model="tiny-opt"):.2f}
  and `tiny-moe` {rec.value("perplexity", method="dense", model="tiny-moe"):.2f}, against {unigram}.
* {cfg.steps} steps from scratch {"already " if last_loss < first_loss and not full_run else ""}take the training loss
  from {first_loss:.2f} to {last_loss:.2f}; the shipped run's validation loss is
  {"still falling" if shipped_val[-1] < shipped_val[-2] else "no longer falling"} after its {shipped['config']['steps']} steps
  ({shipped_val[-2]:.2f} at its last evaluation but one, {shipped_val[-1]:.2f} at the end).
""")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
