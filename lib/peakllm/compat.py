"""Every workaround for an upstream library, in one place, with the version that needs it.

Each entry says what it works around and from which version on; when the upstream fix lands,
the entry (and only it) goes. Nothing else in peakllm reaches into a private attribute or
silences another library.

=====================================  =========================  ===============================
workaround                             needed by                  used in
=====================================  =========================  ===============================
``quiet_tqdm_notice``                  tqdm without ipywidgets    import of peakllm
``silence_bitsandbytes``               bitsandbytes 0.45-0.50     int8 loading (models)      
``keep_bnb_cpu_layout``                bitsandbytes 0.50 (CPU)    QLoRA (train.recipes)
``compile_config``                     transformers 5.x           static-cache decoding
``quiet_peft_checkpointing_notice``    peft 0.21                  QLoRA (train.recipes)
``fsdp_collectives``                   torch 2.6-2.13 (FSDP2)     train.distributed
=====================================  =========================  ===============================
"""
from __future__ import annotations

import logging
import warnings


def quiet_tqdm_notice() -> None:
    """tqdm.auto without ipywidgets warns "IProgress not found" (naming a file of this machine)
    and falls back to text bars, which is what we want."""
    warnings.filterwarnings("ignore", message="IProgress not found")


def quiet_bnb_kernels_notice() -> None:
    """bitsandbytes 0.50 on a CPU with AVX512-bf16 logs, at import, that it found no
    ``kernels`` package for its optional 4-bit CPU kernel; it then uses its own. Nothing to act on."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def silence_bitsandbytes() -> None:
    """bitsandbytes (0.45-0.50) logs one line per LLM.int8() matmul with fp32 inputs on a CPU
    ("inputs will be cast ... to float16"): thousands of lines per evaluation. Silenced for the
    process when an int8 model is loaded (cells that use it know nothing of bitsandbytes)."""
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


def keep_bnb_cpu_layout(model) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for its AVX512-bf16 CPU inference kernel at the
    first eval forward; its training path then fails on the repacked layout. Keep one layout."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False


def compile_config(device_type: str):
    """transformers 5.x ``generate`` compiles the static-cache step on CUDA only unless the
    private ``_compile_all_devices`` is set; public API has no switch for it yet."""
    from transformers import CompileConfig

    cc = CompileConfig(mode="reduce-overhead" if device_type == "cuda" else "default")
    cc._compile_all_devices = True
    return cc


def quiet_peft_checkpointing_notice() -> None:
    """peft 0.21 still calls transformers' old gradient-checkpointing names, which warn of their
    deprecation at every QLoRA preparation; the fix is peft's."""
    warnings.filterwarnings("ignore", message=r".*`(is_)?gradient_checkpointing(_enable)?` is deprecated")


def fsdp_collectives():
    """FSDP2's default all-gather and reduce-scatter (torch 2.6-2.13 keep them in a private
    module; the public hooks ``set_custom_all_gather`` / ``set_custom_reduce_scatter`` take
    subclasses of them)."""
    from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter

    return DefaultAllGather, DefaultReduceScatter
