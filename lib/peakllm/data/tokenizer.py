"""Byte-level BPE tokenizer of the embedded corpus, saved in Hugging Face format.

Byte-level BPE (the GPT-2/OPT scheme): text -> UTF-8 bytes -> merges learned on the train
split, so no input is ever out of vocabulary. The result loads with
``transformers.AutoTokenizer.from_pretrained("data/tokenizer")`` like any Hub tokenizer.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..core.paths import DATA

TOKENIZER_DIR = DATA / "tokenizer"
VOCAB_SIZE = 4096
EOS, PAD = "<|endoftext|>", "<pad>"  # ids 0 and 1


def train(text: str, out: Path = TOKENIZER_DIR, vocab_size: int = VOCAB_SIZE):
    """Learn ``vocab_size`` byte-level BPE tokens from ``text``; save a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.split("\n")
    tok.train_from_iterator((lines[i:i + 1000] for i in range(0, len(lines), 1000)), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, pad_token=PAD, model_max_length=1 << 40)
    fast.save_pretrained(out)
    return fast


_SAFE_SPLIT = re.compile(r"(?<=\S)\n(?=\S)")


def encode(tokenizer, text: str, chunk_chars: int = 1 << 16) -> list[int]:
    """``tokenizer(text)["input_ids"]``, in chunks: the same ids in a fraction of the memory.

    A fast tokenizer keeps offsets and token strings for every token it returns (about 0.5 KB
    a token: 800 MB for the 1.5 M-token train split). Cutting the text right after a single
    newline between two non-space characters never moves a pre-token boundary of byte-level
    BPE, so the chunks' ids join to exactly the ids of the whole text. Special tokens the
    tokenizer adds (OPT's leading ``</s>``, T5's trailing ``</s>``) are added once.
    """
    probe_in = tokenizer("a", add_special_tokens=False)["input_ids"]
    probe = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(probe)) if probe[i:i + len(probe_in)] == probe_in)
    prefix, suffix = probe[:at], probe[at + len(probe_in):]
    ids, start = list(prefix), 0
    while start < len(text):
        m = _SAFE_SPLIT.search(text, start + chunk_chars) if start + chunk_chars < len(text) else None
        end = m.end() if m else len(text)
        ids += tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
        start = end
    return ids + suffix
