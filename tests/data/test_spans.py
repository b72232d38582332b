import torch

from peakllm.data import spans


def test_span_corruption_hides_spans_behind_sentinels():
    ids = torch.arange(10, 50)  # 40 tokens; <extra_id_0> = 63, <extra_id_1> = 62, ...
    x, y = spans.span_corruption(ids, 63, noise=0.15, mean_span=3)
    sentinels = [t for t in x.tolist() if t >= 60]
    assert sentinels == [63, 62] and len(x) == 40 - 6 + 2 and len(y) == 2 * 4
    assert y[0] == 63 and set(y.tolist()) - {63, 62} <= set(ids.tolist())


def test_span_pairs_batch_without_padding_and_reassemble_the_window():
    w = torch.arange(1000, 1000 + 4 * 128).view(4, 128)
    pair = spans.span_pairs(w, first_sentinel=99, seed=7)
    assert pair["input_ids"].shape == (4, 116) and pair["labels"].shape == (4, 24)  # 6 spans of 3
    for i in range(4):  # fill each sentinel of the input with the span the target lists after it
        x, y = pair["input_ids"][i].tolist(), pair["labels"][i].tolist()
        fill = {y[j]: y[j + 1:j + 4] for j in range(0, len(y), 4)}
        assert [t for s in x for t in (fill[s] if s in fill else [s])] == w[i].tolist()
    assert spans.sentinel_mask(pair["input_ids"], 99).sum(1).tolist() == [6] * 4


def test_with_sentinels_gives_t5s_layout():
    from peakllm import models

    tok = spans.with_sentinels(models.load_tokenizer("tiny-opt"))
    first = spans.first_sentinel(tok)
    assert first == len(tok) - 1 == 4096 + 99
    assert tok.convert_ids_to_tokens(first - 99) == "<extra_id_99>"
    assert first in tok.all_special_ids and (first - 99) in tok.all_special_ids
    assert spans.first_sentinel(models.load_tokenizer("tiny-opt")) is None
