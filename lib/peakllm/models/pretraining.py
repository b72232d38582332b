"""Pretraining the tiny models: the recipe behind ``data/models/tiny-opt`` and ``tiny-moe`` (and ``tiny-switch``'s).

A plain loop in the style of nanoGPT: random windows of ``seq_len`` tokens from the train split,
AdamW, linear warmup then cosine decay, gradient clipping, validation loss every ``eval_every``
steps. Decoder-only models learn the next token; ``tiny-switch`` (an encoder-decoder, as Switch
Transformers are) learns T5's span corruption of the same windows (``peakllm.data.spans``), with
the routers' load-balancing and z-losses added as in the Switch paper. Its cost follows the standard estimate C = 6 N D FLOPs (Kaplan et al.
2020): 2 N per token forward, 4 N backward, N the parameters a token passes through, D tokens.

``python -m peakllm pretrain tiny-opt`` reproduces the shipped checkpoint (same seed, same
config); ``--steps 20`` gives a quick look. A run given a ``state_dir`` saves its training state
there every ``save_every`` steps (``peakllm.models.checkpointing``); ``--resume`` continues it
and ends with the same weights and log as a run that was never interrupted.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import models
from ..core.checks import choice, positive_int
from ..core.hardware import resolve_device
from ..core.paths import atomic_write_text
from ..core.perplexity import mean_loss
from ..data import corpus, spans
from ..data.tokenizer import encode
from ..data.windows import window_batches
from . import checkpointing
from .moe import is_moe, routing


@dataclass
class PretrainConfig:
    model_name: str = "tiny-opt"   # which architecture of models.TINY_CONFIGS
    steps: int = 1000              # optimizer steps (the shipped run)
    batch_size: int = 16           # windows per step
    seq_len: int = 256             # tokens per window (= the model's context)
    lr: float = 2e-3               # peak learning rate
    min_lr_frac: float = 0.1       # cosine decays to lr * min_lr_frac
    warmup: int = 50               # linear warmup steps
    weight_decay: float = 0.1
    lr_scale: str = "none"         # "rms": each tensor's step scaled by its RMS (Adafactor's relative step; T5)
    grad_clip: float = 1.0
    eval_every: int = 100          # steps between validation losses
    eval_windows: int = 64         # validation windows per evaluation
    seed: int = 0
    device: str = "auto"

    @classmethod
    def for_model(cls, model_name: str, **changes) -> "PretrainConfig":
        """The shipped recipe of ``model_name`` (``RECIPES``), with ``changes``."""
        choice("model_name", model_name, models.TINY_CONFIGS)
        return cls(model_name=model_name, **(RECIPES.get(model_name, {}) | changes))

    def check(self):
        choice("model_name", self.model_name, models.TINY_CONFIGS)
        choice("lr_scale", self.lr_scale, LR_SCALES)
        for k in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows"):
            positive_int(k, getattr(self, k))
        ctx = models.TINY_CONFIGS[self.model_name].get("max_position_embeddings", self.seq_len)  # T5: relative positions
        if self.seq_len > ctx:
            raise ValueError(f"seq_len={self.seq_len} exceeds the model's context {ctx}")
        resolve_device(self.device)


# Where a model's recipe differs from PretrainConfig's defaults. tiny-switch: windows of 128 tokens
# (116 in the encoder, 26 in the target: spans.pair_lengths), AdamW with each tensor's step scaled by its RMS and no
# weight decay. T5 and Switch were trained with Adafactor, whose step is relative to each tensor's
# RMS (Shazeer & Stern 2018, section 8); plain AdamW moves T5's embedding table (initialised at
# std 1) 20-60x more slowly, relative to its size, than the attention and expert matrices, and a
# small T5 trained that way stalls at the unigram loss with a decoder that ignores its encoder.
# AdamW scaled by the RMS (as nanoT5 does, Nawrot 2023) learns the span tokens from both sides.
RECIPES = {"tiny-switch": {"seq_len": 128, "steps": 15000, "batch_size": 32, "eval_every": 1000,
                           "warmup": 200, "lr": 2e-2, "lr_scale": "rms", "weight_decay": 0.0}}
LR_SCALES = ("none", "rms")


def rms_scaled(opt, lr: float) -> None:
    """Set each parameter group's (one tensor per group) learning rate to ``lr`` x max(1e-3, RMS)."""
    for g in opt.param_groups:
        p = g["params"][0]
        g["lr"] = lr * max(1e-3, p.detach().float().pow(2).mean().sqrt().item())


def optimizer(model, cfg: PretrainConfig) -> torch.optim.AdamW:
    """The recipe's AdamW, betas (0.9, 0.95): weight decay on the matrices only; with
    ``lr_scale="rms"`` one group per tensor, so ``rms_scaled`` can give each its own step size."""
    if cfg.lr_scale == "rms":
        groups = [{"params": [p], "weight_decay": cfg.weight_decay if p.dim() >= 2 else 0.0} for p in model.parameters()]
    else:
        groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def token_ids(split: str, tokenizer) -> torch.Tensor:
    """The whole split tokenized once, as one 1-D LongTensor."""
    return torch.tensor(encode(tokenizer, corpus.load_split(split)), dtype=torch.long)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def flops_per_token(model) -> int:
    """6 N training FLOPs per token (Kaplan et al. 2020, Table 1: 2N forward, 4N backward), with N
    the weights of the matrix multiplies a token passes through: the blocks' linear layers (for
    a MoE, only the shared parts and k of E experts) and the LM head. Embedding lookups --
    token and position tables -- read one row and multiply nothing, so they are left out; a
    tied LM head is a matmul with the token table and counts once, as the head."""
    n = sum(p.numel() for p in model.parameters())
    n -= sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    cfg = model.config
    if is_moe(cfg):
        E, k = routing(cfg)
        experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
        n -= experts * (1 - k / E)
    if getattr(cfg, "tie_word_embeddings", False):
        n += model.get_input_embeddings().weight.numel()  # the LM head multiplies by the token table
    return int(6 * n)


def pretrain(cfg: PretrainConfig, out_dir: str | Path | None = None, overwrite: bool = False,
             progress: bool = True, state_dir: str | Path | None = None, resume: bool = False,
             save_every: int = 200) -> dict:
    """Train ``cfg.model_name`` from scratch; save checkpoint, tokenizer, config, log, curve.

    With ``state_dir``, the training state (fp32 weights, AdamW's state, the RNG states, the step,
    the log so far, the config) is written there every ``save_every`` steps and at the end;
    ``resume=True`` loads it and continues from the next step, so that the weights and the log
    (all but its wall-clock ``seconds``) are those of an uninterrupted run, and ``out_dir``'s
    checkpoint, log and loss curve are rewritten with the whole history. The config must be the
    saved one except ``steps``, which may be raised to train longer: the cosine schedule is then
    defined over the new total from the resumed step on (the steps already taken followed the old
    one), so the result is no longer that of any single uninterrupted run. ``save_every`` changes
    nothing but how much an interruption loses. A state left in ``state_dir`` is never replaced
    silently: without ``resume`` it takes ``overwrite=True`` (which also replaces ``out_dir``'s
    checkpoint), and ``resume=True`` replaces ``out_dir``'s checkpoint (it is this run's).
    """
    cfg.check()
    positive_int("save_every", save_every)
    out = Path(out_dir) if out_dir else None
    state = Path(state_dir) if state_dir else None
    saved = resumable(cfg, state, resume, overwrite)
    if out is not None and (out / "model.safetensors").exists() and not (overwrite or resume):
        raise FileExistsError(f"out_dir={out} already holds a checkpoint; pass overwrite=True "
                              "or choose another directory")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = models.new_tiny(cfg.model_name, seed=cfg.seed).to(device).train()
    seq2seq = model.config.is_encoder_decoder
    tokenizer = spans.with_sentinels(_tokenizer()) if seq2seq else _tokenizer()
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"{cfg.model_name}: the tokenizer has {len(tokenizer)} tokens, the config {model.config.vocab_size}")
    train_ids, val_ids = token_ids("train", tokenizer), token_ids("validation", tokenizer)
    pairs = spans.objective(model.config, spans.first_sentinel(tokenizer)) if seq2seq else None
    router_logits = {"output_router_logits": True} if is_moe(model.config) else {}
    opt = optimizer(model, cfg)
    log, before, start = [], 0.0, 0
    if saved is not None:
        saved = checkpointing.load_state(state, model, opt)  # weights, AdamW, RNG states
        log, before, start = saved["log"], saved["seconds"], saved["step"]
    # batch k is the k-th draw of the seeded stream: a resumed run skips the `start` batches it has
    # trained on (cheap: index draws and slices, no model) and goes on with the same stream.
    batches = itertools.islice(window_batches(train_ids, cfg.batch_size, cfg.seq_len, cfg.seed), start, None)
    tokens, t0 = (log[-1]["tokens"] if log else 0), time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"pretrain {cfg.model_name}",
               disable=not progress)
    for step in bar:
        if cfg.lr_scale == "rms":
            rms_scaled(opt, lr_at(step, cfg))
        else:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
        x = next(batches)
        pair = pairs(x, seed=step * cfg.batch_size) if seq2seq else {"input_ids": x, "labels": x}
        out_ = model(**{k: v.to(device) for k, v in pair.items()}, **router_logits)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()  # window tokens (a span-corrupted pair holds each of them once)
        row = {"step": step + 1, "tokens": tokens, "lr": round(lr_at(step, cfg), 6),
               "train_loss": round(out_.loss.item(), 4), "val_loss": None,
               "seconds": round(before + time.perf_counter() - t0, 1)}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row["val_loss"] = round(mean_loss(model, val_ids, cfg.seq_len, cfg.batch_size, cfg.eval_windows, pairs), 4)
            bar.set_postfix(val_loss=row["val_loss"])
        log.append(row)
        if state is not None and ((step + 1) % save_every == 0 or step + 1 == cfg.steps):
            checkpointing.save_state(state, model, opt, {"step": step + 1, "config": asdict(cfg), "log": log,
                                                         "seconds": before + time.perf_counter() - t0,
                                                         "torch": torch.__version__})
    result = {"config": asdict(cfg), "log": log, "seconds": before + time.perf_counter() - t0,
              "tokens": tokens, "params": models.count_params(model),
              "flops_per_token": flops_per_token(model), "model": model.eval()}
    result["train_flops"] = result["flops_per_token"] * tokens
    if out is not None:
        save(result, tokenizer, out)
    return result


def resumable(cfg: PretrainConfig, state: Path | None, resume: bool, overwrite: bool) -> dict | None:
    """The meta of the state to resume (None: start afresh), or why not, before anything is built."""
    if resume and state is None:
        raise ValueError("resume=True needs the state_dir of the run to continue")
    found = state is not None and checkpointing.state_file(state).exists()
    if not resume:
        if found and not overwrite:
            meta = checkpointing.read_meta(state)
            raise FileExistsError(f"state_dir={state} holds the state of an earlier run (step {meta['step']} of "
                                  f"{meta['config']['steps']}); pass resume=True (--resume) to continue it, "
                                  "or overwrite=True (--overwrite) to start over")
        if found:
            checkpointing.state_file(state).unlink()  # a fresh run: its first save must not follow an old one
        return None
    if not found:
        raise FileNotFoundError(f"resume=True: no training state to resume in state_dir={state}")
    meta = checkpointing.read_meta(state)
    differ = checkpointing.changed_fields(meta["config"], asdict(cfg), free=("steps",))
    if differ:
        raise ValueError(f"cannot resume the run saved in {state}: its config differs in "
                         + ", ".join(f"{k} (saved {meta['config'].get(k)!r}, now {getattr(cfg, k, None)!r})"
                                     for k in differ) + "; only steps may change (raised, to train longer)")
    if cfg.steps < meta["step"]:
        raise ValueError(f"steps={cfg.steps}: the run saved in {state} has already taken {meta['step']} steps")
    return meta


def _tokenizer():
    from transformers import AutoTokenizer

    from ..data.tokenizer import TOKENIZER_DIR

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def save(result: dict, tokenizer, out: Path) -> None:
    """Checkpoint (safetensors, in the config's ``dtype``, as the Hub stores the family: fp16 for
    tiny-opt, bf16 for tiny-moe and tiny-switch) + tokenizer + recipe (config, log, loss curve) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model = result["model"]
    stored = models.TINY_CONFIGS[result["config"]["model_name"]].get("dtype", "float32")
    model.to(getattr(torch, stored)).save_pretrained(out, safe_serialization=True)
    model.float()
    tokenizer.save_pretrained(out)
    meta = {k: v for k, v in result.items() if k not in ("model", "log")}
    meta["torch"] = torch.__version__
    atomic_write_text(out / "pretrain.json", json.dumps(meta, indent=1) + "\n")
    with open(out / "train_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["log"][0]))
        w.writeheader()
        w.writerows(result["log"])
    plot_loss(result["log"], out / "loss_curve.png", title=result["config"]["model_name"])


def read_log(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: (float(v) if v not in ("", "None") else None) for k, v in r.items()}
                for r in csv.DictReader(f)]


def plot_loss(log: list[dict], path: Path | None = None, title: str = "", ax=None):
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in log], [r["train_loss"] for r in log], lw=0.8, label=f"{title} train")
    ev = [r for r in log if r["val_loss"] is not None]
    ax.plot([r["step"] for r in ev], [r["val_loss"] for r in ev], "o-", label=f"{title} validation")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=f"pretraining {title}")
    ax.legend()
    if own and path is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return ax

