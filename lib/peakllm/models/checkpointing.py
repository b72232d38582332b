"""A training run's state, so that an interrupted run continues where it stopped.

One file, ``STATE_FILE`` in a state folder, holds everything a run needs to go on exactly as if it
had not stopped: the weights in fp32 (the trained ones, not the stored checkpoint's dtype), the
optimizer's per-parameter state (AdamW's step count and both moments, flattened to named tensors)
and its parameter groups (JSON in the file's metadata), the global RNG states (Switch's router
jitter draws from them), and the caller's ``meta`` (JSON: the step, the config, the log so far).
It is a safetensors file -- no pickle -- written under a temporary name and then renamed, so a
kill during the write leaves the previous state whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

STATE_FILE = "state.safetensors"
FORMAT = 1


def state_file(state_dir: str | Path) -> Path:
    return Path(state_dir) / STATE_FILE


def weights(model) -> dict[str, torch.Tensor]:
    """Parameters (each tied tensor once, under its first name) and buffers, by name."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def save_state(state_dir: str | Path, model, opt: torch.optim.Optimizer, meta: dict) -> Path:
    """Write ``state_dir/STATE_FILE`` atomically; ``meta`` must be JSON-serializable."""
    tensors = {f"model.{n}": t.detach().cpu().contiguous() for n, t in weights(model).items()}
    sd = opt.state_dict()
    scalars = {}  # per-parameter entries that are not tensors (none for torch's AdamW)
    for idx, entry in sd["state"].items():
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    metadata = {"format": str(FORMAT), "meta": json.dumps(meta),
                "param_groups": json.dumps(sd["param_groups"]), "optimizer_scalars": json.dumps(scalars)}
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before it replaces the previous state
        os.replace(tmp, path)
    except BaseException:  # a failed or interrupted write: the previous state stays, no half file
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_meta(state_dir: str | Path) -> dict:
    """The ``meta`` a state was saved with (step, config, log ...), without reading its tensors."""
    with safe_open(state_file(state_dir), "pt") as f:
        metadata = f.metadata()
    if metadata.get("format") != str(FORMAT):
        raise ValueError(f"{state_file(state_dir)}: state format {metadata.get('format')!r}, expected {FORMAT}")
    return json.loads(metadata["meta"])


def load_state(state_dir: str | Path, model, opt: torch.optim.Optimizer) -> dict:
    """Restore the weights, the optimizer and the RNG states saved in ``state_dir``; return its meta.
    ``model`` and ``opt`` must be built as the saved run built them (same names, same groups)."""
    path, meta = state_file(state_dir), read_meta(state_dir)
    with safe_open(path, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    own = weights(model)
    saved = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    if saved.keys() != own.keys():
        raise ValueError(f"{path}: the saved weights do not fit this model (missing "
                         f"{sorted(own.keys() - saved.keys())[:3]}, unexpected {sorted(saved.keys() - own.keys())[:3]})")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(saved[name])
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, entry in json.loads(metadata["optimizer_scalars"]).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = json.loads(metadata["param_groups"])
    for g in groups:
        if isinstance(g.get("betas"), list):  # JSON made the tuple a list
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def changed_fields(saved: dict, now: dict, free=()) -> list[str]:
    """The fields of two configs (dicts) that differ, leaving out those in ``free``."""
    return sorted(k for k in saved.keys() | now.keys() if k not in free and saved.get(k) != now.get(k))
