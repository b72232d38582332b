"""Exact memory accounting of training: where the bytes go (the ZeRO paper's "model states"
plus activations; Rajbhandari et al. 2020, section 3).

Training memory has four parts:

* weights      -- the parameters (and buffers) themselves;
* gradients    -- one tensor per trainable parameter after ``backward()``;
* optimizer    -- the optimizer's state (AdamW: two moments, 8 bytes per fp32 parameter);
* activations  -- tensors autograd saves in the forward pass for the backward pass.

The first three are counted from the tensors themselves; activations are counted with
``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd saves. Each
storage is counted once (views share storage) and storages of parameters are left out (a
weight saved for backward is not a new allocation). These counts are exact and identical on
every device; CUDA's allocator peak and the process's peak RSS are reported beside them.
"""
from __future__ import annotations

import sys

import torch

from .units import human, nbytes  # noqa: F401  (human: re-exported for readers of memory figures)

PARTS = ("weights", "gradients", "optimizer", "activations")


def _attached(obj, depth: int = 0):
    """Tensors hanging off a quantized weight: bitsandbytes' ``quant_state`` (absmax, code,
    the nested ``state2`` of double quantization) and LLM.int8()'s row scales ``SCB``."""
    if torch.is_tensor(obj):
        yield obj
    elif depth < 3 and obj is not None and hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            yield from _attached(v, depth + 1)


def stored(p: torch.Tensor) -> list[torch.Tensor]:
    """A parameter as stored: itself plus bitsandbytes' constants kept beside it."""
    return [p] + [t for attr in ("quant_state", "SCB") for t in _attached(getattr(p, attr, None))]


def represented(p: torch.Tensor) -> int:
    """Weights a parameter stands for (a packed 4-bit tensor holds two per byte)."""
    state = getattr(p, "quant_state", None)
    return state.shape.numel() if state is not None else p.numel()


def weight_bytes(model: torch.nn.Module) -> int:
    """Parameters and buffers, each storage once (tied weights count once), plus the
    quantization state of bitsandbytes weights (4-bit: per-block absmax; int8: row scales)."""
    seen, total = set(), 0
    tensors = [t for p in model.parameters() for t in stored(p)] + list(model.buffers())
    for m in model.modules():  # LLM.int8() moves the row scales to the layer's state at first use
        scb = getattr(getattr(m, "state", None), "SCB", None)
        tensors += [scb] if torch.is_tensor(scb) else []
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def linear_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes, parameters) of the linear layers' weight matrices, quantization state included
    (adapters and the LM head left out): the storage cost per weight of a quantized model."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    n_bytes = n_params = 0
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear) or "lora_" in name or m is head:
            continue
        w = m.weight
        n_params += represented(w)
        parts = stored(w)
        scb = getattr(getattr(m, "state", None), "SCB", None)
        parts += [scb] if torch.is_tensor(scb) and getattr(w, "SCB", None) is not scb else []
        n_bytes += sum(nbytes(t) for t in parts)
    return n_bytes, n_params


def gradient_bytes(model: torch.nn.Module) -> int:
    return sum(nbytes(p.grad) for p in model.parameters() if p.grad is not None)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Every tensor in the optimizer's per-parameter state (moments, quantization scales...)."""
    total = 0
    for state in optimizer.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                total += nbytes(v)
            elif hasattr(v, "__dict__"):  # e.g. bitsandbytes quantization state objects
                total += sum(nbytes(x) for x in vars(v).values() if torch.is_tensor(x))
    return total


class SavedActivations:
    """Context manager: bytes of the tensors autograd saves for backward inside it.

    >>> with SavedActivations(model) as saved:
    ...     loss = model(x).loss
    >>> saved.bytes

    Gradient checkpointing (Chen et al. 2016) saves nothing inside a checkpointed layer; it
    keeps the layer's inputs and recomputes the rest in the backward pass. Those inputs are
    held by the checkpoint, not by autograd's saved-tensor mechanism, so they are counted here
    by a pre-forward hook on every layer that has ``gradient_checkpointing`` switched on.
    """

    def __init__(self, model: torch.nn.Module | None = None):
        self.model = model
        self.exclude = set()
        if model is not None:
            self.exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}

    def _pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        key = s.data_ptr()
        if key not in self.exclude and key != 0:
            self.storages[key] = max(self.storages.get(key, 0), s.nbytes())
        return t

    def _checkpoint_inputs(self, module, args, kwargs):
        if module.training and torch.is_grad_enabled():
            for t in list(args) + list(kwargs.values()):
                if torch.is_tensor(t) and t.is_floating_point():
                    self._pack(t)

    def __enter__(self):
        self._handles = [m.register_forward_pre_hook(self._checkpoint_inputs, with_kwargs=True)
                         for m in (self.model.modules() if self.model is not None else [])
                         if getattr(m, "gradient_checkpointing", False) is True]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux: KiB; macOS: bytes;
    Windows, which has no ``resource`` module: psutil's peak working set)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))  # peak_wset: Windows' peak working set
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_peak(device) -> dict:
    """What the system saw: CUDA allocator peak on a GPU, process peak RSS on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return {"cuda_peak": torch.cuda.max_memory_allocated(dev)}
    return {"peak_rss": peak_rss()}


def optimizer_step(loss, optimizer, scaler=None, max_grad_norm: float = 0.0) -> None:
    """Backward and step; through the GradScaler when fp16 needs loss scaling; the gradients
    clipped to a global norm of ``max_grad_norm`` first when it is positive (QLoRA: 0.3)."""
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if max_grad_norm > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def training_step_anatomy(model, optimizer, batch: dict, loss_fn=None, autocast=None,
                          scaler=None, max_grad_norm: float = 0.0) -> dict:
    """Run one training step and count each part's bytes at its high point.

    Activations are counted during the forward pass (all saved tensors are alive then);
    gradients and optimizer state after ``optimizer.step()``. ``autocast``: a context manager
    for the forward pass (mixed precision); ``scaler``: a ``torch.amp.GradScaler`` (fp16).
    """
    from contextlib import nullcontext

    model.train()
    reset_peak(next(model.parameters()).device)
    with SavedActivations(model) as saved, (autocast or nullcontext()):
        out = model(**batch)
        loss = out.loss if loss_fn is None else loss_fn(out, batch)
    optimizer_step(loss, optimizer, scaler, max_grad_norm)
    parts = {"weights": weight_bytes(model), "gradients": gradient_bytes(model),
             "optimizer": optimizer_bytes(optimizer), "activations": saved.bytes}
    optimizer.zero_grad(set_to_none=True)
    parts["total"] = sum(parts[p] for p in PARTS)
    parts["loss"] = loss.item()
    parts |= device_peak(next(model.parameters()).device)
    return parts


def plot_anatomy(anatomies: dict, ax=None, title: str = "training memory by part"):
    """Stacked bars, one per setting: ``{label: {"weights": bytes, ...}}`` in MiB."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.2 * len(anatomies), 3.5))
    labels, bottom = list(anatomies), [0.0] * len(anatomies)
    for part in PARTS:
        vals = [anatomies[k].get(part, 0) / 2**20 for k in labels]
        ax.bar(labels, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(ylabel="MiB", title=title)
    ax.legend(fontsize=8)
    return ax
