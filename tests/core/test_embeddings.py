"""Sentence embeddings: the pooling of all-MiniLM-L6-v2 and the scores compression is judged by."""
import pytest
import torch

from peakllm.core.embeddings import cosine_to, mean_pool, recall_at_1


def test_mean_pool_ignores_padding():
    """The same sentence padded to twice its length (garbage hidden states at the pads) pools alike."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, 5, 8, generator=g)                                        # (N, T, D)
    padded = torch.cat([h, 100 * torch.randn(1, 5, 8, generator=g)], dim=1)       # (N, 2T, D)
    mask, mask2 = torch.ones(1, 5, dtype=torch.long), torch.tensor([[1] * 5 + [0] * 5])
    e, e2 = mean_pool(h, mask), mean_pool(padded, mask2)
    assert torch.allclose(e, e2, atol=1e-6)
    assert torch.allclose(e.norm(dim=1), torch.ones(1)) and torch.allclose(e, torch.nn.functional.normalize(h.mean(1)))


def test_recall_at_1_counts_queries_whose_own_counterpart_is_nearest():
    emb = torch.eye(6) + 0.1                                                      # 6 distinct directions
    assert recall_at_1(emb, emb) == 1.0
    assert recall_at_1(emb, emb.roll(1, dims=0)) == 0.0                           # every counterpart moved away
    half = torch.cat([emb[:3], emb[3:].roll(1, dims=0)])                          # 3 of 6 still in place
    assert recall_at_1(emb, half) == 0.5


def test_cosine_to_identical_embeddings_is_one_and_shapes_must_agree():
    emb = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    cos, mean = cosine_to(emb, emb.clone())
    assert cos.shape == (4,) and torch.allclose(cos, torch.ones(4)) and mean == pytest.approx(1.0)
    assert cosine_to(emb, -emb)[1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one shape"):
        cosine_to(emb, emb[:3])
    with pytest.raises(ValueError, match="one shape"):
        recall_at_1(emb, emb[:3])


def test_neighbour_agreement_is_one_for_the_reference_and_drops_when_neighbours_change():
    import torch

    from peakllm.core import embeddings

    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert embeddings.neighbour_agreement(e, e) == 1.0
    swapped = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # rows 1 and 2 trade places
    assert embeddings.neighbour_agreement(e, swapped) < 1.0


def test_neighbour_table_marks_a_neighbour_that_moved():
    import torch

    from peakllm.core import embeddings

    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    dense = embeddings.nearest(e)
    assert dense.tolist() == [1, 0, 3, 2]
    moved = dense.clone()
    moved[0] = 2
    t = embeddings.neighbour_table(["a", "b", "c", "d"], {"dense": dense, "pruned": moved}, queries=2)
    assert t.loc["a", "dense"] == "b" and t.loc["a", "pruned"] == "* c" and t.loc["b", "pruned"] == "a"
