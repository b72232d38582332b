"""Scale-out with torch.distributed: data parallel (DDP) and fully sharded data parallel (FSDP).

When a model's training state does not fit one device, or one device is too slow, the review's
taxonomy of parallelism offers four cuts: data (every rank a full replica, a shard of the
batch), sharded data (ZeRO, Rajbhandari et al. 2020: the replicas' optimizer state, gradients
and weights split across ranks -- PyTorch's FSDP is ZeRO stage 3), pipeline (GPipe: layers
split into stages) and tensor (Megatron-LM: each matrix split). This module runs the first two
on real ``torch.distributed`` code paths:

* ``ddp``  -- ``DistributedDataParallel``: gradients all-reduced in buckets after backward
  (a ring all-reduce sends 2 (N-1)/N of the gradient bytes per rank);
* ``fsdp`` -- ``fully_shard`` (FSDP2) on every transformer block and the root: each rank keeps
  1/N of weights, gradients and AdamW state; weights are all-gathered before each block's
  forward and backward, gradients reduce-scattered after it (3 (N-1)/N of the weight bytes).

Run it with torchrun (gloo on CPU, NCCL on GPUs); rank 0 writes the results as JSON::

    torchrun --standalone --nproc-per-node 2 -m peakllm.train.distributed --strategy fsdp --out r.json

``launch`` does that from Python (a notebook), ``launch_command`` prints the line for a
multi-GPU or multi-node run. Every rank draws the same global batch from the same seed and
trains on its slice, so N ranks follow the single-process loss curve up to float rounding.
With ``shard_file``, an FSDP run also saves what each rank holds of one weight
(``record_shard``): notebook 12 rebuilds those shards by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..core.units import nbytes

STRATEGIES = ("single", "ddp", "fsdp")


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (FSDP's parameters are DTensors; others are plain)."""
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(model, optimizer) -> dict:
    """Bytes of model state held by this rank: weights, gradients, optimizer state."""
    def size(t):
        return nbytes(local(t))

    params = list(model.parameters())
    opt = sum(size(v) for s in optimizer.state.values() for v in s.values()
              if torch.is_tensor(v) and v.dim() > 0)
    parts = {"weights": sum(size(p) for p in params),
             "gradients": sum(size(p.grad) for p in params if p.grad is not None), "optimizer": opt}
    parts["total"] = sum(parts.values())
    return parts


class CommCounter:
    """Bytes handed to each collective on this rank during a step (payload, not wire traffic)."""

    def __init__(self):
        self.bytes = {"all_reduce": 0, "all_gather": 0, "reduce_scatter": 0}

    def reset(self):
        self.bytes = dict.fromkeys(self.bytes, 0)

    def ddp_hook(self, process_group, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        buf = bucket.buffer()
        self.bytes["all_reduce"] += nbytes(buf)
        return allreduce_hook(process_group, bucket)

    def fsdp_comms(self):
        from ..compat import fsdp_collectives

        DefaultAllGather, DefaultReduceScatter = fsdp_collectives()
        counter = self

        class CountingAllGather(DefaultAllGather):
            def __call__(self, output_tensor, input_tensor, group, async_op=False):
                counter.bytes["all_gather"] += nbytes(output_tensor)
                return super().__call__(output_tensor, input_tensor, group, async_op)

        class CountingReduceScatter(DefaultReduceScatter):
            def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
                counter.bytes["reduce_scatter"] += nbytes(input_tensor)
                return super().__call__(output_tensor, input_tensor, group, op, async_op)

        return CountingAllGather(), CountingReduceScatter()


def wrap(model, strategy: str, device: torch.device, counter: CommCounter):
    """The model under ``strategy``; communication counted by ``counter``."""
    import torch.distributed as dist

    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.register_comm_hook(dist.group.WORLD, counter.ddp_hook)
    elif strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from ..models.structure import find_stacks

        units = [block for _, stack in find_stacks(model) for block in stack]
        for block in units:
            fully_shard(block)
        fully_shard(model)
        gather, scatter = counter.fsdp_comms()
        for unit in (*units, model):
            unit.set_custom_all_gather(gather)
            unit.set_custom_reduce_scatter(scatter)
    return model


def first_block_weight(model) -> str:
    """Name of the weight ``record_shard`` saves: the first linear layer's of the first block."""
    from ..models.structure import find_stacks, linear_layers

    stack_name, stack = find_stacks(model)[0]
    layer_name = next(n for n, m in linear_layers(stack[0]).items() if isinstance(m, torch.nn.Linear))
    return f"{stack_name}.0.{layer_name}.weight"


def record_shard(model, path: str | Path) -> dict:
    """Save each rank's local shard of ``first_block_weight`` to ``path`` (safetensors, keys
    ``rank0``, ``rank1``, ...; rank 0 writes it). FSDP2 keeps every parameter as a DTensor sharded
    on dim 0: rank r holds ``torch.chunk(W, N, dim=0)[r]``, in storage padded to ceil(rows / N)
    rows so that the all-gather moves equal pieces (the local tensor shows the real rows only).
    Call on every rank, after ``wrap`` and before any step changes the weights."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    name = first_block_weight(model)
    param = model.get_parameter(name)
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local(param).detach().cpu().contiguous())
    if dist.get_rank() == 0:
        save_file({f"rank{r}": t for r, t in enumerate(shards)}, str(path), metadata={"param": name})
    return {"param": name, "shape": list(param.shape), "file": str(path),
            "local_shapes": [list(t.shape) for t in shards]}


def ring_traffic(comm: dict, world: int) -> float:
    """Bytes each rank sends per step with ring algorithms: all-reduce 2 (N-1)/N of its
    payload, all-gather and reduce-scatter (N-1)/N of the full tensor."""
    f = (world - 1) / world
    return 2 * f * comm["all_reduce"] + f * (comm["all_gather"] + comm["reduce_scatter"])


def check_args(strategies, nproc: int, steps: int, batch_size: int, seq_len: int, device: str) -> tuple[str, str]:
    """Notebook 12's settings, before any process starts. Returns ``(ranks_device, why)``: the
    device every rank runs on ("cuda": NCCL, one GPU per rank; "cpu": gloo processes) -- pass
    it to the ranks instead of "auto" -- and one sentence saying why."""
    from ..core.checks import choices, positive_int

    choices("strategies", strategies, [s for s in STRATEGIES if s != "single"])
    for k, v in dict(nproc=nproc, steps=steps, batch_size=batch_size, seq_len=seq_len).items():
        positive_int(k, v)
    if batch_size % nproc:
        raise ValueError(f"batch_size={batch_size} must be divisible by nproc={nproc}")
    check_device(device)
    return ranks_device(device, nproc, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def check_device(device: str) -> bool:
    """True for NCCL on CUDA GPUs, False for gloo on CPU processes (no backend runs on MPS)."""
    from ..core.checks import choice
    from ..core.hardware import DEVICES

    choice("device", device, [d for d in DEVICES if d != "mps"])
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no CUDA GPU here; use device='cpu' (gloo) or 'auto'")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def ranks_device(device: str, nproc: int, gpus: int) -> tuple[str, str]:
    """Where ``nproc`` ranks run on a machine with ``gpus`` CUDA GPUs: NCCL needs one GPU per rank.
    ``auto`` takes the GPUs when there are enough and falls back to gloo on CPU processes when
    there are fewer (a one-GPU laptop still runs the notebook); an explicit ``cuda`` with too few
    GPUs is an error."""
    if device == "cpu":
        return "cpu", f"device='cpu': {nproc} CPU processes, gloo"
    if gpus >= nproc:
        return "cuda", f"device={device!r}: {nproc} of the {gpus} GPUs, one per rank, NCCL"
    if device == "cuda":
        raise ValueError(f"nproc={nproc} exceeds the {gpus} GPU(s) of this machine (NCCL needs one GPU per "
                         "rank); lower nproc or use device='cpu'")
    here = "no GPU here" if gpus == 0 else f"{gpus} GPU(s) here, fewer than nproc={nproc}"
    return "cpu", f"device='auto': {here}, so the ranks are {nproc} CPU processes with gloo"


def train(strategy: str, model_name: str = "tiny-opt", steps: int = 20, batch_size: int = 8,
          seq_len: int = 128, lr: float = 1e-4, seed: int = 0, device: str = "auto",
          shard_file: str = "") -> dict:
    """One rank's run (call under torchrun); ``batch_size`` is the global batch. With
    ``shard_file`` and FSDP on several ranks, ``record_shard`` saves one weight's shards there."""
    import torch.distributed as dist

    from .. import models
    from ..data.windows import window_batches
    from ..models.pretraining import token_ids

    cuda = check_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {world} ranks")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(seed)
    model = models.load_model(model_name, device=str(device), dtype="float32").train()  # fp32 master weights
    model.config.use_cache = False
    tokenizer = models.load_tokenizer(model_name)
    ids = token_ids("validation", tokenizer)
    counter = CommCounter()
    n_params = sum(p.numel() for p in model.parameters())
    model = wrap(model, strategy if world > 1 else "single", device, counter)
    shard = record_shard(model, shard_file) if shard_file and strategy == "fsdp" and world > 1 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    batches = window_batches(ids, batch_size, seq_len, seed)  # the same global batches on every rank
    share = batch_size // world
    losses, comm, state, t0 = [], None, None, time.perf_counter()
    for step in range(steps):
        x = next(batches)[rank * share:(rank + 1) * share].to(device)  # (B / N, T): this rank's slice
        counter.reset()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        if step == 0:
            state, comm = state_bytes(model, optimizer), dict(counter.bytes)
        optimizer.zero_grad(set_to_none=True)
        g = loss.detach().clone()
        dist.all_reduce(g)  # the global batch's loss: the mean of equal-sized slices' means
        losses.append(g.item() / world)
    seconds = time.perf_counter() - t0
    from ..core.memory import peak_rss

    per_rank, rss = [None] * world, [None] * world
    dist.all_gather_object(per_rank, state)
    dist.all_gather_object(rss, peak_rss())
    result = {"strategy": strategy, "world_size": world, "backend": dist.get_backend(),
              "device": device.type, "losses": losses, "state_bytes_per_rank": per_rank,
              "comm_bytes_per_step": comm, "peak_rss_per_rank": rss, "ring_bytes_per_step": ring_traffic(comm, world),
              "seconds": seconds, "tokens_per_s": steps * batch_size * seq_len / seconds,
              "params": n_params, "shard": shard}
    # Tear down in order: every rank done, FSDP's state freed while its process group lives,
    # then the group (gloo can abort at exit when sharded tensors outlive their group)
    dist.barrier()
    del model, optimizer
    import gc

    gc.collect()
    dist.destroy_process_group()
    return result


def launch_command(strategy: str, nproc: int = 2, nnodes: int = 1, rdzv_endpoint: str | None = None,
                   **args) -> list[str]:
    """The torchrun line: ``--standalone`` on one machine, a rendezvous endpoint across nodes."""
    from ..core.checks import choice, positive_int

    choice("strategy", strategy, STRATEGIES)
    positive_int("nproc", nproc)
    positive_int("nnodes", nnodes)
    cmd = ["torchrun", f"--nproc-per-node={nproc}"]
    if nnodes == 1:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint='HOST:PORT' (a node every node can reach)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    cmd += ["-m", "peakllm.train.distributed", "--strategy", strategy]
    for k, v in args.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def launch(strategy: str, nproc: int = 2, out: str | Path = "distributed.json", timeout: float = 600,
           **args) -> dict:
    """Run ``nproc`` ranks on this machine with torchrun; return rank 0's results."""
    from ..core.checks import choice

    choice("strategy", strategy, STRATEGIES)
    check_device(args.get("device", "auto"))
    if strategy == "single" and nproc != 1:
        raise ValueError(f"strategy='single' runs one process; got nproc={nproc}")
    out = Path(out)
    out.unlink(missing_ok=True)
    cmd = launch_command(strategy, nproc, **args, out=out)
    cmd[:1] = [sys.executable, "-m", "torch.distributed.run"]  # torchrun of this interpreter
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc)),
                        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        causes = [line for line in lines if any(k in line for k in ("Error", "terminate", "what()", "Exception"))]
        tail = "\n".join(causes[-10:] + ["..."] + lines[-25:])
        raise RuntimeError(f"torchrun ({strategy}, {nproc} ranks) failed with exit code {proc.returncode}:\n{tail}")
    return json.loads(out.read_text())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m peakllm.train.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--strategy", choices=STRATEGIES, required=True)
    p.add_argument("--model-name", default="tiny-opt")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="global batch, split across ranks")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="cuda: NCCL, one rank per GPU; cpu: gloo")
    p.add_argument("--out", default="distributed.json", help="rank 0 writes its results here")
    p.add_argument("--shard-file", default="", help="fsdp: save each rank's shard of one weight here (safetensors)")
    a = p.parse_args(argv)
    result = train(a.strategy, a.model_name, a.steps, a.batch_size, a.seq_len, a.lr, a.seed, a.device, a.shard_file)
    if int(os.environ.get("RANK", 0)) == 0:
        from ..core.paths import atomic_write_text

        atomic_write_text(Path(a.out), json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
