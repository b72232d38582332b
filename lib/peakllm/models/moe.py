"""The one reader of a mixture-of-experts config: how many experts, how many per token.

Transformers names the two numbers differently per family (Mixtral: ``num_local_experts`` /
``num_experts_per_tok``; SwitchTransformers: ``num_experts`` and top-1 routing; Qwen-MoE,
DeepSeek: ``num_experts`` / ``n_routed_experts``, ``top_k``). Everything in peakllm that needs
them -- QMoE's token cap, the weights a decoded token reads, the pretraining FLOP count --
asks here.
"""
from __future__ import annotations

EXPERT_COUNT = ("num_local_experts", "num_experts", "n_routed_experts")
EXPERTS_PER_TOKEN = ("num_experts_per_tok", "top_k", "num_selected_experts")


def is_moe(config) -> bool:
    """True when the config names an expert count above one."""
    return any((getattr(config, k, None) or 0) > 1 for k in EXPERT_COUNT)


def routing(config) -> tuple[int, int]:
    """(experts per layer E, experts per token k) from a config (Mixtral-, Switch-, Qwen-style)."""
    E = next((getattr(config, k) for k in EXPERT_COUNT if getattr(config, k, None)), None)
    k = next((getattr(config, a) for a in EXPERTS_PER_TOKEN if getattr(config, a, None)), 1)
    if E is None:
        raise ValueError(f"{type(config).__name__} names no expert count: not a mixture-of-experts model")
    return int(E), int(k)


def experts_per_layer(config) -> int:
    """E for a mixture-of-experts config, 0 for a dense one."""
    return routing(config)[0] if is_moe(config) else 0
