"""The shipped tiny models' architectures (``TINY_CONFIGS``) and a fresh, untrained copy of one
(``new_tiny``), for pretraining (``models.pretraining``) and the tests. Their trained weights are
in ``data/models`` (``models.loading`` reads them by short name).
"""
from __future__ import annotations

import torch

from ..core.checks import choice

# Architectures of the shipped models (sized for a 2-core CPU: <= 15 MB each, stored in half precision as
# their Hub counterparts are; trained in fp32).
TINY_CONFIGS = {
    "tiny-opt": dict(
        model_type="opt", vocab_size=4096, hidden_size=256, word_embed_proj_dim=256,
        num_hidden_layers=4, num_attention_heads=4, ffn_dim=1024, max_position_embeddings=256,
        do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=1, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
        dtype="float16"),  # stored as facebook/opt-125m is
    "tiny-moe": dict(
        model_type="mixtral", vocab_size=4096, hidden_size=192, intermediate_size=256,
        num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6, num_local_experts=8,
        num_experts_per_tok=2, max_position_embeddings=256, router_aux_loss_coef=0.01,
        tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=0,
        dtype="bfloat16"),  # stored as Mixtral is
    # Switch's layout (an MoE layer every other block, encoder and decoder) at 2 + 2 blocks, 8
    # experts, and Switch's d_ff = 4 x d_model, so that the experts hold most of a block's weights
    # and their rows (d_model = 192 in wi, d_ff = 768 in wo) are as long as the repository allows:
    # QMoE's bits per weight fall with a row's length (more zeros, less row metadata per weight).
    # 7.0 M parameters, 14 MB of bf16, so the repository still travels to a lent GPU machine.
    "tiny-switch": dict(
        model_type="switch_transformers", vocab_size=4096 + 100, d_model=192, d_ff=768, d_kv=64,
        num_heads=3, num_layers=2, num_decoder_layers=2, num_sparse_encoder_layers=1,
        num_sparse_decoder_layers=1, num_experts=8, expert_capacity=64, router_aux_loss_coef=0.01,
        dropout_rate=0.0, tie_word_embeddings=True, pad_token_id=1, eos_token_id=0,
        decoder_start_token_id=1, dtype="bfloat16"),
}


def new_tiny(model_name: str, seed: int = 0):
    """A freshly initialised (untrained) shipped architecture, for pretraining and tests."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    choice("model_name", model_name, TINY_CONFIGS)
    cfg = dict(TINY_CONFIGS[model_name])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return auto.from_config(config, dtype=torch.float32)  # trained in fp32 whatever dtype it is stored in
