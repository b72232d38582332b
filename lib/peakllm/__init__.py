"""peakllm: an executable workbook on making large language models cheaper to train and run.

Each module holds one idea of the review "Achieving Peak Performance for Large Language
Models" (Rostam et al. 2024) and of the papers behind its two case studies:

* ``models``, ``corpus``, ``tokenizer``, ``evaldata`` -- one way to load models and text;
* ``perplexity``, ``memory``, ``timing``, ``device`` -- one way to measure;
* ``records`` -- one way to record; ``pretrain`` -- how the tiny models were made.
"""
__version__ = "0.1.0"

import warnings as _warnings

# Without ipywidgets tqdm.auto falls back to text bars; its warning about that (which names a
# file of this machine) adds nothing for the reader.
_warnings.filterwarnings("ignore", message="IProgress not found")


def seed_everything(seed: int = 0) -> None:
    """Python, NumPy and torch generators; deterministic algorithms where torch has them."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
