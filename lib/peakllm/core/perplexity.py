"""Perplexity with the protocol of the GPTQ / SparseGPT papers (SparseGPT section 4, "Datasets").

The evaluation text is tokenized once as one sequence, cut into non-overlapping windows of
``seqlen`` tokens (the model's context unless given), the tail that does not fill a window is
dropped, and

    ppl = exp( mean over all windows and positions of  -log p(x_t | x_<t) ),

each window starting fresh (no context carried across windows).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import positive_int


def context_length(model) -> int:
    """The longest sequence the model was trained on (the paper's perplexity ``seqlen``)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError(f"cannot tell the context length of {type(model).__name__}; pass seqlen")


def windows(ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(N,) token ids -> (N // seqlen, seqlen), the tail dropped."""
    positive_int("seqlen", seqlen)
    ids = ids.reshape(-1)
    n = ids.numel() // seqlen
    if n == 0:
        raise ValueError(f"seqlen={seqlen} is longer than the text ({ids.numel()} tokens)")
    return ids[: n * seqlen].view(n, seqlen)


def check_seqlen(model, seqlen: int | None) -> int:
    """``seqlen`` or the model's context; longer than the context is an error."""
    ctx = context_length(model)
    if seqlen is None:
        return ctx
    positive_int("seqlen", seqlen)
    if seqlen > ctx:
        raise ValueError(f"seqlen={seqlen} exceeds the model's context of {ctx} tokens; use <= {ctx}")
    return seqlen


@torch.no_grad()
def nll(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
        progress: bool = True) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) and the number of predicted tokens."""
    seqlen = check_seqlen(model, seqlen)
    positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    W = windows(ids, seqlen)  # (n, seqlen)
    total, count = 0.0, 0
    for batch in tqdm(W.split(batch_size), desc="perplexity", disable=not progress):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits  # (b, seqlen, vocab)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                               batch[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += batch[:, 1:].numel()
    return total, count


def mean_nll(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
             max_windows: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per predicted token) over the first ``max_windows``
    windows (all when None), in eval mode; the model's train/eval mode is restored after.
    The one validation loss of pretraining, fine-tuning and QMoE's causal models."""
    was = model.training
    model.eval()
    seqlen = check_seqlen(model, seqlen)
    ids = ids.reshape(-1)
    if max_windows is not None:
        ids = ids[: max(1, min(max_windows, ids.numel() // seqlen)) * seqlen]
    try:
        total, count = nll(model, ids, seqlen, batch_size, progress=False)
    finally:
        model.train(was)
    return total / count


@torch.no_grad()
def mean_span_nll(model, ids: torch.Tensor, seqlen: int, pairs, batch_size: int = 8,
                  max_windows: int | None = None) -> float:
    """Mean cross-entropy (nats per target token) of an encoder-decoder on the first
    ``max_windows`` windows of ``seqlen`` tokens, each made a pair by ``pairs(windows, seed=i)``
    ({"input_ids", "labels"}): T5's span corruption, ``peakllm.data.spans.objective`` -- the loss
    Switch Transformers and QMoE report. The objective is a data transform, so it comes in as
    an argument. Window i draws its spans with seed i, so every model meets the same pairs;
    train/eval mode is restored after."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for pair in span_pair_batches(ids, seqlen, pairs, batch_size, max_windows):
            out = model(input_ids=pair["input_ids"].to(device), labels=pair["labels"].to(device))
            total += out.loss.item() * pair["labels"].numel()
            count += pair["labels"].numel()
    finally:
        model.train(was)
    return total / count


def span_pair_batches(ids: torch.Tensor, seqlen: int, pairs, batch_size: int = 8, max_windows: int | None = None):
    """The evaluation's span-corrupted batches: the first ``max_windows`` windows of ``seqlen``
    tokens, ``batch_size`` at a time, made pairs by ``pairs(windows, seed=i)`` so that window g
    always draws its spans with seed g (``data.spans.hidden_mask(seqlen, g)``); every measurement
    on span corruption (``mean_span_nll``, ``models.probes``) reads them from here."""
    w = windows(ids, seqlen)[:max_windows]  # (n, seqlen)
    for i in range(0, len(w), batch_size):
        yield pairs(w[i:i + batch_size], seed=i)  # (b, T_in), (b, T_out)


def mean_loss(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
              max_windows: int | None = None, pairs=None) -> float:
    """A model's own training loss per predicted token (nats): next-token cross-entropy for a
    causal LM (``mean_nll``), T5 span corruption for an encoder-decoder (``mean_span_nll``, with
    ``pairs`` the pair builder, ``peakllm.data.spans.objective(model.config, sentinel)``)."""
    if not getattr(model.config, "is_encoder_decoder", False):
        return mean_nll(model, ids, seqlen, batch_size, max_windows)
    if seqlen is None:
        raise ValueError("seqlen: an encoder-decoder has no fixed context; give the window length")
    if pairs is None:
        raise ValueError("pairs: an encoder-decoder is measured on (input, target) pairs; give the pair "
                         "builder, e.g. peakllm.data.spans.objective(model.config, sentinel)")
    return mean_span_nll(model, ids, seqlen, pairs, batch_size, max_windows)


def perplexity(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
               progress: bool = True) -> float:
    """exp(mean token cross-entropy) over non-overlapping windows of ``seqlen`` tokens."""
    total, count = nll(model, ids, seqlen, batch_size, progress)
    return math.exp(total / count)


def evaluate(model, texts: dict[str, torch.Tensor], seqlen: int | None = None, digits: int = 2) -> dict:
    """Perplexity on each named evaluation text, rounded to ``digits`` (stable printed tables)."""
    return {name: round(perplexity(model, ids, seqlen, progress=False), digits) for name, ids in texts.items()}


def unigram_perplexity(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int) -> float:
    """The no-context baseline: token frequencies of the train split (add-one smoothed)."""
    counts = torch.bincount(train_ids.reshape(-1), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[test_ids.reshape(-1)].mean().item())
