"""Sentence embeddings and the two scores that say what compression did to them.

An encoder such as all-MiniLM-L6-v2 is not judged by perplexity: it maps a text to one vector,
and its users compare vectors by cosine similarity. Its own pipeline (the checkpoint's
``modules.json``: Transformer -> Pooling -> Normalize, with ``1_Pooling/config.json`` setting
``pooling_mode_mean_tokens``; the model card's ``mean_pooling`` + ``F.normalize``) is: the last
hidden states, averaged over the real (non-padded) tokens, scaled to unit length.

Two scores compare a compressed encoder with its dense original, on the same texts:

* ``cosine_to`` -- how far each text's embedding moved: cos(dense, compressed), 1 = unchanged;
* ``recall_at_1`` -- whether it still does the job, as a retrieval task the shipped corpus
  supports offline: held-out lines taken in consecutive pairs, the query is line 2j and the
  candidates are the N second lines 2j+1 of all pairs; a hit is a query whose most similar
  candidate is its own next line. The pairs are disjoint so that no query meets itself among
  the candidates (with query i against every line i+1, line i would be candidate i-1 and win at
  cosine 1). Chance is 1/N; the dense model sets the ceiling a compressed one is measured against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checks import positive_int


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over the tokens the mask marks 1, L2-normalised: (N, T, D) -> (N, D).

    The sentence-transformers recipe of all-MiniLM-L6-v2 (its ``1_Pooling`` mean over tokens, then
    ``2_Normalize``); padding does not change a text's embedding.
    """
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)            # (N, T, 1)
    summed = (last_hidden * m).sum(dim=1)                              # (N, D)
    counts = m.sum(dim=1).clamp(min=1e-9)                              # (N, 1), as the model card clamps
    return F.normalize(summed / counts, p=2, dim=1)


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 128,
          progress: bool = False) -> torch.Tensor:
    """Unit-length embeddings of ``texts``: (N, D) float32 on the CPU, in the order of ``texts``.

    Batches of ``batch_size`` texts, padded to their longest and truncated to ``max_length`` tokens
    (128: the length all-MiniLM-L6-v2 was trained at, per its model card), run on the model's
    device with their attention masks. Texts go in order of length, as sentence-transformers'
    ``encode`` sorts them, so a batch carries little padding. ``model`` is a bare encoder
    (``AutoModel``) whose output has ``last_hidden_state``.
    """
    positive_int("batch_size", batch_size)
    positive_int("max_length", max_length)
    if not texts:
        raise ValueError("texts is empty: nothing to embed")
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)           # (N, D)
    for start in tqdm(range(0, len(texts), batch_size), desc="embed", disable=not progress):
        idx = order[start: start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state                        # (b, T, D)
        out[idx] = mean_pool(hidden.float(), enc["attention_mask"]).cpu()
    return out


def cosine_to(reference: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-text cosine of ``emb`` to ``reference`` (both (N, D), row i the same text): ((N,), mean)."""
    if reference.shape != emb.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and emb {tuple(emb.shape)} must have one shape (N, D)")
    cos = F.cosine_similarity(reference.float(), emb.float(), dim=1)   # (N,)
    return cos, float(cos.mean())


def recall_at_1(emb_queries: torch.Tensor, emb_candidates: torch.Tensor) -> float:
    """Share of queries whose most similar candidate (cosine) is their own counterpart: query i
    <-> candidate i. For the next-line task on embeddings ``e`` of consecutive lines: ``recall_at_1(e[0::2], e[1::2])``."""
    if emb_queries.shape != emb_candidates.shape:
        raise ValueError(f"emb_queries {tuple(emb_queries.shape)} and emb_candidates "
                         f"{tuple(emb_candidates.shape)} must have one shape (N, D)")
    sim = F.normalize(emb_queries.float(), dim=1) @ F.normalize(emb_candidates.float(), dim=1).T  # (N, N)
    hits = sim.argmax(dim=1) == torch.arange(len(sim))
    return float(hits.float().mean())


def neighbour_agreement(reference: torch.Tensor, emb: torch.Tensor) -> float:
    """Recall@1 of a search over the texts themselves, with the reference model's answers as the
    truth: the share of texts whose nearest other text (cosine) under ``emb`` is the one it is
    under ``reference`` (both (N, D), row i the same text). The reference scores 1 by
    definition, chance is 1/(N-1): a compressed encoder that keeps its search results scores high."""
    if reference.shape != emb.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and emb {tuple(emb.shape)} must have one shape (N, D)")
    return float((nearest(emb) == nearest(reference)).float().mean())


def nearest(emb: torch.Tensor) -> torch.Tensor:
    """(N,) index of each text's nearest other text by cosine (``emb`` (N, D), row i text i)."""
    e = F.normalize(emb.float(), dim=1)
    sim = e @ e.T                                                      # (N, N)
    return sim.fill_diagonal_(-2.0).argmax(dim=1)                      # a text is not its own neighbour


def neighbour_table(texts: list[str], answers: dict, queries: int = 3, width: int = 60):
    """The nearest other text of each of the first ``queries`` texts under each model (``answers``:
    label -> ``nearest`` indices), side by side; a neighbour that differs from the first model's
    is marked with *."""
    import pandas as pd

    labels = list(answers)
    rows = []
    for q in range(queries):
        first = int(answers[labels[0]][q])
        row = {"line": texts[q][:width]}
        for lab in labels:
            j = int(answers[lab][q])
            row[lab] = ("* " if j != first else "") + texts[j][:width]
        rows.append(row)
    return pd.DataFrame(rows).set_index("line")
