"""Models: one loader (shipped short names, local directories, Hub ids; ``loading``), the shipped
tiny architectures (``tiny``), bitsandbytes configs (``bnb``), the recipe that pretrained the tiny
models (``pretraining``), the one reader of mixture-of-experts configs (``moe``), and what a model
is made of (``structure``: stacks, linear layers, experts).

``peakllm.models.load(...)`` and the other names below are re-exported from those modules.
"""
from ..core.hub import HubUnavailable, hub_reachable  # noqa: F401
from . import moe, structure  # noqa: F401
from .bnb import QUANTIZATIONS, bnb_config, require_bitsandbytes  # noqa: F401
from .loading import (  # noqa: F401
    DTYPES,
    LOAD_DTYPES,
    MODELS,
    SHORT_NAMES,
    context_length,
    count_params,
    load,
    load_model,
    load_tokenizer,
    resolve,
)
from .tiny import TINY_CONFIGS, new_tiny  # noqa: F401
