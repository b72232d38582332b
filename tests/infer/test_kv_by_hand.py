"""Notebook 22's KV cache by hand: one attention layer's keys and values of the prefix, the new
token's appended, attention over the concatenation -- equal to transformers' DynamicCache, and
cached decoding equal to uncached decoding."""
import pytest
import torch

from peakllm.infer import decoding


@pytest.fixture(scope="module")
def opt():
    from peakllm.models import load_model, load_tokenizer

    return load_model("tiny-opt", device="cpu", dtype="float32").eval(), load_tokenizer("tiny-opt")


def test_one_layer_kv_cache_by_hand_equals_the_dynamic_cache_and_uncached_decoding(opt):
    model, tok = opt
    ids = decoding.prompt_ids(tok, 1, 12, seed=1)  # (1, T)
    layer, H = model.model.decoder.layers[0], model.config.num_attention_heads
    attn, d_h = layer.self_attn, model.config.hidden_size // H
    with torch.no_grad():
        pre = model(ids, use_cache=True, output_hidden_states=True)
        cache = pre.cache
        assert type(cache).__name__ == "DynamicCache"
        x = layer.self_attn_layer_norm(pre.hidden_states[0])                  # (1, T, d)
        K = attn.k_proj(x).view(1, -1, H, d_h).transpose(1, 2)                # (1, H, T, d_h)
        V = attn.v_proj(x).view(1, -1, H, d_h).transpose(1, 2)
        torch.testing.assert_close(K, cache.layers[0].keys)
        torch.testing.assert_close(V, cache.layers[0].values)
        nxt = pre.logits[:, -1].argmax(-1, keepdim=True)                       # (1, 1)
        step = model(nxt, cache=cache, use_cache=True, output_hidden_states=True)
        x_new = layer.self_attn_layer_norm(step.hidden_states[0])             # (1, 1, d)
        q = (attn.q_proj(x_new) * attn.scaling).view(1, 1, H, d_h).transpose(1, 2)
        K = torch.cat([K, attn.k_proj(x_new).view(1, 1, H, d_h).transpose(1, 2)], dim=2)  # (1, H, T+1, d_h)
        V = torch.cat([V, attn.v_proj(x_new).view(1, 1, H, d_h).transpose(1, 2)], dim=2)
        torch.testing.assert_close(K, cache.layers[0].keys)
        torch.testing.assert_close(V, cache.layers[0].values)
        o = (torch.softmax(q @ K.transpose(-1, -2), dim=-1) @ V).transpose(1, 2).reshape(1, 1, H * d_h)
        h = step.hidden_states[0] + attn.out_proj(o)                           # the rest of layer 0
        h = h + layer.fc2(torch.relu(layer.fc1(layer.final_layer_norm(h))))
        torch.testing.assert_close(h, step.hidden_states[1], atol=1e-4, rtol=1e-4)
        full = model(torch.cat([ids, nxt], dim=1), use_cache=False)
        torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-4, rtol=1e-4)
    assert decoding.cache_bytes(cache) == decoding.kv_cache_bytes(model.config, 1, ids.shape[1] + 1)


def test_kv_cache_bytes_of_opt_125m_at_2048_tokens():
    from transformers import AutoConfig

    from peakllm.models import shapes

    cfg = AutoConfig.for_model(**shapes.SHAPES["opt-125m"])
    L, H, d_h, T = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, 2048
    assert (L, H, d_h) == (12, 12, 64)  # OPT-125M (Zhang et al. 2022, Table 1)
    assert decoding.kv_cache_bytes(cfg, 1, T, "float16") == 2 * L * H * d_h * T * 2 == 75_497_472
