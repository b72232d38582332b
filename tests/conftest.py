import pytest
import torch


@pytest.fixture
def tiny_random_opt():
    """A 2-layer OPT with random weights, built from a config (no file, no Hub)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=64, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=2,
                    num_attention_heads=2, ffn_dim=32, max_position_embeddings=32)
    return OPTForCausalLM(cfg).eval()
