import pytest

from peakllm.data import evaldata


def test_unknown_dataset_fails_before_loading():
    with pytest.raises(ValueError, match="dataset='wikitext103'.*shakespeare.*wikitext2.*ptb.*c4"):
        evaldata.eval_text("wikitext103")


def test_hub_dataset_offline_fails_fast(monkeypatch):
    from huggingface_hub import constants

    from peakllm.core.hub import HubUnavailable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")
    with pytest.raises(HubUnavailable, match="dataset 'wikitext2'.*not in the local hub cache"):
        evaldata.eval_text("wikitext2")


def test_hub_texts_are_read_from_parquet_and_gzipped_json_lines(tmp_path):
    import gzip
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "", "b"]}), tmp_path / "t.parquet")
    with gzip.open(tmp_path / "c.json.gz", "wt") as fh:
        fh.writelines(json.dumps({"text": t, "url": "u"}) + "\n" for t in ["x", "y", "z"])
    assert evaldata.read_texts(tmp_path / "t.parquet", "text") == ["a", "", "b"]
    assert evaldata.read_texts(tmp_path / "c.json.gz", "text", limit=2) == ["x", "y"]


def test_hub_datasets_have_only_a_test_split():
    with pytest.raises(ValueError, match="split='train'"):
        evaldata.eval_text("ptb", split="train")


def test_shipped_text_is_the_test_split():
    from peakllm.data import corpus

    assert evaldata.eval_text("shakespeare") == corpus.load_split("test")
