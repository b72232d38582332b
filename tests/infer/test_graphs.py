"""The static-cache decode loop (``infer.graphs``): the tokens of ``generate``, without a graph on CPU."""
import pytest
import torch

from peakllm.infer import decoding, graphs


@pytest.fixture(scope="module")
def tiny():
    from peakllm.models import load_model

    return load_model("tiny-opt", device="cpu").float()


@pytest.mark.parametrize("batch,prompt,new", [(1, 16, 24), (3, 5, 9)])
def test_static_greedy_yields_the_tokens_of_generate(tiny, batch, prompt, new):
    ids = torch.randint(4, tiny.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(batch))
    ours = graphs.static_greedy(tiny, ids, new)
    theirs = decoding.generate(tiny, ids, new).sequences
    assert ours.shape == (batch, prompt + new)
    assert torch.equal(ours, theirs)
    assert len(set(ours[0, prompt:].tolist())) > 1  # a trained model: the check compares real continuations


def test_static_greedy_refuses_a_graph_off_cuda_and_bad_lengths(tiny):
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="graph=True needs a CUDA device"):
        graphs.static_greedy(tiny, ids, 4, graph=True)
    with pytest.raises(ValueError, match="new_tokens"):
        graphs.static_greedy(tiny, ids, 0)


def test_benchmark_times_both_paths_and_compares_their_tokens(tiny):
    ids = torch.randint(4, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
    r = graphs.benchmark(tiny, ids, new_tokens=8, repeats=1)
    assert r["same_tokens"] and r["graph"] is False
    assert set(r["tokens_per_s"]) == {"generate", "static"} and all(v > 0 for v in r["tokens_per_s"].values())
