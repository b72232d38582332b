"""The one reader of mixture-of-experts configs (peakllm.models.moe)."""
import types

import pytest

from peakllm.models import moe


@pytest.mark.parametrize("cfg, expected", [
    (dict(num_local_experts=8, num_experts_per_tok=2), (8, 2)),   # Mixtral
    (dict(num_experts=8), (8, 1)),                                # SwitchTransformers: top-1
    (dict(n_routed_experts=64, top_k=6), (64, 6)),               # DeepSeek-style
])
def test_one_reader_of_moe_configs(cfg, expected):
    c = types.SimpleNamespace(**cfg)
    assert moe.is_moe(c) and moe.routing(c) == expected and moe.experts_per_layer(c) == expected[0]


def test_a_dense_config_has_no_experts():
    c = types.SimpleNamespace(hidden_size=4)
    assert not moe.is_moe(c) and moe.experts_per_layer(c) == 0
    with pytest.raises(ValueError, match="not a mixture-of-experts model"):
        moe.routing(c)

