"""Efficient fine-tuning, measured: what each standard technique removes from training's memory.

Case study 1 of the review (Rostam et al. 2024, section on optimizing model training) lists the
tools that make training fit: mixed precision (Micikevicius et al. 2018), gradient
checkpointing (Chen et al. 2016), 8-bit optimizer state (Dettmers et al. 2022), low-rank
adapters (LoRA, Hu et al. 2021) and LoRA on a 4-bit NormalFloat base (QLoRA, Dettmers et al.
2023). Each attacks one of the four parts ``peakllm.core.memory`` counts:

=============  ===========================================================  ==================
method         what changes                                                 part it shrinks
=============  ===========================================================  ==================
full           fp32 weights, torch AdamW (two fp32 moments)                 -- (the baseline)
amp            forward in bf16 (fp16 + GradScaler where bf16 is missing)    activations
checkpointing  keep each layer's input, recompute the rest in backward      activations
adamw8bit      AdamW moments in 8 bits with per-block scales (bitsandbytes)  optimizer
lora           base frozen, ΔW = B A of rank r on the attention projections  gradients, optimizer
qlora          as published: NF4 base (double quantization), LoRA on every   weights too
               linear layer of the blocks, checkpointing, bf16 compute where
               the device has it, paged 32-bit AdamW on CUDA
qlora-attn     the same with LoRA on the attention projections only          (a labelled variant)
=============  ===========================================================  ==================

QLoRA as published (Dettmers et al. 2023, section 4 and the qlora repository's defaults): LoRA
adapters on all linear layers of the blocks -- the paper finds that adapting only the attention
projections does not match 16-bit fine-tuning -- a bf16 compute dtype, and a paged AdamW whose
32-bit state moves to CPU memory under pressure (CUDA unified memory; on a CPU there is nothing
to page to, so the same 32-bit AdamW runs unpaged). Its hyperparameters are the repository's
Guanaco-7B script's (``scripts/finetune_guanaco_7b.sh``, ``QLORA_PUBLISHED``): r = 64, alpha = 16,
dropout 0.1, learning rate 2e-4 held constant, Adam's beta2 = 0.999, gradients clipped to a norm
of 0.3. ``qlora-attn`` and ``lora`` are ours: the notebook's rank, learning rate and no dropout.

``prepare`` builds the model, optimizer and autocast context of one method;
``finetune`` trains it for a fixed number of steps on the same windows, seed and learning
rate, measures the exact bytes of its first step (``memory.training_step_anatomy``), its
throughput, and its validation loss.
"""
from __future__ import annotations

import math
import statistics
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .. import models
from ..compat import keep_bnb_cpu_layout, quiet_peft_checkpointing_notice
from ..core import memory
from ..core.checks import as_list, choice, positive_int
from ..core.hardware import bf16_native, resolve_device
from ..core.perplexity import mean_nll
from ..core.timing import Timer
from ..data.windows import window_batches

RECIPES = ("full", "amp", "checkpointing", "adamw8bit", "lora", "qlora", "qlora-attn")
# The qlora repository's Guanaco-7B script (github.com/artidoro/qlora, scripts/finetune_guanaco_7b.sh):
# --lora_r 64 --lora_alpha 16 --lora_dropout 0.1 --learning_rate 0.0002 --lr_scheduler_type constant
# --adam_beta2 0.999 --max_grad_norm 0.3 --weight_decay 0.0 (qlora.py's default optimizer: paged_adamw_32bit;
# its --warmup_ratio 0.03 has no effect under the constant scheduler)
QLORA_PUBLISHED = dict(lora_r=64, lora_alpha=16, lora_dropout=0.1, lora_lr=2e-4, beta2=0.999, max_grad_norm=0.3)
ADAPTER_RECIPES = ("lora", "qlora", "qlora-attn")
TIMING_WARMUP = 2  # timed steps dropped before the median: the allocator and caches warm up
QLORA_RECIPES = ("qlora", "qlora-attn")


@dataclass
class FinetuneConfig:
    model_name: str = "tiny-opt"
    method: str = "full"
    steps: int = 30            # optimizer steps, the same for every method
    batch_size: int = 8        # windows per step
    seq_len: int = 256         # tokens per window
    lr: float = 1e-4           # learning rate when all weights train
    lora_lr: float = 1e-3      # learning rate of the adapters (LoRA / QLoRA)
    lora_r: int = 8            # rank r of ΔW = B A
    lora_alpha: int = 16       # ΔW is scaled by alpha / r
    lora_dropout: float = 0.0  # dropout on the adapters' input
    beta2: float = 0.95        # Adam's second-moment decay
    max_grad_norm: float = 0.0  # clip the gradients' global norm to this (0: no clipping)
    device: str = "auto"
    seed: int = 0

    def check(self) -> None:
        """Every argument, before anything is loaded."""
        choice("method", self.method, RECIPES)
        for k in ("steps", "batch_size", "seq_len"):
            positive_int(k, getattr(self, k))
        if not isinstance(self.lora_r, int) or isinstance(self.lora_r, bool) or self.lora_r <= 0:
            raise ValueError(f"lora_r={self.lora_r!r} must be a positive integer (the adapter rank)")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha={self.lora_alpha!r} must be > 0")
        if not (self.lr > 0 and self.lora_lr > 0):
            raise ValueError(f"lr={self.lr!r} and lora_lr={self.lora_lr!r} must be > 0")
        if not (0 <= self.lora_dropout < 1 and 0 < self.beta2 < 1 and self.max_grad_norm >= 0):
            raise ValueError(f"lora_dropout={self.lora_dropout!r} must lie in [0, 1), beta2={self.beta2!r} in (0, 1), "
                             f"max_grad_norm={self.max_grad_norm!r} at least 0")
        models.resolve(self.model_name)
        dev = resolve_device(self.device)
        if self.method in ("adamw8bit", *QLORA_RECIPES):
            models.require_bitsandbytes("method", self.method, dev)


def check_methods(methods) -> list[str]:
    """A list of method names (a papermill string too), each one of ``RECIPES``."""
    methods = as_list("methods", methods)
    for m in methods:
        choice("methods", m, RECIPES)
    return methods


def for_method(base: FinetuneConfig, method: str) -> FinetuneConfig:
    """``base`` run as ``method``: ``qlora`` takes the published hyperparameters
    (``QLORA_PUBLISHED``) over ``base``'s; every other recipe takes ``base``'s."""
    return FinetuneConfig(**(asdict(base) | {"method": method} | (QLORA_PUBLISHED if method == "qlora" else {})))


def check_all(methods, base: FinetuneConfig) -> list[str]:
    """Every method's configuration (``for_method``) checked before any runs."""
    methods = check_methods(methods)
    for m in methods:
        for_method(base, m).check()
    return methods


def amp_dtype(device) -> tuple[torch.dtype, str]:
    """The autocast dtype for ``device`` and why: bf16 where the hardware has it, else the
    stated fallback (fp16 with loss scaling on pre-Ampere GPUs; emulated bf16 elsewhere)."""
    dev = torch.device(device)
    if bf16_native(dev):
        return torch.bfloat16, f"bf16 autocast ({dev.type} computes bf16 natively)"
    if dev.type == "cuda":
        return torch.float16, "fp16 autocast + GradScaler (this GPU has no bf16: compute capability < 8.0)"
    return torch.bfloat16, f"bf16 autocast, emulated: this {dev.type} has no native bf16, so expect it slower"


def attention_projections(model) -> list[str]:
    """Names (last component) of the linear layers inside the attention blocks: LoRA's targets."""
    names = set()
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0].rpartition(".")[2]  # "...layers.0.self_attn.q_proj" -> "self_attn"
        if isinstance(module, torch.nn.Linear) and "attn" in parent:
            names.add(name.rsplit(".", 1)[-1])
    if not names:
        raise ValueError(f"found no attention projections in {type(model).__name__} to adapt with LoRA")
    return sorted(names)


def block_linears(model) -> list[str]:
    """Names (last component) of every linear layer inside the blocks -- attention and MLP, not
    the LM head: QLoRA's targets (peft's ``target_modules="all-linear"`` selects the same)."""
    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head and ".layers." in f".{name}"}
    if not names:
        raise ValueError(f"found no linear layers in the blocks of {type(model).__name__} to adapt with LoRA")
    return sorted(names)


def lora_targets(model, method: str) -> list[str]:
    """The layers ``method`` adapts: every block linear layer for QLoRA as published, the
    attention projections for LoRA and the attention-only QLoRA variant."""
    return block_linears(model) if method == "qlora" else attention_projections(model)


def lora_trainable(model, r: int, method: str = "lora") -> int:
    """LoRA's count: r * (d_in + d_out) per adapted matrix (A is r x d_in, B is d_out x r)."""
    targets = set(lora_targets(model, method))
    head = model.get_output_embeddings()
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head and n.rsplit(".", 1)[-1] in targets)


def prepare(cfg: FinetuneConfig):
    """``(model, optimizer, autocast, scaler, note)`` for ``cfg.method``; nothing trained yet."""
    cfg.check()
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    note = "fp32"
    if cfg.method in QLORA_RECIPES:
        model = load_nf4(cfg.model_name, dev)
        note = f"NF4 base (double quantization), {str(model.dtype).removeprefix('torch.')} compute"
    else:
        model = models.load_model(cfg.model_name, device=str(dev), dtype="float32")  # fp32 master weights
    model.config.use_cache = False
    ckpt = {"use_reentrant": False}
    if cfg.method == "checkpointing":
        model.activation_checkpointing_enable(ckpt)
        note += " + checkpointing (non-reentrant)"
    if cfg.method in QLORA_RECIPES:  # peft's recipe: freeze the base, checkpoint, inputs carry grad
        from peft import prepare_model_for_kbit_training

        quiet_peft_checkpointing_notice()
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=ckpt)
        note += " + checkpointing (non-reentrant)"
    if cfg.method in ADAPTER_RECIPES:
        from peft import LoraConfig, get_peft_model

        quiet_peft_checkpointing_notice()
        targets = lora_targets(model, cfg.method)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, bias="none", task_type="CAUSAL_LM"))
        note += f" + LoRA r={cfg.lora_r} on {', '.join(targets)}" + (f", dropout {cfg.lora_dropout:g}" if cfg.lora_dropout else "")
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lora_lr if cfg.method in ADAPTER_RECIPES else cfg.lr
    autocast, scaler = None, None
    if cfg.method == "amp":
        dtype, why = amp_dtype(dev)
        autocast = torch.autocast(dev.type, dtype=dtype)
        scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
        note = why
    if cfg.method == "adamw8bit" or (cfg.method in QLORA_RECIPES and dev.type == "cuda"):
        import bitsandbytes as bnb

        # QLoRA: paged 32-bit AdamW (paging = CUDA unified memory); else 8-bit AdamW
        opt_cls = bnb.optim.PagedAdamW32bit if cfg.method in QLORA_RECIPES else bnb.optim.AdamW8bit
        optimizer = opt_cls(trainable, lr=lr, betas=(0.9, cfg.beta2), weight_decay=0.0)
        note += f", {opt_cls.__name__}"
    elif cfg.method in QLORA_RECIPES:  # on a CPU there is nothing to page to: the same 32-bit AdamW
        optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, cfg.beta2), weight_decay=0.0)
        note += ", AdamW 32-bit (paging is a CUDA feature)"
    else:
        optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, cfg.beta2), weight_decay=0.0)
    if cfg.max_grad_norm:
        note += f", gradients clipped to norm {cfg.max_grad_norm:g}"
    return model, optimizer, autocast, scaler, note


def load_nf4(model_name: str, device: torch.device):
    """The model with every linear layer of its blocks in 4-bit NormalFloat (QLoRA section 3):
    64-weight blocks with an absmax each, the absmaxes themselves quantized to 8 bits (double
    quantization). Embeddings and the LM head stay in full precision."""
    compute = "bfloat16" if bf16_native(device) else "float32"  # QLoRA computes in bf16
    model = models.load_model(model_name, device=str(device), dtype=compute, quantization="nf4-dq")
    keep_bnb_cpu_layout(model)
    return model


def finetune(cfg: FinetuneConfig, train_ids: torch.Tensor, val_ids: torch.Tensor,
             progress: bool = True) -> dict:
    """Train ``cfg.method`` for ``cfg.steps`` steps; the exact bytes of step 1, trainable
    parameters, the validation loss before and after, and the speed: every later step is timed
    alone, the first ``TIMING_WARMUP`` of them are dropped (allocator and caches warming up), and
    ``tokens_per_s`` is the median over the rest, whose per-step rates (``tokens_per_s_steps``)
    give the spread."""
    model, optimizer, autocast, scaler, note = prepare(cfg)
    dev = resolve_device(cfg.device)
    batches = window_batches(train_ids, cfg.batch_size, cfg.seq_len, cfg.seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    val_before = mean_nll(model, val_ids, cfg.seq_len, cfg.batch_size)
    x = next(batches).to(dev)
    parts = memory.training_step_anatomy(model, optimizer, {"input_ids": x, "labels": x},
                                         autocast=autocast, scaler=scaler, max_grad_norm=cfg.max_grad_norm)
    log = [{"step": 1, "train_loss": parts.pop("loss")}]
    model.train()
    step_seconds = []
    for step in tqdm(range(2, cfg.steps + 1), desc=cfg.method, disable=not progress, leave=False):
        x = next(batches).to(dev)
        with Timer(dev) as t:
            with autocast or nullcontext():
                loss = model(input_ids=x, labels=x).loss
            memory.optimizer_step(loss, optimizer, scaler, cfg.max_grad_norm)
            optimizer.zero_grad(set_to_none=True)
        step_seconds.append(t.seconds)
        log.append({"step": step, "train_loss": loss.item()})
    linear_bytes, linear_params = memory.linear_weights(model)
    warm = min(TIMING_WARMUP, max(len(step_seconds) - 1, 0))  # a short run keeps its last step
    rates = [x.numel() / t for t in step_seconds[warm:]]  # tokens/s of each timed step
    return {"config": asdict(cfg), "note": note, "parts": parts, "trainable_params": trainable,
            "linear_bytes": linear_bytes, "linear_params": linear_params,
            "total_params": sum(p.numel() for p in model.parameters()),
            "tokens_per_s": statistics.median(rates) if rates else float("nan"), "tokens_per_s_steps": rates,
            "val_loss_before": val_before, "val_loss": mean_nll(model, val_ids, cfg.seq_len, cfg.batch_size),
            "log": log}


def compare(methods, base: FinetuneConfig, train_ids, val_ids, progress: bool = True) -> dict:
    """``finetune`` each method with the same settings; every name checked before the first runs."""
    methods = check_all(methods, base)
    runs = {}
    for m in tqdm(methods, desc="methods", disable=not progress):
        runs[m] = finetune(for_method(base, m), train_ids, val_ids, progress)
    return runs


def bytes_per_param(parts: dict, n_params: int) -> dict:
    """Each part of the memory per model parameter (the unit of the ZeRO paper's 16 bytes)."""
    return {k: parts[k] / n_params for k in (*memory.PARTS, "total")}


# Two public shapes to scale to (Llama 2, Touvron et al. 2023, table 1 and appendix):
# parameters, width d, layers, and the width of K and V (grouped-query attention in 70B).
TARGETS = {"7B": {"params": 6.74e9, "d": 4096, "layers": 32, "d_kv": 4096, "ffn": 11008},
           "70B": {"params": 68.98e9, "d": 8192, "layers": 80, "d_kv": 1024, "ffn": 28672}}
GPUS = [("24 GB (RTX 4090)", 24e9), ("48 GB (A6000, L40S)", 48e9), ("80 GB (A100, H100)", 80e9),
        ("141 GB (H200)", 141e9)]


def model_state_estimate(run: dict, target: dict) -> dict:
    """Weights + gradients + optimizer state of ``run``'s method on a model of ``target``'s shape.

    Weights: our measured bytes per linear-layer weight (4 in fp32, about 0.5 in NF4 with its
    constants) times the target's parameters -- except for LoRA, whose frozen base is held in bf16
    (2 bytes), as LoRA is run on large models. Gradients and optimizer state: our measured bytes
    per trainable parameter times the target's trainable count: all parameters, or LoRA's
    r (d_in + d_out) per adapted matrix (q, k, v, o for LoRA and attention-only QLoRA; and the
    MLP's gate, up and down, d <-> ffn, for QLoRA as published). Activations are left out: they
    depend on batch and sequence length, not on this table.
    """
    r, method = run["config"]["lora_r"], run["config"]["method"]
    d, d_kv, L = target["d"], target["d_kv"], target["layers"]
    attention = 2 * (d + d) + 2 * (d + d_kv)  # q, o: d -> d; k, v: d -> d_kv
    if method in ADAPTER_RECIPES:
        mlp = 3 * (d + target["ffn"]) if method == "qlora" else 0  # gate, up: d -> ffn; down: ffn -> d
        trainable = L * r * (attention + mlp)
    else:
        trainable = target["params"]
    per_weight = 2.0 if method == "lora" else run["linear_bytes"] / run["linear_params"]
    per_trainable = (run["parts"]["gradients"] + run["parts"]["optimizer"]) / run["trainable_params"]
    est = {"weights": target["params"] * per_weight, "trainable": trainable,
           "gradients+optimizer": trainable * per_trainable}
    est["model_state"] = est["weights"] + est["gradients+optimizer"]
    est["fits"] = next((name for name, cap in GPUS if est["model_state"] < 0.9 * cap),
                       f"{math.ceil(est['model_state'] / (0.9 * 80e9))} x 80 GB GPUs (sharded)")
    return est
