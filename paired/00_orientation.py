# %% [markdown]
# # 00 · Orientation: the workbench, the embedded default, and how we measure
#
# **Goal.** Before making anything cheaper, learn what "cost" means here: where the memory of a
# training step goes, what the model's quality is (perplexity), and how fast this device could
# possibly go (its roofline). Every later notebook measures with exactly these tools.
#
# **Prerequisites.** Python and a little PyTorch. Nothing to download: the corpus, tokenizer and
# models ship in `data/`.
#
# **Runtime on the default** (2 CPU cores, no GPU): under a minute; peak memory under 2 GiB RSS, most of
# it the buffer of the bandwidth measurement (4x the last-level cache).

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # shipped model (tiny-opt, tiny-moe), a local directory, or a Hub id such as facebook/opt-125m
dataset: str = "shakespeare"  # evaluation text: shakespeare (shipped, offline), wikitext2, ptb or c4 (Hub)
seqlen: int = 0  # perplexity window in tokens; 0 means the model's context length
batch_size: int = 8  # sequences per forward pass (perplexity) and per training step (memory anatomy)
anatomy_seq_len: int = 256  # tokens per sequence in the memory-anatomy training step
device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, mps or cpu
seed: int = 0  # seeds Python, NumPy and torch
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

import peakllm
from peakllm import models, show_source
from peakllm.core import memory, perplexity, roofline
from peakllm.data import corpus, evaldata

rec, dev = peakllm.setup("00_orientation", globals())

# %% [markdown]
# ## 1. This machine
#
# `peakllm.core.roofline.describe` names the device, its memory, whether it computes in **bf16 natively**
# (by compute capability on a GPU, by instruction set on a CPU -- not whether torch can emulate
# it), and its two **roofline ceilings**: peak FLOP/s and memory bandwidth. Known GPUs come from a
# datasheet table; anything else (like this CPU) is measured on the spot.

# %%
info = roofline.describe(device)
print(roofline.format_description(info))

# %% [markdown]
# ## 2. The embedded default
#
# Everything runs offline on what ships in `data/`:
#
# * **Corpus** -- Shakespeare's complete works (Project Gutenberg, public domain), split **by work**:
#   the validation and test plays were never seen in training, in any form.
# * **Tokenizer** -- byte-level BPE with 4,096 tokens, trained on the train split (the GPT-2/OPT scheme).
# * **Three tiny models**, pretrained here from scratch (notebook 01 shows how):
#   `tiny-opt` (the OPT architecture, so the same code serves `facebook/opt-125m`),
#   `tiny-moe` (a Mixtral-style mixture of experts: 8 experts, top-2 routing) and
#   `tiny-switch` (a Switch Transformer, the QMoE paper's family: an encoder-decoder with 16
#   experts and top-1 routing in every other block, trained on T5's span corruption; notebook 20).

# %%
m = corpus.manifest()
pd.DataFrame([{"split": s, "works": len(e["works"]), "characters": e["bytes"],
               "held-out works": ", ".join(w["title"] for w in e["works"]) if s != "train" else f"(the other {len(e['works'])})"}
              for s, e in m["splits"].items()])

# %%
rows = []
for name in models.SHORT_NAMES:
    cfg = models.TINY_CONFIGS[name]
    tiny = models.new_tiny(name)
    n = models.count_params(tiny)
    rows.append({"model": name, "architecture": cfg["model_type"], "layers": tiny.config.num_hidden_layers,
                 "hidden": tiny.config.hidden_size, "context": cfg.get("max_position_embeddings", "relative"),
                 "experts": models.moe.experts_per_layer(tiny.config), "parameters": n["total"],
                 "expert share": f"{n['experts'] / n['total']:.0%}",
                 "checkpoint MB": round((models.MODELS / name / "model.safetensors").stat().st_size / 1e6, 1)})
pd.DataFrame(rows)

# %% [markdown]
# ## 3. Load the model
#
# One loader serves a shipped short name, a local directory and a Hub id (`peakllm.models.load`).
# Offline, a Hub id fails within seconds with one message instead of retrying for a minute.

# %%
model, tokenizer = models.load(model_name, device=device)
ctx = models.context_length(model)
print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, context {ctx} tokens")
print(tokenizer.convert_ids_to_tokens(tokenizer("To be, or not to be: that is the question.")["input_ids"]))

# %% [markdown]
# ## 4. The memory anatomy of a training step
#
# A training step holds four kinds of bytes (the ZeRO paper's accounting): **weights**,
# **gradients**, **optimizer state** (AdamW keeps two fp32 moments: 8 bytes per parameter) and
# **activations** saved in the forward pass for the backward pass.
#
# **What one layer saves, by hand.** A linear layer computes $y = xW^\top + b$. Its backward pass
# needs $\partial L/\partial W = (\partial L/\partial y)^\top x$ -- the input x -- and
# $\partial L/\partial x = (\partial L/\partial y)\,W$ -- the weight, which is in memory anyway. So
# for an input of B sequences of T tokens of width d_in, in fp32, it keeps
#
# $$\text{saved bytes} = B \cdot T \cdot d_\text{in} \cdot 4.$$
#
# PyTorch lets us watch: `torch.autograd.graph.saved_tensors_hooks` calls a *pack* hook on every
# tensor autograd saves. Here the hook is a list's `append`, on the model's first linear layer:

# %%
lin_name, lin = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
T = min(anatomy_seq_len, ctx)
x_lin = torch.randn(batch_size, T, lin.in_features, device=dev, requires_grad=True)  # (B, T, d_in), as from an earlier layer
saved = []  # the pack hook appends each tensor autograd saves (no backward here, so no unpack hook runs)
with torch.autograd.graph.saved_tensors_hooks(saved.append, saved.append):
    y_lin = lin(x_lin)                                                   # (B, T, d_out)
for t in saved:
    is_x = t.untyped_storage().data_ptr() == x_lin.untyped_storage().data_ptr()
    print(f"saved {tuple(t.shape)} {t.dtype}: " + ("the input x, as a (B·T, d_in) view: new bytes" if is_x
          else "the weight, transposed (a view of the parameter): no new bytes"))
by_hand = batch_size * T * lin.in_features * 4
with memory.SavedActivations(model) as counter:                         # the library's counter
    lin(x_lin)
assert counter.bytes == by_hand
print(f"{lin_name}: B·T·d_in·4 = {batch_size}·{T}·{lin.in_features}·4 = {by_hand:,} bytes by hand; "
      f"memory.SavedActivations counts {counter.bytes:,}")
del saved, y_lin

# %% [markdown]
# `memory.SavedActivations` is this hook, run over a whole training step: it counts each storage
# once (a tensor saved by two operations, or a view of it, is one allocation) and leaves the
# parameters out. `memory.training_step_anatomy` counts the four parts of one step with it:

# %%
peakllm.seed_everything(seed)
train_model = models.load_model(model_name, device=device, dtype="float32")  # fp32 weights for training
optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
x = torch.randint(0, len(tokenizer), (batch_size, min(anatomy_seq_len, ctx)), device=dev)
parts = memory.training_step_anatomy(train_model, optimizer, {"input_ids": x, "labels": x})
n_params = sum(p.numel() for p in train_model.parameters())
anatomy = pd.DataFrame([{"part": p, "bytes": parts[p], "size": memory.human(parts[p]),
                         "bytes/parameter": round(parts[p] / n_params, 2)} for p in (*memory.PARTS, "total")])
for p in (*memory.PARTS, "total"):
    rec.add("bytes", parts[p], "B", part=p, model=model_name)
print(f"batch {batch_size} x {x.shape[1]} tokens, fp32 weights, torch AdamW")
anatomy

# %%
ax = memory.plot_anatomy({f"{model_name}\nAdamW fp32": parts})
ax.figure.tight_layout()
plt.show()
del train_model, optimizer

# %% [markdown]
# Weights, gradients and optimizer state add up to **16 bytes per parameter** in fp32 with AdamW
# (4 + 4 + 8); the activations grow with batch and sequence length and, for a model this small at the
# default batch and length, dominate. Case study 1 (notebooks 10-12) removes each part in turn.
#
# ## 5. Quality: perplexity with the papers' protocol
#
# The GPTQ and SparseGPT papers tokenize the test text **once**, cut it into non-overlapping
# windows of the model's context, drop the tail, and report the exponential of the mean token
# cross-entropy over all N predicted tokens:
#
# $$\mathrm{PPL} = \exp\Big(-\frac{1}{N}\sum_{t} \log p_\theta(x_t \mid x_{<t})\Big).$$

# %%
ids = evaldata.eval_ids(dataset, tokenizer, seqlen or ctx)
ppl = perplexity.perplexity(model, ids, seqlen=seqlen or None, batch_size=batch_size)
rec.add("perplexity", round(ppl, 2), "ppl", method="dense", dataset=dataset, model=model_name)
table = [{"model": model_name, "dataset": dataset, "tokens": ids.numel(),
          "windows": ids.numel() // (seqlen or ctx), "perplexity": round(ppl, 2)}]
if dataset == "shakespeare":
    train_ids = evaldata.eval_ids("shakespeare", tokenizer, split="train")
    uni = perplexity.unigram_perplexity(train_ids, ids, len(tokenizer))
    rec.add("perplexity", round(uni, 2), "ppl", method="unigram", dataset=dataset, model=model_name)
    table.append({"model": "unigram baseline", "dataset": dataset, "tokens": ids.numel(),
                  "windows": "", "perplexity": round(uni, 2)})
pd.DataFrame(table)

# %% [markdown]
# The function that computed it: the windows in batches, each window's logits against its own
# tokens shifted by one, the cross-entropy summed over every predicted token, and the count of
# those tokens (`perplexity.perplexity` returns exp(sum / count)):

# %%
show_source(perplexity.nll)

# %% [markdown]
# ## 6. Speed limits: this device's roofline
#
# Decoding one token at batch size 1 reads every weight once and does about 2 FLOPs per weight:
# an arithmetic intensity of 2 / (bytes per weight) FLOP/byte -- 0.5 in fp32, 1 in 16-bit,
# 4 at 4 bits. Left of the ridge point, speed is set by bandwidth, not by FLOP/s.

# %%
peak = info["peak_flops_16bit"] or info["peak_flops_fp32"]
bw = info["bandwidth"]
ridge = roofline.ridge_point(peak, bw)
print(f"peak      : {peak / 1e9:.0f} GFLOP/s   ({info['source']})")
print(f"bandwidth : {bw / 1e9:.0f} GB/s")
print(f"ridge     : {ridge:.1f} FLOP/byte")
rec.add("peak_flops", peak, "FLOP/s")
rec.add("bandwidth", bw, "B/s")
points = {f"batch-1 decode, {b}": (2 / nbytes, roofline.attainable(2 / nbytes, peak, bw))
          for b, nbytes in [("fp32", 4), ("bf16", 2), ("int4", 0.5)]}
ax = roofline.plot(peak, bw, points, title=f"roofline of this {info['device']}")
ax.figure.tight_layout()
plt.show()

# %% [markdown]
# ## 7. Rerun with other parameters
#
# Every notebook is a papermill template: its first code cell holds the parameters. List them:

# %%
import subprocess
import sys

from peakllm.core.paths import NOTEBOOKS

help_text = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", "00_orientation.ipynb"],
                           capture_output=True, text=True, check=True, cwd=NOTEBOOKS).stdout
print(help_text[help_text.index("Parameters inferred"):])

# %% [markdown]
# and rerun, for example, on the MoE model, or (on a GPU with Hub access) on the paper's model:
#
# ```bash
# papermill notebooks/00_orientation.ipynb runs/moe.ipynb -p model_name tiny-moe
# papermill notebooks/00_orientation.ipynb runs/opt125m.ipynb -p model_name facebook/opt-125m -p dataset wikitext2
# ```
#
# `make workbook` runs every notebook this way and gathers the records below into
# `runs/default/results.json`.

# %% [markdown]
# ## Lab: the roofline verdict of a matrix multiply
#
# Every linear layer is a matrix multiply $C = A B$: $A$ holds $m$ tokens of $k$ features
# ($m \times k$), $B$ the weight ($k \times n$), $C$ the output ($m \times n$). Write
# `roofline_point(m, n, k, bytes_per_element, peak_flops, bandwidth)`, which places one such
# multiply on a device's roofline (Williams, Waterman & Patterson, CACM 2009: the model's bound,
# attainable FLOP/s = min(peak FLOP/s, peak bandwidth x *operational intensity*), and its ridge point):
#
# $$W = 2\,m\,n\,k \ \text{FLOPs} \qquad (m n \text{ outputs, each } k \text{ multiplies and } k \text{ adds}),$$
#
# $$Q = (m k + k n + m n)\, b \ \text{bytes} \qquad (A \text{ and } B \text{ read once, } C \text{ written once, } b \text{ bytes per element}),$$
#
# $$I = \frac{W}{Q}, \qquad P = \min(\pi,\ I\,\beta), \qquad I^* = \frac{\pi}{\beta},$$
#
# with $\pi$ the peak FLOP/s and $\beta$ the bandwidth in bytes/s. $Q$ is the least traffic any
# kernel can get away with (real kernels re-read tiles and move more). A multiply with $I < I^*$
# is **memory-bound** (it waits for bytes), one with $I \ge I^*$ **compute-bound**. Return a dict
# with the keys `flops` ($W$), `bytes` ($Q$), `intensity` ($I$), `attainable` ($P$) and
# `verdict` (the string `"memory-bound"` or `"compute-bound"`).
#
# **Prepared for you:** `ceilings_lab`, the two ceilings $(\pi, \beta)$ of this device (section 6's
# `peak` and `bw`) and of an H100 (datasheet, `roofline.KNOWN_GPUS`), and `shapes_lab`, five
# multiplies of a 7B-class layer (hidden width 4096) as $(m, n, k, b)$: one token decoded at a
# time (batch 1, fp32 and bf16), 64 sequences decoded together, a 2048-token prompt (prefill),
# and a large square multiply. The cell applies your function to every pair.
#
# **Hints.** At $m = 1$ the weight dominates $Q$ and $I \approx 2 / b$: section 6's batch-1 decode
# points. Python integers do not overflow; `min` takes floats. The check compares your numbers with
# torch's own FLOP counter (`torch.utils.flop_counter`) and the tensors' sizes, your attainable
# FLOP/s and verdict with `roofline.attainable` and `roofline.ridge_point`, and checks that
# batch-1 decoding is memory-bound and the large square multiply compute-bound on the H100's
# datasheet ceilings (this device's are measured, so its verdicts are shown, not required).

# %% nbgrader={"grade": false, "grade_id": "lab-00-roofline", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["nbval-ignore-output"]
h100_lab = next(row for row in roofline.KNOWN_GPUS if row[0] == "H100")  # (name, 16-bit TFLOP/s, fp32 TFLOP/s, GB/s)
ceilings_lab = {f"this {info['device']}": (peak, bw),                     # section 6's (FLOP/s, bytes/s)
                "H100 SXM (datasheet)": (h100_lab[1] * 1e12, h100_lab[3] * 1e9)}
d_lab = 4096                                                               # hidden width of a 7B-class model
shapes_lab = {                                                             # name: (m, n, k, bytes per element)
    "batch-1 decode, fp32": (1, d_lab, d_lab, 4),
    "batch-1 decode, bf16": (1, d_lab, d_lab, 2),
    "batch-64 decode, bf16": (64, d_lab, d_lab, 2),
    "prefill 2048 tokens, bf16": (2048, d_lab, d_lab, 2),
    "square 8192, bf16": (8192, 8192, 8192, 2),
}


def roofline_point(m, n, k, bytes_per_element, peak_flops, bandwidth):
    """Place C = A @ B -- A (m, k), B (k, n), C (m, n) -- on the roofline of a device with
    ``peak_flops`` FLOP/s and ``bandwidth`` bytes/s.

    Returns {"flops": W, "bytes": Q, "intensity": I (FLOP/byte), "attainable": P (FLOP/s),
             "verdict": "memory-bound" or "compute-bound"}.
    """
    ### BEGIN SOLUTION
    flops = 2 * m * n * k                                   # m*n outputs, k multiply-adds each
    elements = m * k + k * n + m * n                        # A and B read once, C written once
    nbytes = elements * bytes_per_element
    intensity = flops / nbytes                              # FLOP per byte moved
    attainable = min(peak_flops, intensity * bandwidth)     # under both ceilings
    ridge = peak_flops / bandwidth                          # I*: where the two ceilings meet
    verdict = "memory-bound" if intensity < ridge else "compute-bound"
    return {"flops": flops, "bytes": nbytes, "intensity": intensity,
            "attainable": attainable, "verdict": verdict}
    ### END SOLUTION


points_lab = {dev_lab: {name_lab: roofline_point(*shape_lab, *ceil_lab) for name_lab, shape_lab in shapes_lab.items()}
              for dev_lab, ceil_lab in ceilings_lab.items()}
pd.DataFrame([{"device": dev_lab, "matmul (m, n, k, b)": f"{name_lab} {shapes_lab[name_lab]}",
               "FLOP/byte": round(p_lab["intensity"], 1), "attainable GFLOP/s": round(p_lab["attainable"] / 1e9),
               "verdict": p_lab["verdict"]}
              for dev_lab, pts_lab in points_lab.items() for name_lab, p_lab in pts_lab.items()])

# %% nbgrader={"grade": true, "grade_id": "lab-00-roofline-check", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false} tags=["check"]
from torch.utils.flop_counter import FlopCounterMode

from peakllm.workbook import labs

for dev_lab, (peak_lab, bw_lab) in ceilings_lab.items():
    ridge_lab = roofline.ridge_point(peak_lab, bw_lab)
    for name_lab, (m_lab, n_lab, k_lab, b_lab) in shapes_lab.items():
        yours_lab, where_lab = points_lab[dev_lab][name_lab], f"{name_lab} on {dev_lab}"
        A_lab, B_lab = torch.empty(m_lab, k_lab, device="meta"), torch.empty(k_lab, n_lab, device="meta")  # shapes, no memory
        with FlopCounterMode(display=False) as counter_lab:
            C_lab = A_lab @ B_lab
        flops_lab = counter_lab.get_total_flops()                               # torch counts the multiply
        bytes_lab = (A_lab.numel() + B_lab.numel() + C_lab.numel()) * b_lab    # every operand once
        labs.close(f"{where_lab}: FLOPs", yours_lab["flops"], flops_lab, rtol=1e-6)
        labs.close(f"{where_lab}: bytes", yours_lab["bytes"], bytes_lab, rtol=1e-6)
        labs.close(f"{where_lab}: intensity", yours_lab["intensity"], flops_lab / bytes_lab, rtol=1e-6)
        labs.close(f"{where_lab}: attainable FLOP/s", yours_lab["attainable"],
                   roofline.attainable(flops_lab / bytes_lab, peak_lab, bw_lab), rtol=1e-6)
        expected_lab = "memory-bound" if flops_lab / bytes_lab < ridge_lab else "compute-bound"
        labs.outcome(yours_lab["verdict"] == expected_lab,
                     f"{where_lab}: your verdict is {yours_lab['verdict']!r}, but its intensity "
                     f"{flops_lab / bytes_lab:.3g} FLOP/byte against the ridge point {ridge_lab:.3g} makes it {expected_lab!r}")
        labs.outcome(yours_lab["attainable"] <= peak_lab, f"{where_lab}: your attainable FLOP/s exceed the peak")
# the outcome, on the datasheet's ceilings (this device's are measured, and a busy machine measures a low peak)
dev_lab = "H100 SXM (datasheet)"
for name_lab in ("batch-1 decode, fp32", "batch-1 decode, bf16"):
    labs.outcome(points_lab[dev_lab][name_lab]["verdict"] == "memory-bound", f"{name_lab} is not memory-bound on {dev_lab}")
labs.outcome(points_lab[dev_lab]["square 8192, bf16"]["verdict"] == "compute-bound",
             f"the square 8192 multiply is not compute-bound on {dev_lab}")
assert set(points_lab) == set(ceilings_lab)  # every device placed
labs.passed("the roofline verdict of a matrix multiply")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Rerun this notebook with `-p model_name tiny-moe`. Before you do, predict the weights, gradients and AdamW state of the MoE from its parameter count (6,102,720). Which part grows, relative to `tiny-opt`, and does the fact that a token visits only 2 of 8 experts help?

# %% [markdown] tags=["solution"]
# **Solution 1.** Weights 6,102,720 x 4 B, gradients as many bytes again, AdamW's two moments twice that: the model state grows with **all** parameters (6,102,720 against tiny-opt's count, both in section 2's table), because every expert has weights, gradients and optimizer state whether or not a token visits it. Routing to 2 of 8 experts saves compute and activations (only the routed tokens' expert activations are saved), not model state.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** Halve `anatomy_seq_len` to 128. Predict the saved-activation bytes before you run it.

# %% [markdown] tags=["solution"]
# **Solution 2.** About half of the activations row of section 4's table. Every tensor autograd saves here is (B, T, something): hidden states, MLP inputs, logits. PyTorch's fused attention (SDPA) saves no T x T score matrix, so nothing grows with T squared at this size.

# %% [markdown]
# **Exercise 3 (code).** `lin_ex` below is the linear layer of the model with the widest input
# (for `tiny-opt`, an MLP's second matrix `fc2`, which reads the `ffn_dim`-wide hidden layer).
# Fed `batch_size` sequences of `T` tokens, how many bytes does it save for backward in fp32?
# Compute `bytes_ex` without running the layer; the check cell runs it under the library's counter.

# %% nbgrader={"grade": false, "grade_id": "ex00-1", "locked": false, "schema_version": 3, "solution": true, "task": false}
width, name_ex = max((m.in_features, n) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
lin_ex = model.get_submodule(name_ex)
### BEGIN SOLUTION
bytes_ex = batch_size * T * lin_ex.in_features * 4   # its input x, fp32; the weight is a parameter
### END SOLUTION
print(f"{name_ex} ({lin_ex.in_features} -> {lin_ex.out_features}) saves {bytes_ex:,} bytes = {memory.human(bytes_ex)}")

# %% nbgrader={"grade": true, "grade_id": "ex00-1-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
x_ex = torch.randn(batch_size, T, lin_ex.in_features, device=dev, requires_grad=True)
with memory.SavedActivations(model) as counter_ex:
    lin_ex(x_ex)
assert bytes_ex == counter_ex.bytes
print("checks passed")

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
per_param = {p: parts[p] / n_params for p in memory.PARTS}
largest = max(memory.PARTS, key=parts.get)
ppl_dense = rec.value("perplexity", method="dense", dataset=dataset, model=model_name)
held_out = "on the held-out plays" if dataset == "shakespeare" else f"on {dataset}"
unigram = (f", a unigram model that ignores context {rec.value('perplexity', method='unigram', dataset=dataset, model=model_name):.2f}"
           if dataset == "shakespeare" else "")
intensities = [i for i, _ in points.values()]  # fp32, bf16, int4: 2 FLOPs per weight / bytes per weight
left = max(intensities) < ridge
peakllm.say(f"""
* A linear layer keeps its input for the backward pass: B · T · d_in · 4 bytes in fp32 --
  {by_hand:,} bytes for the first linear layer (`{lin_name}`) at batch {batch_size} × {T} tokens,
  by hand and by `memory.SavedActivations` alike. The weight it also keeps is a parameter: no new memory.
* Model state in fp32 with AdamW is 16 bytes per parameter
  ({per_param['weights']:.2f} + {per_param['gradients']:.2f} + {per_param['optimizer']:.2f} in the anatomy table); at batch {batch_size} × {x.shape[1]} tokens the saved
  activations, {memory.human(parts['activations'])} or {per_param['activations']:.2f} bytes per parameter,
  {"are the largest part of a training step" if largest == "activations" else f"are smaller than the {largest}"}.
* Quality is perplexity with the papers' protocol: `{model_name}` scores {ppl_dense:.2f} {held_out}{unigram}.
* Batch-1 decoding does 2 FLOPs per weight it reads, {min(intensities):g} to {max(intensities):g} FLOP/byte from fp32
  to int4: {"left" if left else "not all left"} of this device's ridge point ({ridge:.1f} FLOP/byte), so its speed is
  {"set by memory bandwidth, not by FLOP/s" if left else "no longer set by memory bandwidth alone in every format"}.
""")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
