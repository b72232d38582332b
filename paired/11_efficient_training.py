# %% [markdown]
# # 11 · Case study 1, continued: efficient training, measured
#
# **Goal.** Training memory has four parts -- weights, gradients, optimizer state, activations --
# plus time. Fine-tune the same model on the same text with six standard recipes and measure what
# each one removes: full fine-tuning (the baseline), mixed precision, gradient checkpointing,
# 8-bit AdamW, LoRA and QLoRA (as published, and a variant with adapters on the attention only).
# First, each mechanism by hand on one layer or tensor, checked against the library the recipes
# call: LoRA's side path and its merge, NF4's levels and one weight in 4 bits, 8-bit optimizer
# state, what a checkpointed block keeps. Then scale our measured bytes per parameter to a 7B and a 70B model
# to see which GPU each recipe needs, beside the published anchors.
#
# **Prerequisites.** Notebook 00 (the memory anatomy of one training step). Notebook 10 is not
# needed.
#
# **Runtime on the default** (`tiny-opt`, 2 CPU cores): about 90 seconds (QLoRA's 4-bit
# matmuls are the slow part on a CPU); peak memory just over 1 GiB RSS.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to fine-tune: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
methods: list = ["full", "amp", "checkpointing", "adamw8bit", "lora", "qlora", "qlora-attn"]  # recipes to compare (full is the baseline)
work: str = "twelfth_night"  # the held-out play to fine-tune on (its last 10% is the validation text)
steps: int = 20  # optimizer steps per method
batch_size: int = 8  # windows per step
seq_len: int = 256  # tokens per window
lr: float = 0.0001  # learning rate when every weight trains (full, amp, checkpointing, adamw8bit)
lora_lr: float = 0.001  # learning rate of the LoRA adapters (lora, qlora, qlora-attn)
lora_r: int = 8  # LoRA rank r
lora_alpha: int = 16  # LoRA scale: the update B A is multiplied by alpha / r
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds the batches and everything else
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.core import memory, reference, spread
from peakllm.data import corpus
from peakllm.data.tokenizer import encode
from peakllm.train import recipes as training

rec, dev = peakllm.setup("11_efficient_training", globals())
base = training.FinetuneConfig(model_name=model_name, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                               lora_lr=lora_lr, lora_r=lora_r, lora_alpha=lora_alpha, device=device, seed=seed)
methods = training.check_all(methods, base)
text = corpus.load_work(work)

# %% [markdown]
# ## 1. The data: one held-out play
#
# The shipped models never saw the validation and test plays. We fine-tune on the first 90% of
# one of them and measure the validation loss (mean cross-entropy, nats per token) on its last
# 10%: a small domain adaptation, the typical job of LoRA and QLoRA.

# %%
tokenizer = models.load_tokenizer(model_name)
ids = torch.tensor(encode(tokenizer, text), dtype=torch.long)
cut = int(0.9 * len(ids))
train_ids, val_ids = ids[:cut], ids[cut:]
print(f"{work}: {len(ids):,} tokens -> fine-tune on {len(train_ids):,}, validate on {len(val_ids):,}")
print(f"{steps} steps x {batch_size} x {seq_len} = {steps * batch_size * seq_len:,} tokens per method")

# %% [markdown]
# ## 2. Six recipes, one function each
#
# `training.prepare` builds the model, optimizer and autocast context of one method. Read it
# beside the table in the module's docstring: every recipe is a few lines of real
# `torch` / `transformers` / `peft` / `bitsandbytes` calls.

# %%
show_source(training.prepare)

# %% [markdown]
# Two details worth seeing before we measure:
#
# * **Mixed precision** needs hardware bf16 to pay off. `amp_dtype` says what this device gets
#   (and falls back to fp16 with loss scaling on GPUs older than Ampere):
# * **LoRA** trains `B A` beside each frozen attention projection `W` (d_out x d_in): A is r x d_in,
#   B is d_out x r, so each adapted matrix adds r (d_in + d_out) trainable parameters.
# * **QLoRA** as published puts the adapters on **every** linear layer of the blocks (the paper
#   finds attention-only adapters fall short of 16-bit fine-tuning), computes in bf16 where the
#   device has it, and on CUDA uses a paged 32-bit AdamW, with the hyperparameters of the qlora
#   repository's Guanaco-7B script (`training.QLORA_PUBLISHED`: `r = 64`, `alpha = 16`, dropout
#   `0.1`, learning rate `2e-4` held constant, Adam's `beta2 = 0.999`, gradients clipped to a norm
#   of `0.3`). `qlora-attn` is ours: adapters on the attention projections only, at this
#   notebook's `lora_r` and `lora_lr` like `lora`, kept as a labelled row.

# %%
print("mixed precision here:", training.amp_dtype(dev)[1])
probe = models.load_model(model_name, device="cpu")
for m in [m for m in methods if m in training.ADAPTER_RECIPES]:
    r_m = training.for_method(base, m).lora_r  # qlora: the published r
    print(f"{m} adapts {training.lora_targets(probe, m)}: {training.lora_trainable(probe, r_m, m):,} trainable "
          f"of {models.count_params(probe)['total']:,} parameters at r={r_m}")
del probe

# %% [markdown]
# ## 3. The mechanisms by hand, on one layer
#
# Before the six whole-model runs, each mechanism once, on one layer or one tensor of the shipped
# `tiny-opt` (on the CPU, whatever `device` says), in a few lines with the papers' symbols -- and
# checked against the code the recipes call: peft for LoRA, bitsandbytes for NF4 and for the 8-bit
# optimizer state, `memory.SavedActivations` for checkpointing.
#
# ### LoRA: a low-rank side path beside a frozen weight
#
# LoRA (Hu et al. 2021, section 4.1) freezes a pretrained $W_0 \in \mathbb{R}^{d \times k}$ and
# learns its update as a product of two thin matrices, $B \in \mathbb{R}^{d \times r}$ and
# $A \in \mathbb{R}^{r \times k}$ with $r \ll \min(d, k)$, scaled by $\alpha / r$:
#
# $$h = W_0 x + \frac{\alpha}{r} B A x .$$
#
# $A$ starts random (Gaussian in the paper; peft draws it Kaiming-uniform) and $B$ at zero, so
# training starts from the pretrained model exactly. Only $A$ and $B$ get gradients and optimizer
# state: $r (d + k)$ parameters instead of $d k$. After training, $W_0 + \frac{\alpha}{r} B A$ is
# one matrix again (merging), and inference costs what it did before.

# %%
from peakllm.workbook import diagrams

diagrams.lora_side_path()

# %%
import dataclasses

lora_model = training.prepare(dataclasses.replace(base, model_name="tiny-opt", method="lora", device="cpu"))[0]
layer = lora_model.base_model.model.model.decoder.layers[0].self_attn.q_proj  # one adapted nn.Linear (peft)
W0 = layer.base_layer.weight.detach().clone()  # (d, k), frozen
b0 = layer.base_layer.bias.detach().clone()    # (d,)
A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, k), (d, r): trainable
x = torch.randn(4, W0.shape[1])                # 4 tokens, (4, k)
print(f"W0 {tuple(W0.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, alpha / r = {lora_alpha} / {lora_r} = {layer.scaling['default']}")
print(f"trainable here: r (d + k) = {A.numel() + B.numel():,} beside d k = {W0.numel():,} frozen weights")
assert not B.any() and torch.equal(layer(x), layer.base_layer(x))  # B = 0: the adapted layer is the base layer
print("at initialization B = 0, so h = W0 x exactly")

# %% [markdown]
# At zero the side path is invisible; give $B$ some values, as training would, and compute
# $h$ by hand.

# %%
with torch.no_grad():
    B.normal_(std=0.02)  # as if trained a little: B != 0
h = x @ W0.T + b0 + (lora_alpha / lora_r) * (x @ A.T) @ B.T  # h = W0 x + (alpha / r) B A x, a row per token
torch.testing.assert_close(h, layer(x))
print(f"by hand vs peft: max |difference| {(h - layer(x)).abs().max():.1e}; "
      f"the side path moves h by up to {(h - (x @ W0.T + b0)).abs().max():.3f}")
merged = lora_model.merge_and_unload().model.decoder.layers[0].self_attn.q_proj  # W0 + (alpha / r) B A, adapters gone
torch.testing.assert_close(merged(x), h)
print(f"merge_and_unload -> a plain {type(merged).__name__} {tuple(merged.weight.shape)} with the same output "
      "(exercise 3 writes its weight by hand)")

# %% [markdown]
# ### NF4: sixteen levels at the quantiles of a normal distribution
#
# QLoRA (Dettmers et al. 2023, section 3) stores the frozen weights in 4-bit NormalFloat: blocks of
# 64 weights share one absmax, and each weight divided by its block's absmax is rounded to the
# nearest of 16 levels $q_i$ spread like a standard normal distribution -- trained weights are
# close to normal, so every level is used about equally often. The paper estimates the levels
# from the quantile function $Q_X$ of $N(0, 1)$,
#
# $$q_i = \frac{1}{2}\left(Q_X\!\left(\frac{i}{2^k+1}\right) + Q_X\!\left(\frac{i+1}{2^k+1}\right)\right),$$
#
# normalized into $[-1, 1]$, and makes zero exact by taking $2^{k-1}$ levels for the negative half
# and $2^{k-1}+1$ for the positive, dropping one of the two zeros. bitsandbytes' table comes from
# evenly spaced probabilities between $\frac{1}{2}$ and $\delta = 0.9677083$ (the quantile at
# probability 1 is infinite): 8 levels above zero, 7 below. A block $\mathbf{w}$ is stored as
# $\text{absmax}(\mathbf{w}) = \max_j |w_j|$ and, per weight, the index
# $\arg\min_i |w_j / \text{absmax}(\mathbf{w}) - q_i|$ in 4 bits.

# %%
import bitsandbytes.functional as bnbF

normal = torch.distributions.Normal(0.0, 1.0)
delta = 0.9677083  # bitsandbytes' outermost probability
pos = normal.icdf(torch.linspace(0.5, delta, 9)[1:])   # 8 quantiles above 0
neg = -normal.icdf(torch.linspace(0.5, delta, 8)[1:])  # 7 quantiles below 0
q = torch.cat([neg.flip(0), torch.zeros(1), pos]) / pos.max()  # 16 levels in [-1, 1], 0 exact
nf4 = bnbF.get_4bit_type("nf4", device="cpu")  # bitsandbytes' NF4 table
torch.testing.assert_close(q, nf4, rtol=0, atol=1e-6)
print("our 16 levels:", " ".join(f"{v:+.4f}" for v in q.tolist()))
print(f"bitsandbytes' table: equal within {(q - nf4).abs().max():.0e} (float32 quantiles here, float64 there)")

# %%
from peakllm.compress import levels

W = models.load_model("tiny-opt", device="cpu").model.decoder.layers[0].self_attn.q_proj.weight.detach()  # (d, k)
blocks = W.reshape(-1, 64)                                  # (blocks, 64)
absmax = blocks.abs().amax(1, keepdim=True)                 # (blocks, 1): one fp32 constant per block
idx = (blocks / absmax).unsqueeze(-1).sub(nf4).abs().argmin(-1)  # nearest level: a 4-bit index per weight
W_nf4 = (nf4[idx] * absmax).reshape(W.shape)                # dequantized
packed, state = bnbF.quantize_4bit(W, blocksize=64, quant_type="nf4")  # what bitsandbytes' Linear4bit stores
assert torch.equal(absmax.flatten(), state.absmax)
assert torch.equal(W_nf4, bnbF.dequantize_4bit(packed, state))
print(f"by hand = bitsandbytes, bit for bit: {packed.numel():,} bytes of indices (two per byte) + {state.absmax.numel():,} fp32 absmax "
      f"= {8 * (packed.numel() + 4 * state.absmax.numel()) / W.numel():.2f} bits per weight")
print(f"error on {W.numel():,} weights: rms {(W_nf4 - W).pow(2).mean().sqrt():.2e}, largest {(W_nf4 - W).abs().max():.4f}")
ax = levels.plot_levels(blocks / absmax, nf4, title=f"q_proj of block 0: {W.numel():,} weights / their block's absmax")

# %% [markdown]
# The levels crowd near zero, where most weights are, and thin out in the tails. QLoRA also
# stores the absmaxes themselves in 8 bits (double quantization: $8/64 + 32/(64 \cdot 256)$ bits
# of constants per weight instead of $32/64$); the `qlora` recipe does.
#
# ### 8-bit optimizer state: a dynamic map, blockwise
#
# 8-bit AdamW (Dettmers et al. 2022, *8-bit Optimizers via Block-wise Quantization*) keeps both
# moments in one byte per value: blocks of 256 values share an fp32 absmax (bitsandbytes' block
# size on this path), and each value divided by its absmax is rounded to the nearest of 256 levels
# of a **dynamic** map -- per decade $10^{-6}, \dots, 10^{0}$ ever more levels, so small and large
# moments both keep two or three significant digits:
#
# $$\pm\, 10^{\,i-6} \cdot \frac{b_j + b_{j+1}}{2}, \qquad b = \text{linspace}(0.1, 1, 2^i + 1), \quad i = 0, \dots, 6,$$
#
# plus 0 and 1. After AdamW's first step the first moment is $m_1 = (1 - \beta_1)\, g$: we
# quantize it by hand and read what `bnb.optim.AdamW8bit` (the `adamw8bit` recipe's optimizer)
# stored.

# %%
import bitsandbytes as bnb

mags = torch.cat([10.0 ** (i - 6) * ((b[:-1] + b[1:]) / 2) for i in range(7) for b in [torch.linspace(0.1, 1, 2**i + 1)]])
code = torch.cat([-mags, mags, torch.tensor([0.0, 1.0])]).sort().values  # the 256 levels
assert torch.equal(code, bnbF.create_dynamic_map(signed=True))
net = models.load_model("tiny-opt", device="cpu", dtype="float32").train()
p = net.model.decoder.layers[0].self_attn.q_proj.weight  # one tensor, (d, k)
batch = train_ids[: 2 * seq_len].view(2, seq_len)
net(input_ids=batch, labels=batch).loss.backward()
g = p.grad.clone()
opt8 = bnb.optim.AdamW8bit([p], lr=lr, betas=(0.9, 0.95), weight_decay=0.0)  # as in the adamw8bit recipe
opt8.step()
state = opt8.state[p]
beta1 = 0.9
m1 = ((1 - beta1) * g).reshape(-1, 256)                         # (blocks, 256): the first moment
absmax1 = m1.abs().amax(1, keepdim=True)                        # (blocks, 1)
idx1 = (m1 / absmax1).unsqueeze(-1).sub(code).abs().argmin(-1)  # nearest level: one byte per value
q8, q8_state = bnbF.quantize_blockwise(m1.flatten(), code=code, blocksize=256)
assert torch.equal(q8, state["state1"].flatten())  # the optimizer stores exactly this blockwise quantization
stored = state["state1"].reshape(idx1.shape).long()
assert torch.equal(absmax1.flatten(), state["absmax1"]) and state["state1"].dtype == torch.uint8
mine, theirs = code[idx1] * absmax1, code[stored] * absmax1     # dequantized moments
assert ((mine - m1).abs() <= (theirs - m1).abs()).all()         # nearest: never farther than bitsandbytes'
same = (idx1 == stored).float().mean().item()
print(f"absmax of the {absmax1.numel()} blocks: equal; byte per value: equal for {same:.2%} of {m1.numel():,}")
print(f"the rest differ by {(idx1 - stored).abs().max().item()} level(s) at most: max |by hand - bitsandbytes| = {(mine - theirs).abs().max():.1e} "
      f"({((mine - theirs).abs() / absmax1).max():.1%} of the block's absmax)")
print(f"stored: {state['state1'].numel():,} bytes + {4 * state['absmax1'].numel():,} of absmax = "
      f"{(state['state1'].numel() + 4 * state['absmax1'].numel()) / m1.numel():.3f} bytes per value, against 4 in fp32")

# %% [markdown]
# The optimizer's bytes are exactly `quantize_blockwise` of $m_1$ with this map and 256-value
# blocks, and the absmaxes match ours; why not every byte? bitsandbytes' CPU kernel finds a level
# with a fast approximate lookup table and then compares only two neighbours, so now and then --
# mostly among small values, where the levels are densest -- it keeps a level next to the nearest.
# The rounding by hand is the exact nearest and never farther from $m_1$ (asserted); the printed
# figures are the whole difference.
#
# ### Checkpointing: what one block keeps for backward
#
# Autograd saves, for each operation of the forward, the tensors its backward will need; a
# saved-tensor hook sees every one. Gradient checkpointing (Chen et al. 2016) runs a block without
# saving them, keeps only the block's input, and runs the block's forward again inside the
# backward. One decoder block, at this notebook's batch:

# %%
net = models.load_model("tiny-opt", device="cpu", dtype="float32").train()
block = net.model.decoder.layers[0]                  # one decoder block
hidden = torch.randn(batch_size, seq_len, net.config.hidden_size, requires_grad=True)  # its input, (B, T, d)
weights = {t.untyped_storage().data_ptr() for t in block.parameters()}
saved = []
with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
    block(hidden)
kept = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved
        if t.untyped_storage().data_ptr() not in weights}  # each storage once, the weights left out
saved_ckpt = []
with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_ckpt.append(t) or t, lambda t: t):
    torch.utils.checkpoint.checkpoint(block, hidden, use_reentrant=False)
assert [t.data_ptr() for t in saved_ckpt] == [hidden.data_ptr()]  # checkpointed: only the input is kept
with memory.SavedActivations(net) as plain:
    block(hidden)
net.activation_checkpointing_enable({"use_reentrant": False})  # as the checkpointing recipe does
with memory.SavedActivations(net) as ckpt:
    block(hidden)
assert plain.bytes == sum(kept.values()) and ckpt.bytes == hidden.nbytes
print(f"without checkpointing: {len(saved)} saved tensors, {len(kept)} storages besides the weights, {memory.human(plain.bytes)}")
print(f"checkpointed: the input only, {memory.human(ckpt.bytes)} ({plain.bytes / ckpt.bytes:.0f}x less); "
      "memory.SavedActivations counts the same")
del net, lora_model

# %% [markdown]
# ## 4. Fine-tune with each method
#
# Same batches (same seed), same number of steps. The first step of each run is measured by
# `memory.training_step_anatomy`: weights, gradients and optimizer state counted from the tensors
# themselves, activations from autograd's saved-tensor hooks (plus, for checkpointing, the layer
# inputs the checkpoint keeps). These counts are exact; they are the same on a GPU for every recipe
# whose dtypes do not follow the device -- mixed precision picks bf16 or fp16, QLoRA computes in
# bf16 only where the device has it and pages its optimizer on CUDA. On a GPU the allocator's peak
# is shown beside them. Throughput: every later step is timed alone; the first two of them warm up and are dropped, the median of the rest is the method's tokens/s, and their mean ± sd is the noise two methods must differ by before we call one faster (`spread.verdict`, as for the seeds of notebook 10).

# %%
runs = training.compare(methods, base, train_ids, val_ids)

# %%
full_total = runs["full"]["parts"]["total"] if "full" in runs else None
rows = []
for m, r in runs.items():
    p = r["parts"]
    row = {"method": m, "recipe": r["note"], "trainable": r["trainable_params"]}
    row |= {part: memory.human(p[part]) for part in (*memory.PARTS, "total")}
    row["x less than full"] = round(full_total / p["total"], 2) if full_total else None
    row["largest part"] = max(memory.PARTS, key=lambda k: p[k])
    if "cuda_peak" in p:
        row["CUDA peak"] = memory.human(p["cuda_peak"])
    row |= {"tokens/s (median)": f"{r['tokens_per_s']:.0f} tok/s",
            "per step, mean ± sd": "{:.0f} tok/s ± {:.0f} tok/s (n={})".format(
                *spread.summarize(r["tokens_per_s_steps"]).values()),
            "val loss before": round(r["val_loss_before"], 3),
            "val loss after": round(r["val_loss"], 3)}
    rows.append(row)
    for part in (*memory.PARTS, "total"):
        rec.add("train_bytes", p[part], "B", method=m, part=part)
    rec.add("tokens_per_s", round(r["tokens_per_s"]), "tok/s", method=m)
    rec.add("val_loss", round(r["val_loss"], 3), "nats", method=m)
    rec.add("trainable_params", r["trainable_params"], "params", method=m)
table = pd.DataFrame(rows).set_index("method")
table

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
memory.plot_anatomy({m: r["parts"] for m, r in runs.items()}, ax=ax1,
                    title=f"exact training memory, {model_name}, {batch_size}x{seq_len} tokens")
for m, r in runs.items():
    ax2.plot([e["step"] for e in r["log"]], [e["train_loss"] for e in r["log"]], label=m, lw=1)
ax2.set(xlabel="step", ylabel="train loss (nats/token)", title=f"fine-tuning on {work}")
ax2.legend(fontsize=8)
fig.tight_layout()

# %% tags=["nbval-ignore-output"]
# The speeds and the adapters' loss, read from this run (ties called by the per-step spread)
if "full" in runs:
    ref = runs["full"]
    words = {"better": "faster than", "worse": "slower than", "tie": "tied with"}
    speed = [f"{m} {words[spread.verdict(r['tokens_per_s_steps'], ref['tokens_per_s_steps'], lower_is_better=False)]} "
             f"full fine-tuning ({r['tokens_per_s'] / ref['tokens_per_s']:.2f}x its median)"
             for m, r in runs.items() if m != "full"]
    text = "Speed, per step against full fine-tuning's: " + "; ".join(speed) + "."
    if "checkpointing" in runs:
        c = runs["checkpointing"]["tokens_per_s"] / ref["tokens_per_s"]
        text += (f" Checkpointing's recomputation would predict about 3/4 of the speed (a forward is about a third of a "
                 f"step's work); here it runs at {c:.2f}x" + (", inside the steps' noise." if spread.verdict(
                     runs["checkpointing"]["tokens_per_s_steps"], ref["tokens_per_s_steps"]) == "tie" else "."))
    drop = ref["val_loss_before"] - ref["val_loss"]  # full fine-tuning's loss drop
    adapters = [m for m in runs if m in ("lora", "qlora", "qlora-attn")]
    if adapters and drop > 0:
        text += (f" Full fine-tuning lowers the validation loss from {ref['val_loss_before']:.3f} to {ref['val_loss']:.3f}; "
                 "in the same steps " + ", ".join(
                     f"{m} reaches {runs[m]['val_loss']:.3f} ({(runs[m]['val_loss_before'] - runs[m]['val_loss']) / drop:.0%} of that drop)"
                     for m in adapters)
                 + f": in {base.steps} steps, training a small share of the weights, they reach part of full fine-tuning's drop.")
    peakllm.say(text)

# %% [markdown]
# **Reading the table.**
#
# * **Full fine-tuning** costs 16 bytes per parameter of model state (4 weights + 4 gradients +
#   8 AdamW) -- the ZeRO paper's number for mixed-precision Adam too, where fp16 weights and
#   gradients (2 + 2) come with an fp32 master copy and two moments (12). At this batch the
#   activations are the largest part; for billions of parameters the model state is.
# * **Mixed precision** (autocast) keeps fp32 weights, gradients and optimizer state; it halves
#   the activations computed in 16-bit. Not all of them: the logits are upcast to fp32 for the
#   loss, and autocast's bf16 copies of the weights are saved for backward (counted as activations).
# * **Checkpointing** keeps only each block's input and recomputes the rest in backward (about
#   one extra forward pass; what it cost here is measured below). What remains is dominated by the LM head's logits,
#   which are not checkpointed.
# * **8-bit AdamW** stores both moments in 8 bits with a 32-bit scale per 256-value block:
#   a quarter of the optimizer state (tensors under 4,096 values keep 32-bit state).
# * **LoRA** trains only the adapters, a small share of the parameters (the `trainable` column): gradients and optimizer state all but vanish, but the
#   frozen weights and the activations stay.
# * **QLoRA** also stores the frozen weights in 4-bit NormalFloat and checkpoints the layers:
#   every part shrinks at once. With adapters on every linear layer it trains more parameters than
#   the attention-only variant, and its gradients and optimizer state grow accordingly -- still a
#   sliver of the total.
# * **The loss curves** of the four recipes that train every weight (full, amp, checkpointing,
#   8-bit AdamW) lie on top of each other, and that is the lesson: they change where the bytes
#   go, not what is learned. Checkpointing recomputes exactly; bf16 autocast and 8-bit moments
#   round a little, too little to see in the loss. The adapters train far fewer weights; how much of full
#   fine-tuning's loss drop they reach in these steps is measured below.
#
# The question of this chapter: how many times less exact training memory does QLoRA need than
# full fp32 fine-tuning, at the same batch and sequence length?

# %%
if {"full", "qlora"} <= set(runs):
    ratio = runs["full"]["parts"]["total"] / runs["qlora"]["parts"]["total"]
    print(f"full / QLoRA exact training memory: {ratio:.2f}x")
    rec.add("memory_ratio", round(ratio, 2), "x", method="qlora")
bpp = pd.DataFrame({m: training.bytes_per_param(r["parts"], r["total_params"]) for m, r in runs.items()}).T.round(2)
bpp.columns = [f"{c} B/param" for c in bpp.columns]
bpp

# %% [markdown]
# ## 5. Scaled up: which GPU does each recipe need?
#
# The model state (weights, gradients, optimizer) grows with the parameter count; we scale our
# **measured** bytes per weight (4 in fp32; NF4 with its double-quantized constants, as stored)
# and per trainable parameter to the shapes of Llama 2 7B and 70B -- with LoRA's frozen base in
# bf16, as LoRA is run on large models. The adapters' trainable count comes from the same
# r (d_in + d_out) formula on q, k, v, o of every layer (and, for QLoRA as published, on the MLP's
# gate, up and down). Activations are left out:
# they depend on batch x sequence, and checkpointing keeps them to a few GB.

# %%
est_rows = []
for size, shape in training.TARGETS.items():
    for m, r in runs.items():
        e = training.model_state_estimate(r, shape)
        est_rows.append({"model": size, "method": m, "trainable": f"{e['trainable']:.3g}",
                         "weights": memory.human(e["weights"]), "grads+optimizer": memory.human(e["gradients+optimizer"]),
                         "model state": memory.human(e["model_state"]), "smallest GPU that holds it": e["fits"]})
        rec.add("model_state_estimate", round(e["model_state"]), "B", method=m, model=size)
pd.DataFrame(est_rows).set_index(["model", "method"])

# %% [markdown]
# ## 6. Paper vs ours
#
# The published anchors (`data/reference/paper_numbers.json`) beside our measurements. LoRA's
# 10,000x is for GPT-3 175B with r = 4 on W_q and W_v; the same r (d_in + d_out) count on GPT-3's
# shape (96 layers, d = 12,288) gives it back, while on our tiny model the same count gives only the ratio in the `ours` column.

# %%
gpt3_lora = 96 * 2 * 4 * (12288 + 12288)  # 96 layers x (W_q, W_v) x r=4 x (d_in + d_out)
cmp_rows = [{"quantity": "model-state bytes per parameter, Adam", "paper": reference.paper_value(metric="bytes_per_param", method="amp"),
             "ours": round(bpp.loc["full", ["weights B/param", "gradients B/param", "optimizer B/param"]].sum(), 2) if "full" in runs else None,
             "setting": "paper: fp16 + fp32 master (ZeRO); ours: fp32 AdamW"},
            {"quantity": "LoRA: fewer trainable parameters", "paper": reference.paper_value(metric="trainable_params_reduction", method="lora"),
             "ours": round(runs["lora"]["total_params"] / runs["lora"]["trainable_params"]) if "lora" in runs else None,
             "setting": f"paper: GPT-3 175B (same formula gives {175e9 / gpt3_lora:,.0f}x); ours: {model_name}, r={lora_r}"},
            {"quantity": "8-bit optimizer: state smaller by", "paper": reference.paper_value(metric="optimizer_state_reduction", method="adamw8bit"),
             "ours": round(1 - runs["adamw8bit"]["parts"]["optimizer"] / runs["full"]["parts"]["optimizer"], 3)
             if {"adamw8bit", "full"} <= set(runs) else None, "setting": "share of AdamW's fp32 state removed"}]
if "qlora" in runs:
    e = training.model_state_estimate(runs["qlora"], training.TARGETS["70B"])
    cmp_rows.append({"quantity": "QLoRA 65B-70B model state fits one 48 GB GPU", "paper": "65B on 48 GB",
                     "ours": f"70B: {memory.human(e['model_state'])}", "setting": "ours: measured NF4 bytes/weight x 70B (+ activations)"})
pd.DataFrame(cmp_rows).set_index("quantity")

# %% [markdown]
# What differs and why: our model is tiny, so the fixed costs the papers
# neglect (the fp32 embedding that QLoRA leaves unquantized, 32-bit state of small tensors in
# 8-bit Adam, the logits) are a larger share here. Scaled to billions of parameters (section 5)
# they fade and the published ratios come back.

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
if {"full", "checkpointing", "adamw8bit", "lora", "qlora"} <= set(runs):
    human = memory.human
    nbytes = {(m, part): rec.value("train_bytes", method=m, part=part) for m in runs for part in (*memory.PARTS, "total")}
    lora_trainable = rec.value("trainable_params", method="lora")
    lora_base = runs["lora"]["total_params"] - lora_trainable  # the frozen model the adapters sit beside
    nf4_bits = 8 * (packed.numel() + 4 * absmax.numel()) / W.numel()  # section 3's NF4 weight, indices + absmax
    state_bytes = (state["state1"].numel() + 4 * state["absmax1"].numel()) / state["state1"].numel()
    removed = 1 - nbytes["adamw8bit", "optimizer"] / nbytes["full", "optimizer"]
    curve_gap = max(abs(a["train_loss"] - f["train_loss"]) for a, f in zip(runs["adamw8bit"]["log"], runs["full"]["log"]))
    act_full, act_ckpt = nbytes["full", "activations"], nbytes["checkpointing", "activations"]
    shrunk = [part for part in memory.PARTS if nbytes["qlora", part] < nbytes["full", part]]
    peakllm.say(f"""
* LoRA is a side path, $h = W_0 x + \\frac{{\\alpha}}{{r}} B A x$: by hand it equals peft's layer, and
  at r = {lora_r} a {W0.shape[0]} x {W0.shape[1]} projection trains {A.numel() + B.numel():,} parameters beside {W0.numel():,} frozen ones. On the
  attention projections of every block that is {lora_trainable:,} trainable parameters beside {lora_base:,} frozen ones
  ({lora_trainable / lora_base:.1%}): gradients go from {human(nbytes["full", "gradients"])} to {human(nbytes["lora", "gradients"])} and optimizer state from
  {human(nbytes["full", "optimizer"])} to {human(nbytes["lora", "optimizer"])}, while the weights stay ({human(nbytes["lora", "weights"])}, adapters included) and
  the activations go from {human(nbytes["full", "activations"])} to {human(nbytes["lora", "activations"])}.
* NF4 is a table of 16 normal quantiles and one absmax per 64 weights: built by hand, it equals
  bitsandbytes' table, and one weight quantized by hand equals bitsandbytes' bit for bit at {nf4_bits:.2f}
  bits per weight.
* 8-bit AdamW keeps {state_bytes:.3f} bytes per moment value instead of 4: the optimizer state goes from
  {human(nbytes["full", "optimizer"])} to {human(nbytes["adamw8bit", "optimizer"])} ({removed:.3f} of it removed), and its training loss stays
  within {curve_gap:.4f} nats of full fine-tuning's at every step.
* A checkpointed block keeps only its input: {human(ckpt.bytes)} instead of the {human(plain.bytes)} autograd saves
  for one block at this batch; for the whole model, activations {"fall" if act_ckpt < act_full else "go"} from {human(act_full)} to {human(act_ckpt)},
  at the cost of a second forward pass.
* Together in QLoRA, {"every part shrinks" if len(shrunk) == len(memory.PARTS) else "the " + ", ".join(shrunk) + " shrink"}: {rec.value("memory_ratio", method="qlora"):.2f}x less exact training memory than full fp32
  fine-tuning at the same batch.
""")
else:
    peakllm.say("The takeaways quote the full, checkpointing, adamw8bit, lora and qlora runs: keep them in `methods`.")

# %% [markdown]
# ## Lab: a LoRA layer, by hand
#
# Write LoRA's layer (Hu et al. 2021, section 4.1) as a module of your own: `LoRALinear` wraps a
# frozen `nn.Linear` $W_0 \in \mathbb{R}^{d \times k}$ (with its bias $b_0$) and adds the low-rank
# side path
#
# $$h = W_0 x + b_0 + \frac{\alpha}{r} B A \,\mathrm{dropout}(x), \qquad A \in \mathbb{R}^{r \times k}, \; B \in \mathbb{R}^{d \times r}.$$
#
# * `__init__(base, r, alpha, dropout)`: keep `base` as `self.base` and freeze it (no gradients for
#   its weight and bias); make `self.A` (r x k) and `self.B` (d x r) `nn.Parameter`s. Draw $A$ as
#   peft draws it -- `torch.empty(r, k)` filled by `nn.init.kaiming_uniform_(A, a=math.sqrt(5))`,
#   the default initialization of an `nn.Linear` -- and start $B$ at zero, so that training starts
#   from $W_0$ exactly. Store `self.scaling` $= \alpha / r$ and `self.dropout`, an `nn.Dropout` on
#   the side path's input (the paper's `lora_dropout`; 0 here, as in this notebook's `lora` recipe).
# * `forward(x)`: $h$ for a row of $k$ features per token, `x` of shape (..., k) -> (..., d). With a
#   row per token, $B A x$ is `x @ A.T @ B.T`; multiply by $A$ first and the side path never forms a
#   $d \times k$ matrix.
# * `merge()`: a new `nn.Linear` with weight $W_0 + \frac{\alpha}{r} B A$ and bias $b_0$ -- one matrix
#   again, as after training -- leaving the LoRA layer as it is (copy the base, `copy.deepcopy`).
#
# The inputs: `base_lab`, a copy of section 3's layer-0 `q_proj` before merging ($W_0$ = `W0`, $b_0$
# = `b0`, 256 x 256), and `x_lab`, 4 seeded tokens. The cell then gives $B$ seeded values, as if
# trained a little, and computes your $h$ and your merged layer. The check wraps a copy of the same
# base linear in peft's own LoRA layer (`LoraConfig` and `get_peft_model`, as `training.prepare`
# does), compares your initial $A$ and $B$ with peft's drawn under the same seed, copies your $A$
# and $B$ into peft's `lora_A` / `lora_B` and compares the outputs and the merged weight with peft's
# `merge_and_unload`; then it checks the point of LoRA: only $r (k + d)$ parameters train, $W_0$
# stays frozen, and one optimizer step moves $A$ and $B$ and nothing else.

# %% nbgrader={"grade": false, "grade_id": "lab-11-lora", "locked": false, "schema_version": 3, "solution": true}
import copy
import math

base_lab = torch.nn.Linear(W0.shape[1], W0.shape[0])  # k -> d: section 3's q_proj of layer 0, before merging
with torch.no_grad():
    base_lab.weight.copy_(W0)  # W0: (d, k)
    base_lab.bias.copy_(b0)    # b0: (d,)
x_lab = torch.randn(4, W0.shape[1], generator=torch.Generator().manual_seed(seed))  # (4, k): 4 tokens


class LoRALinear(torch.nn.Module):
    """h = W0 x + b0 + (alpha / r) B A dropout(x) beside a frozen nn.Linear (Hu et al. 2021, section 4.1)."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        d, k = base.weight.shape  # W0: (d, k) = (out_features, in_features)
        # self.base: frozen; self.A: (r, k), Kaiming-uniform as peft; self.B: (d, r), zero;
        # self.scaling = alpha / r; self.dropout: nn.Dropout(dropout) on the side path's input
        ### BEGIN SOLUTION
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)                       # W0 and b0 get no gradients
        self.A = torch.nn.Parameter(torch.empty(r, k))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # peft's (and nn.Linear's) draw
        self.B = torch.nn.Parameter(torch.zeros(d, r))    # B = 0: h = W0 x at the start
        self.scaling = alpha / r
        self.dropout = torch.nn.Dropout(dropout)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., k) -> h: (..., d)
        ### BEGIN SOLUTION
        side = self.dropout(x) @ self.A.T @ self.B.T      # (..., r), then (..., d): B A x, row per token
        return self.base(x) + self.scaling * side         # W0 x + b0 + (alpha / r) B A x
        ### END SOLUTION

    def merge(self) -> torch.nn.Linear:
        """A new nn.Linear with weight W0 + (alpha / r) B A and bias b0; this layer stays as it is."""
        ### BEGIN SOLUTION
        merged = copy.deepcopy(self.base)
        with torch.no_grad():
            merged.weight += self.scaling * (self.B @ self.A)  # (d, r) @ (r, k) -> (d, k)
        return merged
        ### END SOLUTION


with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    lora_lab = LoRALinear(base_lab, lora_r, lora_alpha)   # A drawn under a fixed seed
with torch.no_grad():
    lora_lab.B.normal_(std=0.02, generator=torch.Generator().manual_seed(seed + 1))  # as if trained a little: B != 0
h_lab = lora_lab(x_lab)          # (4, d)
merged_lab = lora_lab.merge()    # one nn.Linear(k, d) again
print(f"A {tuple(lora_lab.A.shape)}, B {tuple(lora_lab.B.shape)}, alpha / r = {lora_lab.scaling}; "
      f"your side path moves h by up to {(h_lab - base_lab(x_lab)).abs().max():.3f}")

# %% nbgrader={"grade": true, "grade_id": "lab-11-lora-check", "locked": true, "points": 4, "schema_version": 3, "solution": false} tags=["check"]
from collections import OrderedDict

from peft import LoraConfig, get_peft_model

from peakllm.workbook import labs

# peft's LoRA layer around another copy of the same base linear (W0, b0), configured as training.prepare does
ref_base_lab = torch.nn.Linear(W0.shape[1], W0.shape[0])
with torch.no_grad():
    ref_base_lab.weight.copy_(W0)
    ref_base_lab.bias.copy_(b0)
peft_lab = get_peft_model(torch.nn.Sequential(OrderedDict(proj=copy.deepcopy(ref_base_lab))),
                          LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=["proj"], bias="none"))
ref_lab = peft_lab.base_model.model.proj  # a peft.tuners.lora.Linear
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    fresh_lab = LoRALinear(copy.deepcopy(ref_base_lab), lora_r, lora_alpha)  # yours, as constructed
    torch.manual_seed(seed)
    ref_lab.reset_lora_parameters("default", True)                        # peft's, under the same seed
labs.close("A at initialization", fresh_lab.A, ref_lab.lora_A["default"].weight, rtol=1e-4)
labs.equal("B at initialization", fresh_lab.B, ref_lab.lora_B["default"].weight)

with torch.no_grad():  # your trained-a-little A and B into peft's layer
    ref_lab.lora_A["default"].weight.copy_(lora_lab.A)
    ref_lab.lora_B["default"].weight.copy_(lora_lab.B)
    h_ref_lab = ref_lab(x_lab)
    base_out_lab = ref_lab.base_layer(x_lab)  # W0 x + b0
labs.close("h", h_lab, h_ref_lab, rtol=1e-4)
labs.close("the side path h - W0 x - b0", h_lab - base_out_lab, h_ref_lab - base_out_lab, rtol=1e-4)
labs.close("h from your layer after merge()", lora_lab(x_lab), h_ref_lab, rtol=1e-4)
merged_ref_lab = peft_lab.merge_and_unload().proj  # peft's merged nn.Linear
labs.close("merged weight minus W0", merged_lab.weight - W0, merged_ref_lab.weight - W0, rtol=1e-4)
labs.close("merged bias", merged_lab.bias, merged_ref_lab.bias, rtol=1e-4)

# the outcome: only A and B train
d_lab, k_lab = W0.shape
trainable_lab = {n: p.numel() for n, p in lora_lab.named_parameters() if p.requires_grad}
labs.outcome(sum(trainable_lab.values()) == lora_r * (k_lab + d_lab),
             f"your layer trains {sum(trainable_lab.values()):,} parameters {sorted(trainable_lab)}, "
             f"not r (k + d) = {lora_r * (k_lab + d_lab):,}")
labs.outcome(not lora_lab.base.weight.requires_grad and not lora_lab.base.bias.requires_grad,
             "the base layer's weight or bias still requires grad: W0 and b0 must stay frozen")
step_lab = copy.deepcopy(lora_lab)
before_lab = {n: p.detach().clone() for n, p in step_lab.named_parameters()}
opt_lab = torch.optim.SGD(step_lab.parameters(), lr=0.1)
step_lab(x_lab).pow(2).mean().backward()
opt_lab.step()
moved_lab = sorted(n for n, p in step_lab.named_parameters() if not torch.equal(p.detach(), before_lab[n]))
labs.outcome(moved_lab == ["A", "B"], f"one optimizer step changed {moved_lab}; only A and B should move")
print(f"{sum(trainable_lab.values()):,} trainable parameters = r (k + d) = {lora_r} x ({k_lab} + {d_lab}) beside "
      f"{W0.numel():,} frozen; one SGD step moved {moved_lab} only")
labs.passed("a LoRA layer and its merge")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `lora_r` to 64 and rerun. How do the trainable parameters, the memory and the validation loss change?

# %% [markdown] tags=["solution"]
# **Solution 1.** Trainable: r (d_in + d_out) per adapted matrix, so 8x the r = 8 count of every adapter row (for LoRA: 64 x (256 + 256) x 4 projections x 4 layers). Gradients and AdamW state grow 8x with it (4 + 8 bytes per trainable parameter), still small next to the frozen weights and the activations, so the totals move little. Compare the validation loss after the rerun with this run's: the rank sets how much the adapters can express, but 20 steps at one learning rate may not use even r = 8's capacity.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Halve and double `batch_size`. Which part of the memory follows it? At which batch size do the activations of full fine-tuning fall below its model state, and which method keeps them smallest?

# %% [markdown] tags=["solution"]
# **Solution 2.** Only the activations follow the batch: divide the activations column by the batch size and you get about the same bytes per sequence at every batch. Set full fine-tuning's activations against its model state (weights, gradients and AdamW's two moments: 16 bytes per parameter) to find where they cross. Gradient checkpointing (and QLoRA, which uses it) keeps the activations smallest, and what remains is mostly the logits: the LM head's output over the whole vocabulary for every token.

# %% [markdown]
# **Exercise 3 (code).** Merging, by hand: write the merged weight
# $W = W_0 + \frac{\alpha}{r} B A$ of section 3's adapted layer as `W_merged`, from `W0`, `A`, `B`,
# `lora_alpha` and `lora_r`. The check compares it with the weight peft's `merge_and_unload`
# wrote.

# %% nbgrader={"grade": false, "grade_id": "ex11-merge", "locked": false, "schema_version": 3, "solution": true, "task": false}
### BEGIN SOLUTION
W_merged = W0 + (lora_alpha / lora_r) * B.detach() @ A.detach()  # (d, r) @ (r, k) -> (d, k)
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex11-merge-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
torch.testing.assert_close(W_merged, merged.weight)
torch.testing.assert_close(x @ W_merged.T + b0, h)  # one matrix, the same output as the side path
print(f"W_merged = merge_and_unload's weight; it moved W0 by up to {(W_merged - W0).abs().max():.4f}")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
