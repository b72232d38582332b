# %% [markdown]
# # 12 · Case study 1, continued: when one device is not enough -- DDP and FSDP
#
# **Goal.** Train the same model on several processes with `torch.distributed` and see what each
# strategy replicates, what it shards, and what it sends over the wire: data parallel (DDP) and
# fully sharded data parallel (FSDP, which is ZeRO stage 3). Shard one weight by hand and
# check it against what each FSDP rank held. Check that two ranks follow the
# single-process loss curve, and get the launch line for a multi-GPU or multi-node run.
#
# **Prerequisites.** Notebook 11 (the four parts of training memory).
#
# **Runtime on the default** (`tiny-opt`, 2 ranks on 2 CPU cores, gloo): under a minute; peak
# memory under 1 GiB RSS per rank.

# %% tags=["parameters"]
model_name: str = "tiny-opt"  # model to train: tiny-opt (shipped), a local directory, or a Hub id such as facebook/opt-125m
strategies: list = ["ddp", "fsdp"]  # strategies to compare with the single process: ddp, fsdp
nproc: int = 2  # ranks (processes) on this machine: CPU processes with gloo, or one per GPU with NCCL
steps: int = 20  # optimizer steps
batch_size: int = 8  # global batch (windows per step), split evenly across the ranks
seq_len: int = 128  # tokens per window
lr: float = 0.0001  # AdamW learning rate
tolerance: float = 0.001  # largest allowed gap to the single-process loss curve (nats/token)
device: str = "auto"  # auto (one GPU per rank when there are enough, else CPU processes), cuda (NCCL) or cpu (gloo)
seed: int = 0  # seeds the batches and the model
results_path: str = ""  # file to write this notebook's records to as JSON; empty keeps them in the notebook

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import peakllm
from peakllm import show_source
from peakllm.core import memory
from peakllm.train import distributed

rec, dev = peakllm.setup("12_scaling_out", globals())
ranks_on, why = distributed.check_args(strategies, nproc, steps, batch_size, seq_len, device)
print(why)
work = Path(tempfile.mkdtemp(prefix="peakllm-dist-"))
args = dict(model_name=model_name, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed, device=ranks_on)

# %% [markdown]
# ## 1. Four ways to cut the work
#
# The review's taxonomy of parallel training, with where each one helps:
#
# | strategy | each rank holds | communication per step | helps when |
# |---|---|---|---|
# | data parallel (DDP) | the whole model state, a slice of the batch | all-reduce of the gradients | the model fits one device; you want throughput |
# | ZeRO-1 / 2 (sharded optimizer / + gradients) | full weights, 1/N of optimizer state (and gradients) | reduce-scatter + all-gather | optimizer state is what does not fit |
# | ZeRO-3 = FSDP (full shard) | 1/N of weights, gradients and optimizer state | all-gather weights (forward and backward), reduce-scatter gradients | the model state does not fit one device |
# | pipeline (GPipe) | a contiguous stage of layers | activations between stages | very deep models; slow links between nodes |
# | tensor (Megatron-LM) | a slice of every matrix | all-reduce of activations inside each layer | very wide layers; fast links (NVLink) inside a node |
#
# Here we run the first and third on real `torch.distributed` code paths; pipeline and tensor
# parallelism change the model code itself and pay off only across many GPUs, so we leave them
# to Megatron-LM and DeepSpeed.
#
# ## 2. The code
#
# `peakllm.train.distributed` is one module: `train` is what each rank runs under `torchrun`. Every
# rank draws the **same** global batch from the same seed and trains on its slice, so N ranks
# compute exactly the gradient of the whole batch.

# %%
show_source(distributed.wrap)

# %% [markdown]
# DDP wraps the model once; FSDP2's `fully_shard` is applied to every transformer block and
# then to the root, so one block's weights at a time are gathered. A communication hook (DDP) and
# custom all-gather / reduce-scatter objects (FSDP's public API) count the bytes each rank hands
# to the collectives.

# %% [markdown]
# ## 3. One weight sharded by hand
#
# ZeRO stage 3 (Rajbhandari et al. 2020) -- FSDP's full sharding -- splits every parameter, its
# gradient and its optimizer state across the N ranks. For $\Psi$ parameters trained in fp32 with
# AdamW (4 bytes of weights, 4 of gradients, 8 of moments), each rank holds
#
# $$\text{DDP: } (4 + 4 + 8)\,\Psi = 16\,\Psi, \qquad \text{ZeRO-3 / FSDP: } \frac{16\,\Psi}{N};$$
#
# the paper counts mixed precision, $(2 + 2 + K)\,\Psi / N$ with $K = 12$ bytes for the fp32
# master weights and Adam's two moments. FSDP2's `fully_shard` cuts each parameter along its first
# dimension: the $d_0$ rows are padded to $N \lceil d_0 / N \rceil$, cut into N equal chunks, and
# rank $r$ keeps chunk $r$. Before a block's forward (and again in its backward) the ranks
# all-gather the chunks into the whole weight and drop the padding. By hand, on the weight the
# FSDP run below records (the first linear layer of the first block), for `nproc` ranks:

# %%
import torch

from peakllm import models

dense = models.load_model(model_name, device="cpu")
shard_name = distributed.first_block_weight(dense)      # the weight the FSDP run saves rank by rank
W = dense.get_parameter(shard_name).detach()            # (d0, k)
N = nproc
rows = -(-W.shape[0] // N)                              # ceil(d0 / N) rows per rank
padded = torch.cat([W, W.new_zeros(N * rows - W.shape[0], *W.shape[1:])])  # (N rows, k)
shards = padded.chunk(N)                                # rank r keeps shards[r]
gathered = torch.cat(shards)[: W.shape[0]]              # the all-gather, padding dropped
assert torch.equal(gathered, W)
print(f"{shard_name} {tuple(W.shape)}: {N} shards of {tuple(shards[0].shape)}, "
      f"{N * rows - W.shape[0]} padding rows; all-gathered back: equal to W")
print(f"this model: {sum(t.numel() for t in dense.parameters()):,} parameters -> 16 bytes each in one process, "
      f"16 / {N} per rank with FSDP; first dimensions of its parameters: {sorted({t.shape[0] for t in dense.parameters()})}")
del dense

# %% [markdown]
# ## 4. One process, then N ranks
#
# The FSDP run also saves what each rank holds of that weight (`shard_file`), before its first
# step changes it.

# %%
results = {"single": distributed.launch("single", 1, out=work / "single.json", **args)}
for s in strategies:
    record = {"shard_file": str(work / "fsdp_shard.safetensors")} if s == "fsdp" else {}
    results[s] = distributed.launch(s, nproc, out=work / f"{s}.json", **args, **record)
for name, r in results.items():
    print(f"{name:<6}: {r['world_size']} rank(s), backend {r['backend']}, {r['device']}, "
          f"{r['seconds']:.1f} s for {steps} steps ({r['tokens_per_s']:.0f} tok/s), "
          f"peak RSS per rank {', '.join(memory.human(b) for b in r['peak_rss_per_rank'])}")

# %%
from safetensors.torch import load_file

if "fsdp" in results:
    held = load_file(results["fsdp"]["shard"]["file"])  # {"rank0": ..., "rank1": ...}: each rank's local shard
    for r in range(N):
        valid = min(rows, max(0, W.shape[0] - r * rows))  # its real rows; FSDP keeps the padding out of sight
        assert torch.equal(held[f"rank{r}"], shards[r][:valid])
        print(f"FSDP rank {r} held {tuple(held[f'rank{r}'].shape)} of {results['fsdp']['shard']['param']}: equal to shard {r} by hand")

# %%
ref = results["single"]["losses"]
gap_rows = []
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, r in results.items():
    ax.plot(range(1, steps + 1), r["losses"], "o-" if name == "single" else "x--", label=f"{name} ({r['world_size']} rank)", ms=4)
    if name != "single":
        gap = max(abs(a - b) for a, b in zip(ref, r["losses"]))
        shown = "< 1e-4" if gap < 1e-4 else f"{gap:.1e}"  # float rounding differs by machine: show its size
        gap_rows.append({"strategy": name, "ranks": r["world_size"], "max |loss - single|": shown,
                         f"within {tolerance}": gap <= tolerance})
        rec.add("loss_gap", round(gap, 4), "nats", strategy=name)
ax.set(xlabel="step", ylabel="loss of the global batch", title=f"{model_name}: {nproc} ranks vs one process")
ax.legend()
fig.tight_layout()
pd.DataFrame(gap_rows)

# %% tags=["nbval-ignore-output"]
gaps = {s: max(abs(a - b) for a, b in zip(ref, results[s]["losses"])) for s in strategies}
worst = max(gaps.values(), default=0.0)
within = "1e-4" if worst < 1e-4 else f"{worst:.1e}"  # float rounding differs by machine: its size
if worst <= tolerance / 10:
    gap_text = (f"The curves lie on top of each other: the largest gap, under {within} nats, is float rounding "
                f"(the gradient is summed in a different order), far below the tolerance of {tolerance}.")
elif worst <= tolerance:
    gap_text = (f"The curves nearly coincide: the largest gap, {within} nats, is within the tolerance of {tolerance}, "
                "though not far below it.")
else:
    gap_text = (f"The curves part: the largest gap, {within} nats, exceeds the tolerance of {tolerance} -- "
                "more than the float rounding of a gradient summed in another order.")
peakllm.say(gap_text)

# %% [markdown]
# ## 5. What each rank holds
#
# Bytes of model state on each rank after the first step (fp32 weights, gradients and AdamW's two
# moments: 16 bytes per parameter in one process), beside section 3's formula, 16 Ψ / N per
# rank for Ψ parameters on N ranks.

# %%
n_params = results["single"]["params"]
state_rows = []
for name, r in results.items():
    for rank, s in enumerate(r["state_bytes_per_rank"]):
        state_rows.append({"strategy": name, "rank": rank, **{k: memory.human(s[k]) for k in ("weights", "gradients", "optimizer", "total")},
                           "bytes/param": round(s["total"] / n_params, 2)})
    if name != "single":
        rec.add("state_bytes_per_rank", r["state_bytes_per_rank"][0]["total"], "B", strategy=name)
world = nproc
zero = pd.DataFrame([{"layout": "one process / DDP replica (16 Ψ)", "bytes/param per rank": 16.0},
                     {"layout": f"ZeRO-3 / FSDP formula (16 Ψ / N), N={world}", "bytes/param per rank": round(16 / world, 2)}])
display(pd.DataFrame(state_rows).set_index(["strategy", "rank"]))
zero

# %% tags=["nbval-ignore-output"]
single_total = results["single"]["state_bytes_per_rank"][0]["total"]
if "fsdp" in results:
    exact = all(s["total"] * nproc == single_total for s in results["fsdp"]["state_bytes_per_rank"])
    peakllm.say(f"FSDP's shards here are exactly 1/N: the first dimension of every parameter of this model is a "
                f"multiple of N = {nproc}." if exact else
                f"FSDP's shards here are not exactly 1/N: some parameter's first dimension is not a multiple of "
                f"N = {nproc}, so the later ranks hold a few rows less.")

# %% [markdown]
# Where a parameter's first dimension is not a multiple of N, the chunks differ by a few rows (section 3); FSDP allocates each local
# shard padded to ceil(d0 / N) rows, so that the all-gather moves equal pieces, and the table
# counts the real rows.
#
# ## 6. What goes over the wire
#
# Bytes each rank hands to collectives per step, and what a ring algorithm sends from each rank:
# an all-reduce sends 2 (N-1)/N of its payload, an all-gather or reduce-scatter (N-1)/N of the
# full tensor. DDP all-reduces the gradients once; FSDP gathers each block's weights for the
# forward and again for the backward and reduce-scatters the gradients: up to half as much again
# as DDP's traffic (3 (N-1)/N against 2 (N-1)/N of the weight bytes) for 1/N of the memory (less
# here: the root's weights, the embedding, stay gathered from the forward to the backward).

# %%
comm_rows = []
for name in strategies:
    c = results[name]["comm_bytes_per_step"]
    comm_rows.append({"strategy": name, **{k: memory.human(v) for k, v in c.items()},
                      "ring traffic per rank": memory.human(results[name]["ring_bytes_per_step"]),
                      "x weight bytes": round(results[name]["ring_bytes_per_step"] / (4 * n_params), 2)})
    rec.add("comm_bytes_per_step", round(results[name]["ring_bytes_per_step"]), "B", strategy=name)
pd.DataFrame(comm_rows).set_index("strategy")

# %% [markdown]
# ## 7. The same run on GPUs or across nodes
#
# The notebook launched `torchrun` on this machine. The same module runs on a GPU server
# (NCCL, one rank per GPU) or on several nodes with a rendezvous endpoint:

# %%
import shlex

print("this machine:  ", shlex.join(distributed.launch_command("fsdp", nproc, **args, out="fsdp.json")))
gpu_args = args | {"device": "cuda"}  # one rank per GPU, NCCL
print("8 GPUs:        ", shlex.join(distributed.launch_command("fsdp", 8, **gpu_args, out="fsdp.json")))
print("2 nodes x 8:   ", shlex.join(distributed.launch_command("fsdp", 8, nnodes=2, rdzv_endpoint="node0:29500",
                                                             **gpu_args, out="fsdp.json")))

# %% [markdown]
# ## Key takeaways

# %% tags=["nbval-ignore-output"]
padding = N * rows - W.shape[0]
names = " and ".join(s.upper() for s in strategies)
lines = [f"* FSDP's sharding is a split of rows: padded to a multiple of N, cut into N equal chunks, one per rank. "
         f"By hand, the first block's `{shard_name}` ({' x '.join(str(d) for d in W.shape)}) gives {N} shards of "
         f"{rows} rows ({padding} of them padding)"
         + (f", equal to what the {N} FSDP ranks held" if "fsdp" in results else "")
         + "; concatenated, they give the weight back (the all-gather)."]
state = [f"{memory.human(single_total)} in one process"]
if "ddp" in results:
    ddp_totals = [s["total"] for s in results["ddp"]["state_bytes_per_rank"]]
    state.append("the same on every DDP replica" if all(t == single_total for t in ddp_totals)
                 else f"up to {memory.human(max(ddp_totals))} on a DDP replica")
if "fsdp" in results:
    fsdp_totals = [s["total"] for s in results["fsdp"]["state_bytes_per_rank"]]
    per_param = max(fsdp_totals) / n_params
    state.append(f"{memory.human(max(fsdp_totals))} on {'each' if len(set(fsdp_totals)) == 1 else 'the fullest'} FSDP rank "
                 f"-- {per_param:.2f} bytes per parameter, "
                 f"{'as' if abs(per_param - 16 / nproc) < 0.005 else 'against'} 16 Ψ / N = {16 / nproc:.2f} with N = {nproc}")
lines.append("* Model state per rank: " + ", ".join(state) + ".")
if "fsdp" in results:  # why a process does not shrink with its state
    rss_single, rss_fsdp = results["single"]["peak_rss_per_rank"][0], max(results["fsdp"]["peak_rss_per_rank"])
    lines.append(f"* A rank's process is more than its model state: peak RSS {memory.human(rss_single)} for the single "
                 f"process, {memory.human(rss_fsdp)} for the fullest FSDP rank, while the state fell by "
                 f"{memory.human(single_total - max(fsdp_totals))}. Every rank is a Python process with its own torch "
                 "(several hundred MB of code and libraries), loads the whole model before FSDP shards it, and keeps the "
                 "activations of its own micro-batch; freed memory stays with the process's allocator. On a GPU the same "
                 "1/N shows in the device memory that holds the state; the process's host memory does not follow it.")
if gaps:
    lines.append(f"* {names} {'follow' if len(gaps) > 1 else 'follows'} the single-process loss curve to within {within}: "
                 "the same gradient, summed in another order." if worst <= tolerance else
                 f"* {names} {'depart' if len(gaps) > 1 else 'departs'} from the single-process loss curve by up to {within}, "
                 f"beyond the tolerance of {tolerance}.")
wire = {s: rec.value("comm_bytes_per_step", strategy=s) for s in strategies}
if wire:
    sent = " and ".join(f"{memory.human(b)} under {s.upper()} ({b / (4 * n_params):.2f}x the weight bytes)" for s, b in wire.items())
    if "ddp" in wire and "fsdp" in wire:
        lead = "Sharding moves more bytes over the wire instead" if wire["fsdp"] > wire["ddp"] else "Sharding moves no more bytes over the wire here"
    else:
        lead = "Over the wire"
    lines.append(f"* {lead}: per step and rank, the ring sends {sent}. Memory per rank falls as 1/N; traffic does not.")
peakllm.say("\n".join(lines))

# %% [markdown]
# ## Lab: data parallelism by hand
#
# What DDP does in one step, written with one collective (Li et al. 2020, *PyTorch Distributed:
# Experiences on Accelerating Data Parallel Training*, section 2). Each of the $N$ ranks holds a
# full replica of the model and of the optimizer, from the same start, and the same global batch
# of $B$ windows. Rank $r$ takes its slice $S_r$ of $B/N$ windows, computes its slice's mean loss
# $\mathcal{L}_r$ and, by backward, the local gradient $g_r = \nabla_\theta \mathcal{L}_r$. An
# **all-reduce** with the sum leaves $\sum_r g_r$ on every rank; divided by $N$, it is the
# gradient of the whole batch, because equal slices make the batch's mean loss the mean of the
# slices' means:
#
# $$g = \frac{1}{N}\sum_{r=0}^{N-1} g_r = \nabla_\theta\, \frac{1}{N}\sum_{r=0}^{N-1}\mathcal{L}_r = \nabla_\theta\, \mathcal{L}_{\text{batch}}.$$
#
# Every rank then takes the same optimizer step from the same weights with the same $g$: the
# replicas stay identical, and no weight ever crosses the wire.
#
# Write `data_parallel_step(model, optimizer, x, rank, world_size)`: slice `x` (the global batch,
# (B, T) token ids), forward and backward on the slice with the model's own next-token loss,
# all-reduce and average every parameter's gradient, step the optimizer, and return the slice's
# loss as a float. Leave the averaged gradients in `p.grad` (do not zero them): the check reads them.
#
# **Prepared for you:** `model0_lab`, the notebook's model in fp32 (every rank starts from a copy),
# `x_lab`, one global batch of 4 windows from the seeded stream `distributed.train` draws from,
# and `rank_main_lab`, what each rank runs: it joins a 2-rank gloo group, builds a copy of the model
# and `distributed.train`'s AdamW, calls your function, then takes the same step with the library's
# DDP (`distributed.wrap`) on a fresh copy, and saves both for the check. The ranks are **forked**
# from this kernel (`torch.multiprocessing.start_processes(..., start_method="fork")`), so they
# see the functions defined here; a spawned process would have to import them from a file.
#
# **Hints.** `loss = model(input_ids=x_r, labels=x_r).loss`; `dist.all_reduce(t, op=dist.ReduceOp.SUM)`
# sums a tensor in place across the ranks; `p.grad /= world_size`. Inside the ranks use only the
# function's arguments, `torch` and `dist`. The check compares your gradients and losses with the
# library's DDP, and your gradients and weights with one process trained on the whole batch, and
# checks that the two ranks end the step with identical weights.

# %% nbgrader={"grade": false, "grade_id": "lab-12-data-parallel", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["nbval-ignore-output"]
import copy

import torch.distributed as dist
import torch.multiprocessing

from peakllm.data.windows import window_batches
from peakllm.models.pretraining import token_ids

world_lab = 2                                                               # ranks, gloo on CPU
model0_lab = models.load_model(model_name, device="cpu", dtype="float32").train()  # fp32 weights, as distributed.train
model0_lab.config.use_cache = False
x_lab = next(window_batches(token_ids("validation", models.load_tokenizer(model_name)), 4, 32, seed))  # (B, T) = (4, 32)


def data_parallel_step(model, optimizer, x, rank, world_size):
    """One data-parallel step on rank ``rank`` of ``world_size``. x: (B, T) token ids, the global
    batch, the same on every rank. Afterwards every parameter's .grad holds the whole batch's
    gradient and the optimizer has stepped. Returns this rank's slice loss (a float)."""
    ### BEGIN SOLUTION
    share = x.shape[0] // world_size                         # B / N windows per rank
    x_r = x[rank * share:(rank + 1) * share]                 # (B / N, T): this rank's slice
    loss = model(input_ids=x_r, labels=x_r).loss             # the slice's mean next-token loss L_r
    loss.backward()                                          # the local gradient g_r
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)    # sum_r g_r, on every rank
            p.grad /= world_size                             # their mean: the whole batch's gradient
    optimizer.step()                                         # the same step on every replica
    return loss.item()
    ### END SOLUTION


def rank_main_lab(rank, world_size, init_file, out_dir):
    """One forked rank: your step, then the library's DDP step from the same start; saves both."""
    torch.set_num_threads(1)                                 # a forked child gets its own small thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    saved = {}
    for who in ("yours", "ddp"):
        model = copy.deepcopy(model0_lab)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)  # distributed.train's
        if who == "yours":
            loss = data_parallel_step(model, opt, x_lab, rank, world_size)
        else:
            ddp = distributed.wrap(model, "ddp", torch.device("cpu"), distributed.CommCounter())
            share = x_lab.shape[0] // world_size
            x_r = x_lab[rank * share:(rank + 1) * share]
            loss = ddp(input_ids=x_r, labels=x_r).loss      # as distributed.train's step
            loss.backward()
            opt.step()
            loss = loss.item()
        saved[who] = {"loss": loss,
                      "grads": torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                          for p in model.parameters()]),
                      "weights": torch.cat([p.detach().flatten() for p in model.parameters()])}
    torch.save(saved, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


work_lab = Path(tempfile.mkdtemp(prefix="peakllm-lab-"))
torch.multiprocessing.start_processes(rank_main_lab, args=(world_lab, str(work_lab / "init"), str(work_lab)),
                                      nprocs=world_lab, join=True, start_method="fork")
results_lab = [torch.load(work_lab / f"rank{r}.pt") for r in range(world_lab)]
print("your slice losses per rank:", ", ".join(f"{res['yours']['loss']:.4f}" for res in results_lab))

# %% nbgrader={"grade": true, "grade_id": "lab-12-data-parallel-check", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false} tags=["check"]
from peakllm.workbook import labs

single_lab = copy.deepcopy(model0_lab)                         # one process, the whole batch
opt_single_lab = torch.optim.AdamW(single_lab.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
single_lab(input_ids=x_lab, labels=x_lab).loss.backward()
grads_single_lab = torch.cat([p.grad.flatten() for p in single_lab.parameters()])
opt_single_lab.step()
weights_single_lab = torch.cat([p.detach().flatten() for p in single_lab.parameters()])
for r_lab, res_lab in enumerate(results_lab):
    labs.close(f"rank {r_lab}: slice loss", res_lab["yours"]["loss"], res_lab["ddp"]["loss"], rtol=1e-5)
    labs.close(f"rank {r_lab}: averaged gradients, against the library's DDP", res_lab["yours"]["grads"],
               res_lab["ddp"]["grads"], rtol=1e-5)
    labs.close(f"rank {r_lab}: averaged gradients, against one process on the whole batch", res_lab["yours"]["grads"],
               grads_single_lab, rtol=1e-5)
    labs.close(f"rank {r_lab}: weights after the step, against one process on the whole batch", res_lab["yours"]["weights"],
               weights_single_lab, rtol=1e-5)
labs.outcome(len(results_lab) == world_lab and torch.equal(results_lab[1]["yours"]["weights"], results_lab[0]["yours"]["weights"]),
             "after your step the ranks hold different weights: the replicas have drifted apart")
labs.passed("data parallelism by hand")

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Four ranks do not fit Binder's 2 GB (each rank is a process with its own copy of torch and the model). Predict instead, from section 5's table and 16 Psi / N, FSDP's bytes per rank at N = 4 and N = 8, and what a ring sends from each rank. Which of this model's parameters would be split unevenly at N = 4? (With 4 cores and 4 GB of memory, check with `nproc` 4.)

# %% [markdown] tags=["solution"]
# **Solution 1.** Section 5's table shows FSDP's total per rank at N = 2 to be half the one-process total, as 16 Psi / N says. At N = 4 a quarter of the one-process total, at N = 8 an eighth. The split is uneven only where a parameter's first dimension is not a multiple of N: here the position embedding, whose 258 rows (the context plus OPT's offset of 2) give chunks of 65, 65, 65 and 63 rows at N = 4, so the last rank holds a little less. Each rank still hands the full weight and gradient sizes to the collectives (section 6), and a ring sends (N - 1)/N of them: half at N = 2, three quarters at N = 4, seven eighths at N = 8, approaching the full size. Memory per rank falls as 1/N; traffic per rank does not.

# %% [markdown] tags=["exercise"]
# **Exercise 2.** ZeRO-1 shards only the optimizer state. Using section 5's table, compute its bytes per parameter per rank for N = 2 and N = 64, and compare with DDP and FSDP.

# %% [markdown] tags=["solution"]
# **Solution 2.** ZeRO-1: weights 4 + gradients 4 + AdamW 8 / N bytes per parameter: 12 B at N = 2, just over 8 B at N = 64. DDP: 16 B for any N. ZeRO-2 (also shard the gradients): 4 + 12 / N: 10 B, and just over 4 B. FSDP / ZeRO-3: 16 / N: 8 B, and a quarter of a byte. Only full sharding lets the model state shrink without bound as ranks are added.

# %% [markdown]
# **Exercise 3 (code).** Shard `W` (section 3's weight) for N = 3 ranks, as FSDP does, and keep
# rank 2's chunk, padding rows included, as `shard_r`. The check compares its rows with
# `torch.chunk`, the split FSDP uses.

# %% nbgrader={"grade": false, "grade_id": "ex12-shard", "locked": false, "schema_version": 3, "solution": true, "task": false}
N_ex, r_ex = 3, 2  # three ranks, the last one
### BEGIN SOLUTION
rows_ex = -(-W.shape[0] // N_ex)  # ceil(d0 / N)
padded_ex = torch.cat([W, W.new_zeros(N_ex * rows_ex - W.shape[0], *W.shape[1:])])
shard_r = padded_ex.chunk(N_ex)[r_ex]
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "ex12-shard-check", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["check"]
real = W.chunk(N_ex)[r_ex]  # the rows FSDP gives rank r_ex
assert shard_r.shape == (-(-W.shape[0] // N_ex), *W.shape[1:])
assert torch.equal(shard_r[: len(real)], real) and not shard_r[len(real):].any()
print(f"rank {r_ex} of {N_ex}: {len(real)} rows of W and {len(shard_r) - len(real)} of padding")

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
