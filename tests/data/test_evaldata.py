import pytest

from peakllm.data import evaldata


def test_unknown_dataset_fails_before_loading():
    with pytest.raises(ValueError, match="dataset='wikitext103'.*shakespeare.*wikitext2.*ptb.*c4"):
        evaldata.eval_text("wikitext103")


def test_hub_dataset_offline_fails_fast(monkeypatch):
    from huggingface_hub import constants

    from peakllm.models import HubUnavailable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailable, match="dataset='wikitext2'"):
        evaldata.eval_text("wikitext2")


def test_shipped_text_is_the_test_split():
    from peakllm.data import corpus

    assert evaldata.eval_text("shakespeare") == corpus.load_split("test")
