"""Evaluation texts by name, with the preprocessing of the GPTQ / SparseGPT evaluation code.

* ``shakespeare`` -- shipped, offline: a split of the embedded corpus (held-out plays);
* ``wikitext2`` -- WikiText-2 raw test split, lines joined with "\\n\\n";
* ``ptb``       -- Penn Treebank test split, sentences joined with " ";
* ``c4``        -- the first validation shard of C4 (English), the first 1,100 documents
  joined with " ", truncated after tokenization to 256 windows of ``seqlen``.

The last three are files of Hugging Face Hub dataset repositories, fetched with
``huggingface_hub.hf_hub_download`` -- the same call online and offline: with ``HF_HUB_OFFLINE=1``
(or no Hub) it returns the copy in the local hub cache, so a machine that fetched them once
evaluates without a network. Neither cached nor reachable, they fail fast with one message.

A sentence encoder (``minilm``) reads lines, not windows: ``lines`` gives the shipped corpus's
lines that carry meaning, and ``calibration_lines`` a padded batch of random training lines.
"""
from __future__ import annotations

import gzip
import json
from collections import namedtuple
from pathlib import Path

import torch

from ..core.checks import choice, positive_int
from . import corpus
from .tokenizer import encode
from .windows import random_windows

EVAL_DATASETS = ("shakespeare", "wikitext2", "ptb", "c4")
CALIBRATION_DATASETS = ("shakespeare", "c4")  # training text only: never an evaluation split
HubFile = namedtuple("HubFile", "repo revision filename field join")
HUB_FILES = {  # the files the GPTQ / SparseGPT loaders read through ``datasets``
    "wikitext2": HubFile("Salesforce/wikitext", "main", "wikitext-2-raw-v1/test-00000-of-00001.parquet",
                         "text", "\n\n"),
    # a script dataset: the Hub serves its test split as parquet on the converted branch
    "ptb": HubFile("ptb-text-only/ptb_text_only", "refs/convert/parquet", "penn_treebank/test/0000.parquet",
                   "sentence", " "),
    "c4": HubFile("allenai/c4", "main", "en/c4-validation.00000-of-00008.json.gz", "text", " "),
    "c4-train": HubFile("allenai/c4", "main", "en/c4-train.00000-of-01024.json.gz", "text", None),
}
C4_DOCS, C4_WINDOWS = 1100, 256


def hub_file(name: str) -> Path:
    """The local path of ``HUB_FILES[name]``: from the hub cache when it is there (always so with
    ``HF_HUB_OFFLINE=1``), else downloaded into it."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from ..core.hub import HubUnavailable, hub_reachable

    f = HUB_FILES[name]
    cached = try_to_load_from_cache(f.repo, f.filename, revision=f.revision, repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached)
    if not hub_reachable():
        raise HubUnavailable(f"dataset {name!r} ({f.repo}: {f.filename}) is not in the local hub cache and "
                             "the Hugging Face Hub cannot be reached from here; use 'shakespeare' (shipped) offline")
    return Path(hf_hub_download(f.repo, f.filename, revision=f.revision, repo_type="dataset"))


def read_texts(path: Path, field: str, limit: int | None = None) -> list[str]:
    """The ``field`` column of a parquet file or of gzipped JSON lines (C4), in file order."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        texts = pq.read_table(path, columns=[field]).column(field).to_pylist()
        return texts[:limit]
    texts = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(texts) == limit:
                break
            texts.append(json.loads(line)[field])
    return texts


def check_dataset(name: str) -> None:
    choice("dataset", name, EVAL_DATASETS)


def eval_text(name: str = "shakespeare", split: str = "test") -> str:
    """The evaluation text as one string, joined the way the papers join it."""
    check_dataset(name)
    if name == "shakespeare":
        return corpus.load_split(split)
    if split != "test":
        raise ValueError(f"split={split!r}: dataset={name!r} is evaluated on its test split only")
    f = HUB_FILES[name]
    return f.join.join(read_texts(hub_file(name), f.field, C4_DOCS if name == "c4" else None))


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
    docs = read_texts(hub_file("c4-train"), "text")
    out, tries = [], 0
    while len(out) < nsamples:
        tries += 1
        if tries > 100 * nsamples:
            raise ValueError(f"seqlen={seqlen}: hardly any C4 document is that long; use a shorter seqlen")
        doc = docs[int(torch.randint(0, len(docs), (1,), generator=gen))]
        ids = tokenizer(doc, return_tensors="pt")["input_ids"][0]
        if len(ids) > seqlen:
            out.append(random_windows(ids, 1, seqlen, gen)[0])
    return torch.stack(out)


def lines(split: str = "test", n: int | None = None, min_words: int = 5) -> list[str]:
    """The lines of a split of the shipped corpus that carry meaning, in the text's order, the
    first ``n`` of them (all: ``None``), stripped.

    The rule: at least ``min_words`` words (whitespace-separated). Five keeps verse and prose
    ("Nay, answer me: stand, and unfold yourself.") and leaves out what a play repeats without
    meaning -- speaker tags ("Ber."), short stage directions ("[Exit.]"), blank lines. In the test
    split (Hamlet, The Tempest) 5,309 of 8,398 non-empty lines pass.
    """
    positive_int("min_words", min_words)
    if n is not None:
        positive_int("n", n)
    kept = [line.strip() for line in corpus.load_split(split).split("\n") if len(line.split()) >= min_words]
    if n is not None and n > len(kept):
        raise ValueError(f"n={n}: the {split} split has only {len(kept)} lines of >= {min_words} words")
    return kept[:n]


def calibration_lines(tokenizer, nsamples: int = 128, seed: int = 0, max_length: int = 128):
    """``nsamples`` distinct random lines of the *train* split (``lines``; seeded with a
    ``torch.Generator``), tokenized as one padded batch truncated to ``max_length`` tokens: a
    ``BatchEncoding`` whose ``input_ids`` and ``attention_mask`` are (nsamples, longest line),
    the calibration form of ``compress.sequential.calibration_tensors`` for padded lines."""
    positive_int("nsamples", nsamples)
    positive_int("max_length", max_length)
    pool = lines("train")
    if nsamples > len(pool):
        raise ValueError(f"nsamples={nsamples}: the train split has only {len(pool)} lines")
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:nsamples]
    return tokenizer([pool[i] for i in pick.tolist()], padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")
