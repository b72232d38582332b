# %% [markdown]
# # 12 · Case study 1, continued: when one device is not enough -- DDP and FSDP
#
# **Goal.** Train the same model on several processes with `torch.distributed` and see what each
# strategy replicates, what it shards, and what it sends over the wire: data parallel (DDP) and
# fully sharded data parallel (FSDP, which is ZeRO stage 3). Check that two ranks follow the
# single-process loss curve, and get the launch line for a multi-GPU or multi-node run.
#
# **Prerequisites.** Notebook 11 (the four parts of training memory).
#
# **Runtime on the default** (`tiny-opt`, 2 ranks on 2 CPU cores, gloo): under a minute; peak
# memory about 0.5 GiB RSS per rank.

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
#
# ## 3. One process, then N ranks

# %%
results = {"single": distributed.launch("single", 1, out=work / "single.json", **args)}
for s in strategies:
    results[s] = distributed.launch(s, nproc, out=work / f"{s}.json", **args)
for name, r in results.items():
    print(f"{name:<6}: {r['world_size']} rank(s), backend {r['backend']}, {r['device']}, "
          f"{r['seconds']:.1f} s for {steps} steps ({r['tokens_per_s']:.0f} tok/s), "
          f"peak RSS per rank {', '.join(memory.human(b) for b in r['peak_rss_per_rank'])}")

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

# %% [markdown]
# The curves lie on top of each other: the gaps are float rounding (the gradient is summed in a
# different order), far below the tolerance.
#
# ## 4. What each rank holds
#
# Bytes of model state on each rank after the first step (fp32 weights, gradients and AdamW's two
# moments: 16 bytes per parameter in one process). The ZeRO paper's formula for stage 3 is
# 16 Ψ / N per rank for Ψ parameters on N ranks.

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

# %% [markdown]
# FSDP's shards are a little more than 1/N because each parameter is padded to a multiple of N.
#
# ## 5. What goes over the wire
#
# Bytes each rank hands to collectives per step, and what a ring algorithm sends from each rank:
# an all-reduce sends 2 (N-1)/N of its payload, an all-gather or reduce-scatter (N-1)/N of the
# full tensor. DDP all-reduces the gradients once; FSDP gathers each block's weights for the
# forward and again for the backward and reduce-scatters the gradients: up to 1.5x DDP's traffic
# for 1/N of the memory (less here: the root's weights, the embedding, stay gathered from the
# forward to the backward).

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
# ## 6. The same run on GPUs or across nodes
#
# The notebook launched `torchrun` on this machine. The same module runs on a GPU server
# (NCCL, one rank per GPU) or on several nodes with a rendezvous endpoint:

# %%
import shlex

print("this machine:  ", shlex.join(distributed.launch_command("fsdp", nproc, **args, out="fsdp.json")))
print("8 GPUs:        ", shlex.join(distributed.launch_command("fsdp", 8, **args, out="fsdp.json")))
print("2 nodes x 8:   ", shlex.join(distributed.launch_command("fsdp", 8, nnodes=2, rdzv_endpoint="node0:29500",
                                                             **args, out="fsdp.json")))

# %% [markdown]
# ## Exercises
#
# Try each one before you open its solution (student copies, made with `python -m peakllm student`, leave the solutions out).

# %% [markdown] tags=["exercise"]
# **Exercise 1.** Set `nproc` to 1 and then 4 (keep `batch_size` 8). How do FSDP's per-rank bytes follow 16 Psi / N, and what happens to the bytes each rank sends?

# %% [markdown] tags=["solution"]
# **Solution 1.** Per rank: 65.2 MiB (N = 1), 32.6 MiB (N = 2), about 16.3 MiB (N = 4, plus padding to multiples of 4). Each rank still hands the full weight and gradient sizes to the collectives, but a ring sends (N - 1)/N of them: 0.5 at N = 2, 0.75 at N = 4, approaching the full size. Memory per rank falls as 1/N; traffic per rank does not. (On 2 cores, 4 ranks share the CPU: slower, same numbers.)

# %% [markdown] tags=["exercise"]
# **Exercise 2.** ZeRO-1 shards only the optimizer state. Using section 4's table, compute its bytes per parameter per rank for N = 2 and N = 64, and compare with DDP and FSDP.

# %% [markdown] tags=["solution"]
# **Solution 2.** ZeRO-1: weights 4 + gradients 4 + AdamW 8 / N bytes per parameter: 12 B at N = 2, just over 8 B at N = 64. DDP: 16 B for any N. ZeRO-2 (also shard the gradients): 4 + 12 / N: 10 B, and just over 4 B. FSDP / ZeRO-3: 16 / N: 8 B, and a quarter of a byte. Only full sharding lets the model state shrink without bound as ranks are added.

# %% [markdown]
# ## Records

# %%
peakllm.finish(rec, results_path)
