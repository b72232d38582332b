"""T5's span corruption: the objective Switch Transformers are trained and evaluated on.

Raffel et al. 2020 (section 3.1.4) hide ``noise`` (15%) of a window's tokens in spans of
``mean_span`` (3) tokens; each span becomes one sentinel in the encoder's input, and the
decoder's target lists every sentinel followed by the tokens it hides::

    window  : Thou art more lovely and more temperate
    input   : Thou art <extra_id_0> and more temperate
    target  : <extra_id_0> more lovely

Sentinels are T5's ``<extra_id_0>``, ``<extra_id_1>``, ... whose ids count *down* from the
first one (google/switch-base-8: 32099, 32098, ...); ``with_sentinels`` gives our byte-level
tokenizer the same 100. Here the spans have exactly ``mean_span`` tokens and start on multiples
of it (T5 draws span lengths at random), so every window of ``T`` tokens gives an input of
``T - n (mean_span - 1)`` and a target of ``n (mean_span + 1)`` tokens, n = round(T noise /
mean_span): windows batch without padding. QMoE (section 6) calibrates and evaluates on such
pairs; ``sentinel_mask`` marks the sentinels, which it keeps out of the Hessians.
"""
from __future__ import annotations

import torch

from ..core.perplexity import span_corruption, span_pairs  # noqa: F401  (the objective is measured in the core)

SENTINELS = 100  # T5's <extra_id_0> .. <extra_id_99>


def with_sentinels(tokenizer, n: int = SENTINELS):
    """``tokenizer`` with T5's sentinels appended as special tokens, <extra_id_0> the last id."""
    tokenizer.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(n - 1, -1, -1)]},
                                 replace_extra_special_tokens=False)
    return tokenizer


def first_sentinel(tokenizer) -> int | None:
    """The id of ``<extra_id_0>``, if the tokenizer has T5's sentinels."""
    return tokenizer.get_vocab().get("<extra_id_0>")


def sentinel_mask(ids: torch.Tensor, first_sentinel: int, n: int = SENTINELS) -> torch.Tensor:
    """True where ``ids`` holds one of the ``n`` sentinels (ids first_sentinel - n + 1 .. first_sentinel)."""
    return (ids <= first_sentinel) & (ids > first_sentinel - n)
