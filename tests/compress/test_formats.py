"""Storage formats counted by hand: what each format stores for a small matrix, to the byte."""
import pytest
import torch

from peakllm.compress import formats


def two_four(rows: int, cols: int) -> torch.Tensor:
    """A (rows, cols) matrix of nonzeros with a valid 2:4 pattern: half of its weights zero."""
    W = torch.arange(1, rows * cols + 1, dtype=torch.float32).reshape(rows, cols)
    return W * (torch.arange(cols) % 4 < 2)


def test_storage_bytes_of_each_format_counted_by_hand():
    W = two_four(4, 8)                       # 32 positions, 16 nonzeros
    assert formats.storage_bytes(W, "dense") == 32 * 2
    assert formats.storage_bytes(W, "csr") == 16 * (2 + 2) + 4 * (4 + 1)   # values + 16-bit columns, row offsets
    assert formats.storage_bytes(W, "bitmask") == 16 * 2 + 32 // 8          # values + one bit a position
    assert formats.storage_bytes(W, "2:4") == 16 * 2 + (16 * 2) // 8        # half the values + 2 bits each
    assert formats.storage_bytes(W, "dense", value_bytes=4) == 128
    assert formats.storage_bytes(torch.ones(3, 5), "bitmask") == 15 * 2 + 2  # 15 bits round up to 2 bytes


def test_csr_pays_only_where_the_matrix_is_sparse_enough():
    dense, sparse = torch.ones(64, 64), torch.zeros(64, 64)
    sparse[:, :8] = 1.0                      # 87.5% zeros
    assert formats.storage_bytes(dense, "csr") > formats.storage_bytes(dense, "dense")
    assert formats.storage_bytes(sparse, "csr") < formats.storage_bytes(sparse, "dense")


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match="fmt='coo'.*'dense', 'csr', 'bitmask', '2:4'"):
        formats.storage_bytes(torch.ones(2, 4), "coo")


@pytest.mark.parametrize("bits,expected", [(4, (3 * 10 * 4 + 7) // 8 + 3 * 4), (3, (3 * 10 * 3 + 7) // 8 + 3 * 4),
                                           ("ternary", (3 * 10 * 2 + 7) // 8 + 3 * 4), (8, 30 + 12)])
def test_packed_bytes_is_the_packed_grid_plus_a_scale_and_zero_per_row(bits, expected):
    assert formats.packed_bytes(3, 10, bits) == expected


def test_packed_bytes_refuses_a_grid_it_does_not_know():
    with pytest.raises(ValueError, match="bits"):
        formats.packed_bytes(3, 10, 5)
