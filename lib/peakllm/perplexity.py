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
from .models import context_length


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


def perplexity(model, ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 8,
               progress: bool = True) -> float:
    """exp(mean token cross-entropy) over non-overlapping windows of ``seqlen`` tokens."""
    total, count = nll(model, ids, seqlen, batch_size, progress)
    return math.exp(total / count)


def unigram_perplexity(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int) -> float:
    """The no-context baseline: token frequencies of the train split (add-one smoothed)."""
    counts = torch.bincount(train_ids.reshape(-1), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[test_ids.reshape(-1)].mean().item())
