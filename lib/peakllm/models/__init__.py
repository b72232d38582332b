"""Models: one loader (shipped short names, local directories, Hub ids), the recipe that
pretrained the shipped tiny models, the one reader of mixture-of-experts configs, and what a
model is made of (``structure``: stacks, linear layers, experts).

``peakllm.models.load(...)`` and the other loading names are re-exported from ``loading``.
"""
from . import moe, structure  # noqa: F401
from .loading import (  # noqa: F401
                      DTYPES,
                      LOAD_DTYPES,
                      MODELS,
                      QUANTIZATIONS,
                      SHORT_NAMES,
                      TINY_CONFIGS,
                      HubUnavailable,
                      bnb_config,
                      context_length,
                      count_params,
                      hub_reachable,
                      load,
                      load_model,
                      load_tokenizer,
                      new_tiny,
                      require_bitsandbytes,
                      resolve,
)
