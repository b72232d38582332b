"""One prompt, continued greedily (decoder-only) or its masked span filled (Switch)."""
import pytest

from peakllm.infer import speak


def test_a_decoder_continues_the_prompt_and_the_same_model_says_the_same():
    from peakllm.models import load_model, load_tokenizer

    m, tok = load_model("tiny-opt", device="cpu").float(), load_tokenizer("tiny-opt")
    a, b = speak.speak(m, tok, new_tokens=12), speak.speak(m, tok, new_tokens=12)
    assert a == b and a["prompt"] == speak.PROMPT
    assert len(tok(a["text"], add_special_tokens=False).input_ids) in range(10, 15)  # 12 tokens, re-tokenized
    assert list(speak.table({"dense": a}).index) == ["dense"]


def test_a_span_model_fills_the_masked_middle_of_the_prompt():
    from peakllm.compress.qmoe import algorithm as qmoe

    m, tok, _ = qmoe.load("tiny-switch", "cpu", 1024)
    out = speak.speak(m, tok, span=4, new_tokens=8)
    assert "<extra_id_0>" in out["prompt"] and out["hidden"].strip() in speak.PROMPT
    assert out["prompt"].replace("<extra_id_0>", out["hidden"]) == tok.decode(tok(speak.PROMPT).input_ids)
    with pytest.raises(ValueError, match="span"):
        speak.speak(m, tok, span=0)
