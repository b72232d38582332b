import math

import pytest
import torch

from peakllm.core.perplexity import evaluate, mean_nll, nll, perplexity, unigram_perplexity, windows


def test_windows_drop_the_tail():
    W = windows(torch.arange(10), 3)
    assert W.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_perplexity_matches_a_direct_computation(tiny_random_opt):
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (1, 100))
    seqlen = 16
    # direct: every window on its own, every position's -log p by hand
    logps = []
    with torch.no_grad():
        for w in range(100 // seqlen):
            x = ids[0, w * seqlen:(w + 1) * seqlen]
            logits = tiny_random_opt(input_ids=x[None]).logits[0]
            for t in range(seqlen - 1):
                logps.append(torch.log_softmax(logits[t], -1)[x[t + 1]].item())
    direct = math.exp(-sum(logps) / len(logps))
    got = perplexity(tiny_random_opt, ids, seqlen=seqlen, batch_size=4, progress=False)
    assert got == pytest.approx(direct, rel=1e-5)
    total, count = nll(tiny_random_opt, ids, seqlen=seqlen, progress=False)
    assert count == (100 // seqlen) * (seqlen - 1)


def test_seqlen_longer_than_context_fails(tiny_random_opt):
    with pytest.raises(ValueError, match="seqlen=64 exceeds the model's context of 32"):
        perplexity(tiny_random_opt, torch.zeros(1, 200, dtype=torch.long), seqlen=64)


def test_default_seqlen_is_the_context(tiny_random_opt):
    _, count = nll(tiny_random_opt, torch.zeros(1, 100, dtype=torch.long), progress=False)
    assert count == 3 * 31


def test_unigram_of_uniform_text_is_vocab_size():
    ids = torch.arange(8).repeat(100)
    assert unigram_perplexity(ids, ids, 8) == pytest.approx(8, rel=1e-6)


def test_mean_nll_is_the_perplexitys_log_and_restores_the_mode(tiny_random_opt):
    ids = torch.randint(0, 64, (200,), generator=torch.Generator().manual_seed(0))
    tiny_random_opt.train()
    loss = mean_nll(tiny_random_opt, ids, 32)
    assert tiny_random_opt.training  # put back as it was
    tiny_random_opt.eval()
    assert loss == pytest.approx(torch.log(torch.tensor(perplexity(tiny_random_opt, ids, 32, progress=False))).item())
    first_two = mean_nll(tiny_random_opt, ids, 32, max_windows=2)
    total, count = nll(tiny_random_opt, ids[:64], 32, progress=False)
    assert first_two == pytest.approx(total / count)
    assert evaluate(tiny_random_opt, {"a": ids}, 32) == {"a": round(perplexity(tiny_random_opt, ids, 32, progress=False), 2)}

