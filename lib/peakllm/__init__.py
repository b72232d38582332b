"""peakllm: an executable workbook on making large language models cheaper to train and run.

It reproduces the two case studies of "Achieving Peak Performance for Large Language Models"
(Rostam et al. 2024). The layout follows the architecture:

==============  ===========================================================================
subpackage      role
==============  ===========================================================================
``core``        measuring: paths, checks, units, hardware, timing, roofline, memory,
                records, reference numbers, perplexity
``data``        the shipped corpus, tokenizer, evaluation/calibration sets, random windows
``models``      one loader (short names, local directories, Hub ids), the tiny architectures,
                bitsandbytes configs, pretraining, MoE config, what a model is made of
``compress``    one OBS column sweep serving GPTQ, SparseGPT and QMoE; the sequential driver;
                baselines, formats, ternary coding
``train``       efficient fine-tuning recipes; DDP and FSDP under torchrun
``infer``       decoding: KV cache, batching, static cache, roofline
``workbook``    what notebooks import at run time: the scaffold (setup, records, finish),
                paper-vs-ours tables, plots and diagrams, labs, lessons, readers of
                committed results
``cli``         the tooling behind ``python -m peakllm``: one module per command (run the
                workbook, sweeps, the book, student copies, grading, pretraining, the GPU
                check, the cross-check's protocol)
==============  ===========================================================================

The public API, importable from the top (loaded on first use, so ``import peakllm`` is cheap):

* ``peakllm.seed_everything(seed)``
* ``peakllm.load(model_name, device)`` -> (model, tokenizer)
* ``peakllm.prune(model, calib, method, sparsity, pattern, ...)``     (SparseGPT, Wanda, magnitude)
* ``peakllm.quantize(model, calib, method, bits, ...)``               (GPTQ, RTN)
* ``peakllm.qmoe_compress(model, calib, bits, method, ...)``          (QMoE on the experts)
* ``peakllm.perplexity(model, ids, seqlen)``
* ``peakllm.setup(...)`` / ``peakllm.finish(...)``                  (a notebook's first and last call)
* ``peakllm.show_source(obj)``                                      (library code, highlighted)
* ``peakllm.say(markdown)``                                         (prose quoting this run's figures)
* ``peakllm.show_doc(obj)``                                         (a docstring, rendered as Markdown)
* the subpackages, e.g. ``from peakllm.compress import sparsegpt``.
"""
from __future__ import annotations

import importlib

from .compat import quiet_bnb_kernels_notice, quiet_tqdm_notice

__version__ = "0.1.0"

quiet_tqdm_notice()
quiet_bnb_kernels_notice()

SUBPACKAGES = ("core", "data", "models", "compress", "train", "infer", "workbook", "cli", "compat")
_API = {"load": "peakllm.models.loading", "prune": "peakllm.compress.pruning",
        "quantize": "peakllm.compress.gptq", "qmoe_compress": "peakllm.compress.qmoe.algorithm",
        "perplexity": "peakllm.core.perplexity", "setup": "peakllm.workbook.notebook",
        "finish": "peakllm.workbook.notebook", "show_source": "peakllm.workbook.notebook",
        "say": "peakllm.workbook.notebook", "show_doc": "peakllm.workbook.notebook"}
_NAMES = {"quantize": "quantize_model", "qmoe_compress": "compress"}

__all__ = ["seed_everything", *SUBPACKAGES, *_API]


def seed_everything(seed: int = 0) -> None:
    """Python, NumPy and torch generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def __getattr__(name: str):
    if name in SUBPACKAGES:
        return importlib.import_module(f"peakllm.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), _NAMES.get(name, name))
    raise AttributeError(f"module 'peakllm' has no attribute {name!r}")
