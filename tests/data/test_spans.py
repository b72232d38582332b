"""T5's span corruption (peakllm.data.spans): random spans as t5.data.preprocessors draws them."""
import math

import pytest
import torch

from peakllm.data import spans

FIRST, EOS = 4095, 0  # <extra_id_0> and EOS of these tests; window tokens are 1000.. (none special)


def runs(mask: list[bool]) -> list[tuple[bool, int]]:
    """[(value, length)] of the runs of equal values in ``mask``."""
    out = []
    for m in mask:
        if out and out[-1][0] == m:
            out[-1] = (m, out[-1][1] + 1)
        else:
            out.append((m, 1))
    return out


def decode(window: list[int], x: list[int], y: list[int]) -> list[bool]:
    """Check one (input, target) pair against its window; return the window's noise mask.

    Both end with EOS; the sentinels count down from FIRST, the same ones in both; filling each
    sentinel of the input with the tokens that follow it in the target gives the window back."""
    assert x[-1] == EOS and y[-1] == EOS and EOS not in x[:-1] + y[:-1]
    x_sent, y_sent = [t for t in x if t > FIRST - 100], [t for t in y if t > FIRST - 100]
    assert x_sent == y_sent == list(range(FIRST, FIRST - len(x_sent), -1))
    assert y[0] == FIRST  # the target opens with <extra_id_0>: it lists spans only
    fill, cur = {}, None
    for t in y[:-1]:
        if t in x_sent:
            cur = fill.setdefault(t, [])
        else:
            cur.append(t)
    rebuilt, hidden = [], []
    for t in x[:-1]:
        part = fill[t] if t in fill else [t]
        rebuilt += part
        hidden += [t in fill] * len(part)
    assert rebuilt == window
    assert all(len(v) > 0 for v in fill.values())
    return hidden


def test_span_counts_are_t5s_arithmetic():
    # round(128 * 0.15) = round(19.2) = 19 noise tokens, round(19 / 3) = 6 spans
    assert spans.span_counts(128) == (19, 6) and spans.pair_lengths(128) == (128 - 19 + 6 + 1, 19 + 6 + 1)
    # T5's own default: 568 tokens make a 512-token input (random_spans_helper): 85 noise, 28 spans
    assert spans.span_counts(568) == (85, 28) and spans.pair_lengths(568) == (512, 114)
    assert spans.span_counts(2) == (1, 1) and spans.span_counts(40) == (6, 2)
    with pytest.raises(ValueError, match="L=1"):
        spans.span_counts(1)
    with pytest.raises(ValueError, match="sentinels"):
        spans.span_counts(4000)  # 200 spans: more than T5's 100 sentinels


def test_span_corruption_hides_spans_behind_sentinels():
    ids = torch.arange(1000, 1040)  # 40 tokens: 6 hidden in 2 spans
    x, y = spans.span_corruption(ids, FIRST, eos=EOS, seed=0)
    assert (len(x), len(y)) == (40 - 6 + 2 + 1, 6 + 2 + 1)
    hidden = decode(ids.tolist(), x.tolist(), y.tolist())
    assert sum(hidden) == 6 and [v for v, _ in runs(hidden)] == [False, True, False, True]


def test_a_hand_made_mask_gives_t5s_input_and_target():
    """The docstring's example: the window's last span is hidden, so the target has no closing sentinel."""
    ids = torch.tensor([10, 11, 12, 13, 14, 15, 16])  # Thou art more lovely and more temperate
    hidden = torch.tensor([False, False, True, True, False, False, True])
    assert spans.spans_to_sentinels(ids, hidden, 99).tolist() == [10, 11, 99, 14, 15, 98]
    assert spans.spans_to_sentinels(ids, ~hidden, 99).tolist() == [99, 12, 13, 98, 16]


def test_many_windows_have_t5s_density_span_lengths_and_layout():
    n, L = 2000, 128
    w = torch.arange(1000, 1000 + L).repeat(n, 1)  # (n, L): every window the same tokens, its own seed
    pair = spans.span_pairs(w, FIRST, eos=EOS, seed=0)
    assert pair["input_ids"].shape == (n, 116) and pair["labels"].shape == (n, 26)  # no padding needed
    masks, first_noise = [], []
    for i in range(n):
        hidden = decode(w[i].tolist(), pair["input_ids"][i].tolist(), pair["labels"][i].tolist())
        r = runs(hidden)
        assert [v for v, _ in r] == [False, True] * 6  # 6 spans, alternating, non-noise first, noise last
        masks.append(hidden)
        first_noise.append(r[1][1])
    m = torch.tensor(masks, dtype=torch.float)  # (n, L)
    assert abs(m.mean().item() - 0.15) < 0.005  # 19 / 128 = 0.1484
    assert m.sum().item() / (6 * n) == pytest.approx(19 / 6)  # round(19 / 3) = 6 spans: mean length 3.17 here
    assert m[:, 0].sum() == 0 and m[:, -1].sum() == n  # T5's layout: the first token kept, the last hidden
    # span lengths are drawn, not fixed: the first span is 1 token long in C(17, 4) / C(18, 5) of the
    # equally likely cuts of 19 tokens into 6 non-empty spans
    share_one = sum(k == 1 for k in first_noise) / n
    assert abs(share_one - math.comb(17, 4) / math.comb(18, 5)) < 0.04  # 0.278, sd 0.01
    assert max(first_noise) >= 8 and len(set(map(tuple, masks))) > 1990


def test_long_windows_have_mean_span_three():
    """At T5's 568-token windows the rounding leaves density and mean span near their targets."""
    g, n_windows = torch.Generator().manual_seed(0), 500
    hidden = spanned = 0
    for _ in range(n_windows):
        r = runs(spans.noise_mask(568, generator=g).tolist())
        assert [v for v, _ in r] == [False, True] * 28
        hidden += sum(k for v, k in r if v)
        spanned += sum(1 for v, _ in r if v)
    assert abs(hidden / (568 * n_windows) - 0.15) < 0.005 and abs(hidden / spanned - 3) < 0.1


def test_the_seed_decides_the_pair():
    ids = torch.arange(1000, 1128)
    a, b = spans.span_corruption(ids, FIRST, eos=EOS, seed=5), spans.span_corruption(ids, FIRST, eos=EOS, seed=5)
    c = spans.span_corruption(ids, FIRST, eos=EOS, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    w = ids.repeat(3, 1)
    pair = spans.span_pairs(w, FIRST, eos=EOS, seed=4)  # window i draws with seed 4 + i
    assert torch.equal(pair["input_ids"][1], spans.span_corruption(ids, FIRST, eos=EOS, seed=5)[0])


def test_objective_takes_eos_and_the_sentinel_from_the_model():
    from types import SimpleNamespace

    pairs = spans.objective(SimpleNamespace(vocab_size=4196, eos_token_id=0))
    out = pairs(torch.arange(1000, 1128).view(1, 128), seed=0)
    assert out["labels"][0, 0] == 4195 and out["labels"][0, -1] == 0 and out["input_ids"][0, -1] == 0
    with pytest.raises(ValueError, match="eos_token_id"):
        spans.objective(SimpleNamespace(vocab_size=64, eos_token_id=None))


def test_span_pairs_batch_without_padding_and_reassemble_the_window():
    w = torch.arange(1000, 1000 + 4 * 128).view(4, 128)
    pair = spans.span_pairs(w, first_sentinel=FIRST, eos=EOS, seed=7)
    assert pair["input_ids"].shape == (4, 116) and pair["labels"].shape == (4, 26)  # 19 tokens in 6 spans
    for i in range(4):
        decode(w[i].tolist(), pair["input_ids"][i].tolist(), pair["labels"][i].tolist())
    assert spans.sentinel_mask(pair["input_ids"], FIRST).sum(1).tolist() == [6] * 4


def test_with_sentinels_gives_t5s_layout():
    from peakllm import models

    tok = spans.with_sentinels(models.load_tokenizer("tiny-opt"))
    first = spans.first_sentinel(tok)
    assert first == len(tok) - 1 == 4096 + 99
    assert tok.convert_ids_to_tokens(first - 99) == "<extra_id_99>"
    assert first in tok.all_special_ids and (first - 99) in tok.all_special_ids
    assert spans.first_sentinel(models.load_tokenizer("tiny-opt")) is None
