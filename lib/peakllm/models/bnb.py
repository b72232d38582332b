"""bitsandbytes for the loader: LLM.int8() (Dettmers et al. 2022) and 4-bit NF4 / FP4 weights
(QLoRA, Dettmers et al. 2023), as ``BitsAndBytesConfig`` for ``models.loading.load_model``, with
one clear error where bitsandbytes is missing or has no kernels for the device.
"""
from __future__ import annotations

import torch

from ..compat import silence_bitsandbytes
from ..core.checks import choice

QUANTIZATIONS = ("none", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq")


def require_bitsandbytes(param: str, value, device) -> None:
    """bitsandbytes installed and able to run on ``device`` (CUDA, or the CPU since 0.49; not
    Apple's MPS); else one error naming the parameter that asked for it."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"{param}={value!r} needs bitsandbytes (pip install bitsandbytes)")
    if torch.device(device).type not in ("cuda", "cpu"):
        raise RuntimeError(f"{param}={value!r}: bitsandbytes has no kernels for "
                           f"device={torch.device(device).type!r}; use cpu or a CUDA GPU")


def bnb_config(quantization: str, device, compute_dtype: torch.dtype = torch.float32):
    """``BitsAndBytesConfig`` for LLM.int8() (Dettmers et al. 2022) or 4-bit NF4 / FP4 weights
    (QLoRA, Dettmers et al. 2023; "-dq": double quantization of the block constants)."""
    choice("quantization", quantization, QUANTIZATIONS)
    if quantization == "none":
        return None
    require_bitsandbytes("quantization", quantization, device)
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        silence_bitsandbytes()  # LLM.int8() says so at every fp32 matmul
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantization[:3],
                              bnb_4bit_use_double_quant=quantization.endswith("-dq"),
                              bnb_4bit_compute_dtype=compute_dtype)
