"""What a span-corruption model has learned (peakllm.models.probes), on hand-made cases."""
import math

import pytest
import torch
import torch.nn.functional as F

from peakllm.data import spans
from peakllm.models import probes

SENTINEL, N_SENTINELS = 63, 10  # <extra_id_0> .. <extra_id_9>: the top ids of a 64-token vocabulary


def test_span_token_nll_is_the_cross_entropy_of_the_hidden_tokens_only(tiny_model):
    model = tiny_model("switch", preset="compress").eval()
    pairs = spans.objective(model.config, SENTINEL)
    ids = torch.randint(2, 40, (1, 4 * 32), generator=torch.Generator().manual_seed(0))
    got = probes.span_token_nll(model, ids, 32, pairs, SENTINEL, batch_size=4, sentinels=N_SENTINELS)
    pair = pairs(ids.view(4, 32), seed=0)
    with torch.no_grad():
        logits = model(input_ids=pair["input_ids"], labels=pair["labels"]).logits
    hidden = torch.stack([spans.noise_mask(32, generator=torch.Generator().manual_seed(g)) for g in range(4)])
    keep = ~spans.sentinel_mask(pair["labels"], SENTINEL, N_SENTINELS) & (pair["labels"] != model.config.eos_token_id)
    assert torch.equal(pair["labels"][keep], ids.view(4, 32)[hidden])  # the kept targets are the hidden tokens
    assert math.isclose(got, F.cross_entropy(logits[keep], pair["labels"][keep]).item(), rel_tol=1e-5)
    other = probes.span_token_nll(model, ids, 32, pairs, SENTINEL, batch_size=4, encoder="other",
                                 sentinels=N_SENTINELS)
    assert other != got  # another window's encoder changes what the decoder sees
    with pytest.raises(ValueError, match="encoder"):
        probes.span_token_nll(model, ids, 32, pairs, SENTINEL, encoder="left")


def test_left_bigram_predicts_a_deterministic_text_and_not_a_random_one():
    cycle = torch.arange(2, 50).repeat(200)  # each token determines the next
    fitted = probes.left_bigram_nll(cycle, cycle[: 64 * 8], 64)
    assert fitted["nll"] < 0.05 and fitted["beta"] == 1.0
    noise = torch.randint(2, 50, (20_000,), generator=torch.Generator().manual_seed(0))
    random = probes.left_bigram_nll(noise, noise[: 64 * 8], 64)["nll"]
    assert abs(random - math.log(48)) < 0.3  # nothing to learn: about the uniform's log 48
