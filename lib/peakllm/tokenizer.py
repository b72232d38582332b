"""Byte-level BPE tokenizer of the embedded corpus, saved in Hugging Face format.

Byte-level BPE (the GPT-2/OPT scheme): text -> UTF-8 bytes -> merges learned on the train
split, so no input is ever out of vocabulary. The result loads with
``transformers.AutoTokenizer.from_pretrained("data/tokenizer")`` like any Hub tokenizer.
"""
from __future__ import annotations

from pathlib import Path

from .paths import DATA

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
