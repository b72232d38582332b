"""T5's span corruption: the objective Switch Transformers are trained and evaluated on.

Raffel et al. 2020 (section 3.1.4) hide ``noise`` (15%) of a window's tokens in spans of mean
length ``mean_span`` (3); each span becomes one sentinel in the encoder's input, and the
decoder's target lists every sentinel followed by the tokens it hides::

    window  : Thou art more lovely and more temperate
    input   : Thou art <extra_id_0> and more <extra_id_1> </s>
    target  : <extra_id_0> more lovely <extra_id_1> temperate </s>

This is ``t5.data.preprocessors.span_corruption`` (google-research/text-to-text-transfer-
transformer), rewritten in torch:

* ``noise_mask`` is its ``random_spans_noise_mask``: of a window of L tokens, n = round(L noise)
  (kept in [1, L - 1]) are noise, in s = max(1, round(n / mean_span)) spans; the noise tokens and
  the L - n others are each cut into s non-empty segments, every such cut equally likely, and
  the spans alternate starting with non-noise -- so the window's first token is never hidden
  and its last token always is;
* the input is its ``noise_span_to_unique_sentinel``: each noise span becomes one sentinel;
  the target is ``nonnoise_span_to_unique_sentinel``: each *non-noise* span becomes one sentinel
  and the noise tokens stay. Both then get EOS (``random_spans_helper`` counts "one EOS token"
  in each length: T5's output features append it).

The target does **not** end with a closing sentinel: there are as many non-noise spans as noise
spans and the last span is noise, so the target ends with the last hidden span and EOS. (The
docstring of ``noise_span_to_unique_sentinel``, "We hold X to be Y that" -> "X these truths Y
self evident Z", has a closing Z only because its example ends on non-noise text, which
``random_spans_noise_mask`` never draws. QMoE's reference data code -- ``mlm`` in
IST-DASLab/qmoe ``datautils.py`` -- instead ends the decoder with one more sentinel and no EOS.)

Sentinels are T5's ``<extra_id_0>``, ``<extra_id_1>``, ... whose ids count *down* from the
first one (google/switch-base-8: 32099, 32098, ...); ``with_sentinels`` gives our byte-level
tokenizer the same 100. n and s depend only on L, so every window of L tokens gives an input of
L - n + s + 1 and a target of n + s + 1 tokens (``pair_lengths``): windows batch without
padding. The one transform serves pretraining (``models.pretraining``), QMoE's calibration
(``compress.qmoe.algorithm.calibration_pairs``) and the evaluation loss (``core.perplexity.mean_loss``,
given ``objective``); ``sentinel_mask`` marks the sentinels.
"""
from __future__ import annotations

import functools

import torch

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


def span_counts(L: int, noise: float = 0.15, mean_span: float = 3.0) -> tuple[int, int]:
    """(n, s): noise tokens and noise spans of a window of L tokens, as ``random_spans_noise_mask``
    counts them (Python's round, like tf.round, rounds halves to even)."""
    if L < 2:
        raise ValueError(f"a window of L={L} tokens cannot be span-corrupted; use at least 2")
    if not 0 < noise < 1 or mean_span < 1:
        raise ValueError(f"noise={noise!r} must be in (0, 1) and mean_span={mean_span!r} at least 1")
    n = min(max(round(L * noise), 1), L - 1)
    s = max(1, round(n / mean_span))
    if s > L - n or s > SENTINELS:
        raise ValueError(f"a window of L={L} tokens at noise={noise} needs {s} spans: more than its {L - n} "
                         f"other tokens or T5's {SENTINELS} sentinels; use shorter windows or less noise")
    return n, s


def pair_lengths(L: int, noise: float = 0.15, mean_span: float = 3.0) -> tuple[int, int]:
    """Lengths of (input, target) of every window of L tokens: L - n + s + 1 and n + s + 1."""
    n, s = span_counts(L, noise, mean_span)
    return L - n + s + 1, n + s + 1


def segments(n: int, s: int, generator: torch.Generator) -> torch.Tensor:
    """n items cut into s non-empty segments, every cut equally likely: their lengths (s,)."""
    cuts = torch.randperm(n - 1, generator=generator)[: s - 1].sort().values + 1  # (s - 1,) starts of segments 2..s
    return torch.cat([torch.tensor([0]), cuts, torch.tensor([n])]).diff()


def noise_mask(L: int, noise: float = 0.15, mean_span: float = 3.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """T5's ``random_spans_noise_mask``: (L,) bool, True = hidden; s spans of noise between s of
    non-noise, starting with non-noise (``span_counts``)."""
    n, s = span_counts(L, noise, mean_span)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    hidden, kept = segments(n, s, g), segments(L - n, s, g)      # (s,), (s,)
    lengths = torch.stack([kept, hidden], dim=1).reshape(-1)     # (2s,): kept, hidden, kept, ...
    return torch.tensor([False, True]).repeat(s).repeat_interleave(lengths)  # (L,)


def hidden_mask(L: int, seed: int, noise: float = 0.15, mean_span: float = 3.0) -> torch.Tensor:
    """(L,) bool: the tokens ``span_corruption`` hides in a window of L tokens drawn with ``seed``
    (window i of ``span_pairs`` uses seed + i), so a baseline can score the very same tokens."""
    return noise_mask(L, noise, mean_span, torch.Generator().manual_seed(seed))


def spans_to_sentinels(ids: torch.Tensor, mask: torch.Tensor, first_sentinel: int) -> torch.Tensor:
    """T5's ``noise_span_to_unique_sentinel``: every run of True in ``mask`` becomes one sentinel
    (``first_sentinel``, one less, ...), the other tokens stay."""
    before = torch.cat([mask.new_zeros(1), mask[:-1]])          # (L,) the previous token is masked
    first, rest = mask & ~before, mask & before
    sentinel = first_sentinel + 1 - first.long().cumsum(0)       # (L,)
    return torch.where(first, sentinel, ids)[~rest]


def span_corruption(ids: torch.Tensor, first_sentinel: int, *, eos: int, noise: float = 0.15,
                    mean_span: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target) of one window ``ids`` (L,): T5's span corruption, the spans drawn from
    ``torch.Generator().manual_seed(seed)``; input: the window with each hidden span replaced by a
    sentinel, then ``eos``; target: each sentinel followed by the tokens it hides, then ``eos``."""
    hidden = hidden_mask(ids.numel(), seed, noise, mean_span)  # (L,)
    end = torch.tensor([eos], dtype=ids.dtype)
    return (torch.cat([spans_to_sentinels(ids, hidden, first_sentinel), end]),   # (L - n + s + 1,)
            torch.cat([spans_to_sentinels(ids, ~hidden, first_sentinel), end]))  # (n + s + 1,)


def span_pairs(windows: torch.Tensor, first_sentinel: int, *, eos: int, seed: int = 0, noise: float = 0.15,
               mean_span: float = 3.0) -> dict:
    """Span-corrupted pairs of a batch of windows (b, L): ``input_ids`` (b, L - n + s + 1) and
    ``labels`` (b, n + s + 1); window i draws its spans with seed ``seed + i``."""
    pairs = [span_corruption(w, first_sentinel, eos=eos, noise=noise, mean_span=mean_span, seed=seed + i)
             for i, w in enumerate(windows)]
    return {"input_ids": torch.stack([p[0] for p in pairs]), "labels": torch.stack([p[1] for p in pairs])}


def objective(config, sentinel: int | None = None, noise: float = 0.15, mean_span: float = 3.0):
    """``span_pairs`` for the encoder-decoder of ``config``: its ``eos_token_id``, and ``sentinel``
    the id of <extra_id_0> (default: the last id of the vocabulary, where T5 puts it). Called as
    ``pairs(windows, seed=i)``; what ``core.perplexity.mean_loss`` takes as ``pairs``."""
    if getattr(config, "eos_token_id", None) is None:
        raise ValueError(f"{type(config).__name__} has no eos_token_id: span corruption ends input and target with EOS")
    first = config.vocab_size - 1 if sentinel is None else sentinel
    return functools.partial(span_pairs, first_sentinel=first, eos=config.eos_token_id, noise=noise,
                             mean_span=mean_span)
