"""Real models' shapes with random weights: for measuring speed, which depends on the shapes and
the bytes, never on the weights' values.

Decoding at batch 1 is memory-bound only once the weights are far larger than the caches; the
shipped tiny models (17 MB) are not. These configs are OPT-125M's, OPT-350M's and OPT-1.3B's
(Zhang et al. 2022, Table 1; the ``facebook/opt-*`` configs on the Hub), built locally, so no
download is needed: a timing taken on them holds for the trained checkpoints of the same shape.
Their perplexity is meaningless -- never evaluate them.
"""
from __future__ import annotations

import torch

from ..core.checks import choice

SHAPES = {
    "opt-125m": dict(model_type="opt", vocab_size=50272, hidden_size=768, word_embed_proj_dim=768,
                     num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072, max_position_embeddings=2048,
                     do_layer_norm_before=True, pad_token_id=1, bos_token_id=2, eos_token_id=2),
    "opt-350m": dict(model_type="opt", vocab_size=50272, hidden_size=1024, word_embed_proj_dim=512,
                     num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096, max_position_embeddings=2048,
                     do_layer_norm_before=False, pad_token_id=1, bos_token_id=2, eos_token_id=2),
    "opt-1.3b": dict(model_type="opt", vocab_size=50272, hidden_size=2048, word_embed_proj_dim=2048,
                     num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192, max_position_embeddings=2048,
                     do_layer_norm_before=True, pad_token_id=1, bos_token_id=2, eos_token_id=2),
}


def shape_only(name: str, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """``name``'s architecture (a key of ``SHAPES``) with random weights, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    choice("shape", name, SHAPES)
    cfg = dict(SHAPES[name])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device).eval()
