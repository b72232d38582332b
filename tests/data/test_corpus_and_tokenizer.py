import pytest

from peakllm.data import corpus, manifest
from peakllm.models import load_tokenizer


def test_splits_are_disjoint_by_work_and_cover_the_corpus():
    m = corpus.manifest()
    works = {s: {w["work"] for w in m["splits"][s]["works"]} for s in corpus.SPLITS}
    assert works["test"] == set(corpus.HELD_OUT["test"])
    assert works["validation"] == set(corpus.HELD_OUT["validation"])
    assert not (works["train"] & (works["test"] | works["validation"]))
    assert len(works["train"]) >= 30


def test_load_split_verifies_checksum(tmp_path, monkeypatch):
    text = corpus.load_split("test")
    assert text.startswith("HAMLET") and "To be, or not to be" in text
    fake = tmp_path / "corpus"
    fake.mkdir()
    for f in corpus.CORPUS.iterdir():
        (fake / f.name).write_bytes(f.read_bytes())
    (fake / "test.txt").write_text(text.replace("To be, or not to be", "To be or not to be"))
    monkeypatch.setattr(corpus, "CORPUS", fake)
    with pytest.raises(RuntimeError, match="sha256"):
        corpus.load_split("test")


def test_unknown_split_fails():
    with pytest.raises(ValueError, match="split='dev'"):
        corpus.load_split("dev")


def test_clean_normalises_whitespace():
    assert corpus.clean("a  \r\nb\n\n\n\n\n\nc") == "a\nb\n\n\nc\n"


def test_every_shipped_file_matches_the_manifest():
    assert manifest.verify() == []


@pytest.mark.parametrize("name, size", [("tiny-opt", 4096), ("tiny-moe", 4096)])
def test_tokenizer_round_trips_text(name, size):
    tok = load_tokenizer(name)
    s = "Enter HAMLET.\n\nHam. To be, or not to be: that is the question -- 1603, é!"
    assert tok.decode(tok(s)["input_ids"]) == s
    assert len(tok) == size


def test_chunked_encoding_gives_the_ids_of_the_whole_text():
    from peakllm.data.tokenizer import encode

    tok = load_tokenizer("tiny-opt")
    text = corpus.load_split("validation")
    assert encode(tok, text, chunk_chars=2000) == tok(text)["input_ids"]
