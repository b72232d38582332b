"""What a span-corruption model has learned, measured on the hidden (span) tokens alone.

Three numbers tell whether an encoder-decoder such as Switch (or our ``tiny-switch``) does its
task, rather than guessing span tokens from their frequency:

* ``span_token_nll``: the model's cross-entropy on the tokens it must restore, sentinels and EOS
  left out (they are nearly free to predict and would flatter the model);
* the same with ``encoder="other"``: the encoder reads *another* window's corrupted text. The
  difference is what the right encoder is worth -- zero for a decoder that ignores its encoder;
* ``left_bigram_nll``: a baseline that predicts each hidden token from the token just before it
  in the original text (visible in the encoder for a span's first token, the decoder's own
  previous target token after that), a bigram fitted on the train split. A model that loses to
  it has not learned to use the context around a span.

All three read the evaluation's batches (``core.perplexity.span_pair_batches``): window ``g``
draws its spans with seed ``g`` (``data.spans.hidden_mask``), so they score the same hidden tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.perplexity import span_pair_batches, windows
from ..data.spans import SENTINELS, hidden_mask, sentinel_mask

ENCODERS = ("right", "other")


@torch.no_grad()
def span_token_nll(model, ids: torch.Tensor, seqlen: int, pairs, first_sentinel: int, batch_size: int = 8,
                   max_windows: int | None = None, encoder: str = "right", sentinels: int = SENTINELS) -> float:
    """Mean cross-entropy (nats) of the hidden tokens of the first ``max_windows`` windows, in
    batches of ``batch_size``; with ``encoder="other"`` each encoder reads the previous window's
    input of its batch. A last batch of one window is left out in both modes. ``sentinels``: how
    many ids count down from ``first_sentinel`` (T5's 100)."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder={encoder!r}: choose one of {ENCODERS}")
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size}: another window's encoder needs batches of at least 2")
    was, device = model.training, next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    try:
        for pair in span_pair_batches(ids, seqlen, pairs, batch_size, max_windows):
            if len(pair["labels"]) < 2:  # a last batch of one window has no other window to read
                continue
            enc = pair["input_ids"].roll(1, dims=0) if encoder == "other" else pair["input_ids"]
            labels = pair["labels"]                                   # (b, T_out)
            logits = model(input_ids=enc.to(device), labels=labels.to(device)).logits.float().cpu()  # (b, T_out, V)
            keep = ~sentinel_mask(labels, first_sentinel, sentinels) & (labels != model.config.eos_token_id)
            nll = F.cross_entropy(logits[keep], labels[keep], reduction="sum")
            total, count = total + nll.item(), count + int(keep.sum())
    finally:
        model.train(was)
    return total / count


def bigram_nll(train_ids: torch.Tensor, left: torch.Tensor, right: torch.Tensor, beta: float) -> float:
    """Mean -log P(right | left) over the pairs (left[i], right[i]), with the pair counts of
    ``train_ids`` (1-D) smoothed toward its add-one unigram: P(b | a) = (c(a, b) + beta P(b)) /
    (c(a) + beta). Pair counts are kept sparse (sorted codes a V + b), so a 32k vocabulary costs
    no V x V table."""
    V = int(max(train_ids.max(), left.max(), right.max())) + 1
    codes, counts = torch.unique(train_ids[:-1] * V + train_ids[1:], return_counts=True)  # sorted (m,), (m,)
    q = left * V + right                                                  # (n,)
    at = torch.searchsorted(codes, q).clamp(max=len(codes) - 1)
    c_ab = torch.where(codes[at] == q, counts[at], 0).double()            # (n,)
    c_a = torch.bincount(train_ids[:-1], minlength=V).double()[left]      # (n,)
    uni = torch.bincount(train_ids, minlength=V).double() + 1
    uni /= uni.sum()
    return -((c_ab + beta * uni[right]) / (c_a + beta)).log().mean().item()


def left_bigram_nll(train_ids: torch.Tensor, ids: torch.Tensor, seqlen: int,
                    max_windows: int | None = None, noise: float = 0.15, mean_span: float = 3.0,
                    betas=(1.0, 10.0, 100.0, 1000.0)) -> dict:
    """The left-context bigram on the hidden tokens of the windows ``span_token_nll`` measures:
    {"nll": nats per hidden token at the best smoothing, "beta": that smoothing}. The smoothing is
    chosen on these windows, which favours the baseline (a stricter bar for the model)."""
    train_ids = train_ids.reshape(-1)
    w = windows(ids, seqlen)[:max_windows]                            # (n, seqlen)
    hidden = torch.stack([hidden_mask(seqlen, g, noise, mean_span) for g in range(len(w))])  # (n, seqlen); column 0 never hidden
    left, right = w[:, :-1][hidden[:, 1:]], w[:, 1:][hidden[:, 1:]]   # (m,), (m,)
    scores = {beta: bigram_nll(train_ids, left, right, beta) for beta in betas}
    beta = min(scores, key=scores.get)
    return {"nll": scores[beta], "beta": beta}
