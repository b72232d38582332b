"""Evaluation texts by name, with the preprocessing of the GPTQ / SparseGPT evaluation code.

* ``shakespeare`` -- shipped, offline: a split of the embedded corpus (held-out plays);
* ``wikitext2`` -- WikiText-2 raw test split, lines joined with "\\n\\n";
* ``ptb``       -- Penn Treebank test split, sentences joined with " ";
* ``c4``        -- the first validation shard of C4 (English), the first 1,100 documents
  joined with " ", truncated after tokenization to 256 windows of ``seqlen``.

The last three come from the Hugging Face Hub through ``datasets``; without the Hub they fail
fast with one message.
"""
from __future__ import annotations

import torch

from . import corpus
from ..core.checks import choice
from .tokenizer import encode
from .windows import random_windows

EVAL_DATASETS = ("shakespeare", "wikitext2", "ptb", "c4")
CALIBRATION_DATASETS = ("shakespeare", "c4")  # training text only: never an evaluation split
HUB_DATASETS = {  # name -> (load_dataset args, split, text field, join string)
    "wikitext2": (dict(path="Salesforce/wikitext", name="wikitext-2-raw-v1"), "test", "text", "\n\n"),
    "ptb": (dict(path="ptb-text-only/ptb_text_only", name="penn_treebank"), "test", "sentence", " "),
    "c4": (dict(path="allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}),
           "validation", "text", " "),
}
C4_DOCS, C4_WINDOWS = 1100, 256


def check_dataset(name: str) -> None:
    choice("dataset", name, EVAL_DATASETS)


def eval_text(name: str = "shakespeare", split: str = "test") -> str:
    """The evaluation text as one string, joined the way the papers join it."""
    check_dataset(name)
    if name == "shakespeare":
        return corpus.load_split(split)
    from ..models.loading import HubUnavailable, hub_reachable

    if not hub_reachable():
        raise HubUnavailable(f"dataset={name!r} comes from the Hugging Face Hub, which cannot be "
                             "reached from here; use dataset='shakespeare' (shipped) offline")
    import datasets

    args, hub_split, field, join = HUB_DATASETS[name]
    data = datasets.load_dataset(**args, split=hub_split)
    if name == "c4":
        data = data.select(range(C4_DOCS))
    return join.join(data[field])


def eval_ids(name: str, tokenizer, seqlen: int | None = None, split: str = "test") -> torch.Tensor:
    """Token ids of the evaluation text, tokenized once: a (1, N) LongTensor."""
    ids = torch.tensor(encode(tokenizer, eval_text(name, split)), dtype=torch.long)[None]
    if name == "c4" and seqlen:
        ids = ids[:, : C4_WINDOWS * seqlen]
    return ids


def calibration(name: str, tokenizer, nsamples: int = 128, seqlen: int = 256, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows of ``seqlen`` tokens from a *training* text: (nsamples, seqlen).

    ``shakespeare``: the shipped train split (never the evaluation plays). ``c4``: as in the
    SparseGPT/GPTQ code, random documents of the first C4 train shard longer than ``seqlen``,
    one random window from each.
    """
    from ..core.checks import choice, positive_int

    choice("calib_dataset", name, CALIBRATION_DATASETS)
    positive_int("nsamples", nsamples)
    positive_int("seqlen", seqlen)
    gen = torch.Generator().manual_seed(seed)
    if name == "shakespeare":
        ids = torch.tensor(encode(tokenizer, corpus.load_split("train")), dtype=torch.long)
        return random_windows(ids, nsamples, seqlen, gen)
    from ..models.loading import HubUnavailable, hub_reachable

    if not hub_reachable():
        raise HubUnavailable("calibration dataset 'c4' comes from the Hugging Face Hub, which cannot "
                             "be reached from here; use 'shakespeare' (shipped) offline")
    import datasets

    docs = datasets.load_dataset("allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"},
                                 split="train")
    out = []
    while len(out) < nsamples:
        doc = docs[int(torch.randint(0, len(docs), (1,), generator=gen))]["text"]
        ids = tokenizer(doc, return_tensors="pt")["input_ids"][0]
        if len(ids) > seqlen:
            out.append(random_windows(ids, 1, seqlen, gen)[0])
    return torch.stack(out)
