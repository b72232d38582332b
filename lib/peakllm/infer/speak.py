"""Compressed models speak: one fixed prompt, continued greedily by each model of a comparison.

A perplexity says how much a compression costs; the text a model writes shows what that cost
looks like. ``speak`` continues one prompt with greedy decoding (no sampling: the same model gives
the same words) for a fixed number of tokens:

* a decoder-only model (OPT, Mixtral) continues ``PROMPT``;
* an encoder-decoder trained on T5's span corruption (Switch) cannot continue text: it fills a
  masked span. ``speak`` masks ``span`` tokens in the middle of ``PROMPT`` with the first sentinel
  (the encoder reads both sides, as in pretraining) and returns
  what the decoder writes for it (up to the next sentinel), so the dense and compressed models
  answer the same question.

``table`` puts the answers of several models side by side. The prompt is a line of the test
split (Hamlet, act 1), which no shipped model trained on.
"""
from __future__ import annotations

import torch

PROMPT = ("HORATIO. Well, sit we down, And let us hear Bernardo speak of this. BERNARDO. Last night of all, "
          "When yond same star that's westward from the pole Had made his course to illume that part of heaven")


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def speak(model, tokenizer, prompt: str = PROMPT, new_tokens: int = 24, span: int = 6) -> dict:
    """``{"prompt", "text"}``: the greedy continuation of ``prompt`` (decoder-only), or the fill of
    ``span`` tokens in its middle masked by the first sentinel (encoder-decoder, span corruption;
    ``hidden`` holds the masked words)."""
    from ..data.spans import first_sentinel
    from .decoding import resolve_pad_id

    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(_device(model))  # (1, T)
    if not model.config.is_encoder_decoder:  # a short context keeps the prompt's end: room for the new tokens
        from ..core.perplexity import context_length

        room = context_length(model) - new_tokens
        if room < 1:
            raise ValueError(f"new_tokens={new_tokens} leaves no room for a prompt in a context of {context_length(model)}")
        if ids.shape[1] > room:
            ids = ids[:, -room:]
            prompt = tokenizer.decode(ids[0], skip_special_tokens=True)
    pad = resolve_pad_id(model, tokenizer)
    kwargs = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad, attention_mask=torch.ones_like(ids))
    if not model.config.is_encoder_decoder:
        out = model.generate(ids, min_new_tokens=new_tokens, **kwargs)[0, ids.shape[1]:]
        return {"prompt": prompt, "text": tokenizer.decode(out, skip_special_tokens=True)}
    if not 0 < span < ids.shape[1]:
        raise ValueError(f"span={span!r} must lie between 1 and the prompt's {ids.shape[1] - 1} tokens")
    s0 = first_sentinel(tokenizer)  # <extra_id_0>; the next sentinel, <extra_id_1>, is s0 - 1
    a = (ids.shape[1] - span) // 2  # the span's first position: the middle of the prompt
    masked = torch.cat([ids[:, :a], torch.tensor([[s0]], device=ids.device), ids[:, a + span:]], dim=1)
    out = model.generate(masked, **kwargs | {"attention_mask": torch.ones_like(masked)})[0].tolist()
    fill = out[out.index(s0) + 1:] if s0 in out else out[1:]
    fill = fill[:fill.index(s0 - 1)] if s0 - 1 in fill else fill
    return {"prompt": tokenizer.decode(masked[0]), "text": tokenizer.decode(fill, skip_special_tokens=True),
            "hidden": tokenizer.decode(ids[0, a:a + span])}


def table(answers: dict):
    """``answers``: label -> ``speak``'s dict; one row per model, its text beside the others'."""
    import pandas as pd

    rows = [{"model": label, "writes": a["text"].strip().replace("\n", " / ")} for label, a in answers.items()]
    return pd.DataFrame(rows).set_index("model")
