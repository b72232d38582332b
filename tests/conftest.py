"""Fixtures shared by the unit tests: one family of tiny random models, and the helpers around them.

Test modules take these as fixtures; no test module imports another.

``tiny_model(family, **overrides)`` builds a 2-layer model with random weights from a config (no
file, no Hub), seeded with ``torch.manual_seed(0)`` right before it is built, so equal calls give
equal weights. Families: "opt", "llama", "mixtral" (grouped-query attention: 4 query, 2 key/value
heads; 4 experts, top-2), "bert", "t5", "switch" (4 experts per MLP, in encoder and decoder).

Two presets:

* ``preset="base"`` (default): OPT is 16 wide (ffn 32, context 32) -- the ``tiny_random_opt`` that
  byte-count formulas are checked against; llama / mixtral are 32 wide (MLP 48, context 64).
* ``preset="compress"``: the shapes the pruning / quantization tests (SparseGPT, GPTQ, QMoE) were
  written for -- OPT 32 wide (ffn 64), llama with a 64-wide MLP, llama / mixtral with a context of
  32. Their reconstruction-error comparisons run on exactly those weights. bert, t5 and switch have
  one configuration, the same in both presets.

Keyword overrides go to the config (``tie_word_embeddings=False``, ``hidden_size=128``, ...).
Models come back in eval mode; ``train=True`` leaves them in training mode.
"""
import pytest
import torch

_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)

# family -> (config class, model class, config keywords), all in transformers
FAMILIES = {
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(vocab_size=64, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=2, num_attention_heads=2,
                 ffn_dim=32, max_position_embeddings=32)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", _LLAMA),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",  # experts as fused 3-D parameters (transformers 5.x)
                dict(_LLAMA, num_local_experts=4, num_experts_per_tok=2)),
    "bert": ("BertConfig", "BertForMaskedLM",
             dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=32)),
    "t5": ("T5Config", "T5ForConditionalGeneration",
           dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)),
    "switch": ("SwitchTransformersConfig", "SwitchTransformersForConditionalGeneration",
               dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    num_experts=4, expert_capacity=64, encoder_sparse_step=1, decoder_sparse_step=1,
                    decoder_start_token_id=0)),
}
PRESETS = {
    "base": {},
    "compress": {"opt": dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64),
                 "llama": dict(intermediate_size=64, max_position_embeddings=32),
                 "mixtral": dict(max_position_embeddings=32)},
}


def make_tiny_model(family: str, *, preset: str = "base", train: bool = False, **overrides):
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; allowed values are {sorted(FAMILIES)}")
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; allowed values are {sorted(PRESETS)}")
    config_cls, model_cls, kw = FAMILIES[family]
    kw = kw | PRESETS[preset].get(family, {}) | overrides
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kw))
    return model.train() if train else model.eval()


def correlated_inputs(n=2048, columns=64, seed=0):
    """Inputs with strongly correlated features and uneven scales, like real activations."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 8, generator=g)
    mix = torch.randn(8, columns, generator=g)
    scale = torch.rand(columns, generator=g) * 3 + 0.1
    return (base @ mix + 0.3 * torch.randn(n, columns, generator=g)) * scale


@pytest.fixture(scope="session")
def tiny_model():
    """The factory ``tiny_model(family, *, preset="base", train=False, **config_overrides)``."""
    return make_tiny_model


@pytest.fixture
def tiny_random_opt(tiny_model):
    """A 2-layer OPT with random weights, 16 wide: ``tiny_model("opt")``."""
    return tiny_model("opt")


@pytest.fixture(scope="session", name="correlated_inputs")
def correlated_inputs_fixture():
    """The function ``correlated_inputs(n=2048, columns=64, seed=0)`` -> (n, columns) float tensor."""
    return correlated_inputs
