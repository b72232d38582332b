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


def span_corruption(ids: torch.Tensor, first_sentinel: int, noise: float = 0.15, mean_span: int = 3,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's span corruption (Raffel et al. 2020, section 3.1.4; ``peakllm.data.spans`` tells the
    story): (input, target) of one window ``ids`` (T,), spans of ``mean_span`` tokens, ``noise``
    of the window in all, each replaced by a sentinel (``first_sentinel``, one less, ...)."""
    g = torch.Generator().manual_seed(seed)
    T = ids.numel()
    n_spans = max(1, round(T * noise / mean_span))
    starts = sorted(torch.randperm(T // mean_span, generator=g)[:n_spans].mul(mean_span).tolist())
    inp, lab, pos = [], [], 0
    for i, s in enumerate(starts):
        sentinel = first_sentinel - i
        inp += ids[pos:s].tolist() + [sentinel]
        lab += [sentinel] + ids[s: s + mean_span].tolist()
        pos = s + mean_span
    inp += ids[pos:].tolist()
    return torch.tensor(inp), torch.tensor(lab)


def span_pairs(windows: torch.Tensor, first_sentinel: int, seed: int = 0, noise: float = 0.15,
               mean_span: int = 3) -> dict:
    """Span-corrupted pairs of a batch of windows (n, T): ``input_ids`` (n, T_in) and ``labels``
    (n, T_out); window i draws its spans with seed ``seed + i``."""
    pairs = [span_corruption(w, first_sentinel, noise, mean_span, seed + i) for i, w in enumerate(windows)]
    return {"input_ids": torch.stack([p[0] for p in pairs]), "labels": torch.stack([p[1] for p in pairs])}


@torch.no_grad()
def mean_span_nll(model, ids: torch.Tensor, seqlen: int, first_sentinel: int, batch_size: int = 8,
                  max_windows: int | None = None) -> float:
    """Mean cross-entropy (nats per target token) of an encoder-decoder on T5 span corruption
    (``peakllm.data.spans``) of the first ``max_windows`` windows of ``seqlen`` tokens: the loss
    Switch Transformers and QMoE report. Window i draws its spans with seed i, so every model
    meets the same pairs; train/eval mode is restored after."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        w = windows(ids, seqlen)[:max_windows]  # (n, seqlen)
        for i in range(0, len(w), batch_size):
            pair = span_pairs(w[i:i + batch_size], first_sentinel, seed=i)
            out = model(input_ids=pair["input_ids"].to(device), labels=pair["labels"].to(device))
            total += out.loss.item() * pair["labels"].numel()
            count += pair["labels"].numel()
    finally:
        model.train(was)
    return total / count


def mean_loss(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
              max_windows: int | None = None, sentinel: int | None = None) -> float:
    """A model's own training loss per predicted token (nats): next-token cross-entropy for a
    causal LM (``mean_nll``), T5 span corruption for an encoder-decoder (``mean_span_nll``, with
    ``sentinel`` the id of <extra_id_0>; default the last id of the vocabulary)."""
    if not getattr(model.config, "is_encoder_decoder", False):
        return mean_nll(model, ids, seqlen, batch_size, max_windows)
    if seqlen is None:
        raise ValueError("seqlen: an encoder-decoder has no fixed context; give the window length")
    first = sentinel if sentinel is not None else model.config.vocab_size - 1
    return mean_span_nll(model, ids, seqlen, first, batch_size, max_windows)


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
