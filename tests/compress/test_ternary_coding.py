import dataclasses
import math

import numpy as np
import pytest
import torch

from peakllm.compress.qmoe.coding import (
    COMPACT_HEADER,
    HEADER,
    DictionaryCode,
    Encoded,
    compression_ratio,
    entropy_bits,
    from_codes,
    lzma_bits,
    ternary_codes,
)
from peakllm.compress.quant import Quantizer


def iid(rows, cols, p0, seed=0):
    """i.i.d. ternary codes with P(0) = p0 and P(+1) = P(-1)."""
    g = np.random.default_rng(seed)
    return g.choice(np.array([-1, 0, 1], np.int8), size=(rows, cols), p=[(1 - p0) / 2, p0, (1 - p0) / 2])


def h(p0):
    return -p0 * math.log2(p0) - (1 - p0) * math.log2((1 - p0) / 2)


@pytest.fixture(scope="module")
def small():
    q = iid(24, 37, 0.8, seed=3)  # odd columns: one padded pair per row
    code = DictionaryCode.fit(q, size=2 ** 8, max_pairs=6)
    return q, code, code.encode(q)


@pytest.mark.parametrize("p0", [0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("parse", ["optimal", "greedy"])
def test_round_trip_is_exact(p0, parse):
    q = iid(96, 129, p0, seed=int(100 * p0))
    code = DictionaryCode.fit(q, size=2 ** 10, parse=parse)
    enc = code.encode(torch.from_numpy(q))
    out = code.decode(enc.to_bytes())
    assert out.dtype == torch.int8 and out.shape == q.shape and (out.numpy() == q).all()


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (5, 2), (7, 3), (4, 29), (2, 64)])
def test_tiny_and_odd_shapes_round_trip(shape):
    q = iid(*shape, 0.7, seed=sum(shape))
    code = DictionaryCode.fit(q, size=16, max_pairs=3)
    assert (code.decode(code.encode(q)).numpy() == q).all()


def test_dictionary_from_other_data_and_expert_lists():
    experts = [iid(32, 48, 0.85, seed=s) for s in range(3)] + [iid(16, 31, 0.85, seed=9)]
    code = DictionaryCode.fit(experts, size=2 ** 9)
    assert len(code) <= 2 ** 9 and code.codeword_bits == math.ceil(math.log2(len(code)))
    for q in experts + [iid(8, 50, 0.6, seed=11)]:
        assert (code.decode(code.encode(q)).numpy() == q).all()


def test_bit_count_matches_the_encoded_bytes(small):
    q, code, enc = small
    pad = 8 * len(enc.stream) - enc.code_bits
    assert 0 <= pad < 8 and enc.code_bits == enc.n_codewords * code.codeword_bits
    assert len(enc.to_bytes()) * 8 == enc.header_bits + enc.row_bits + enc.code_bits + pad
    assert enc.header_bits == 8 * HEADER.size and enc.row_bits == 64 * q.shape[0]
    assert enc.dictionary_bits == (len(code) - 9) * (code.codeword_bits + 4)
    assert enc.bits_per_param("codes") == enc.code_bits / q.size
    assert enc.bits_per_param("all") == (enc.code_bits + enc.row_bits + enc.dictionary_bits) / q.size
    stored = code.codeword_bits * enc.n_codewords + 64 * q.shape[0]
    assert enc.compression_ratio() == 16 * q.size / stored


def test_paper_ratio_formula_and_table_size():
    assert compression_ratio(rows=2, cols=8, codewords=1) == 16 * 16 / (16 + 128)
    assert compression_ratio(10, 100, 50, bf16_bits=32) == 2 * compression_ratio(10, 100, 50)
    code = DictionaryCode(np.arange(1, 10))
    assert code.table_bits == 9 * 64  # 64 bits per entry of 14 pairs: 2^16 entries = 512 KiB


def test_dictionary_is_a_trie_stored_parent_first(small):
    _, code, _ = small
    E = len(code)
    assert (code.parents[:9] == -1).all() and (code.parents[9:] < np.arange(9, E)).all()
    assert (code.parents[9:] >= 0).all()
    assert (code.lengths[9:] == code.lengths[code.parents[9:]] + 1).all()
    inherited = np.arange(code.max_pairs) < code.lengths[code.parents[9:], None]  # (E - 9, max_pairs)
    assert (code.table[9:] == code.table[code.parents[9:]])[inherited].all()  # entry = parent + 1 pair
    assert code.table.max() < 9 and len(set(code.keys.tolist())) == E


def test_entropy_bound_on_known_distributions():
    q = np.array([[0] * 50 + [1] * 25 + [-1] * 25])
    assert entropy_bits(q) == pytest.approx(1.5)
    assert entropy_bits(np.zeros((3, 4), np.int8)) == 0.0
    assert entropy_bits(np.array([[1, 0, -1] * 4])) == pytest.approx(math.log2(3))
    big = iid(256, 256, 0.885, seed=1)
    assert entropy_bits(big) == pytest.approx(h(0.885), abs=0.01)
    assert entropy_bits(big, pairs=True) == pytest.approx(entropy_bits(big), abs=0.01)  # i.i.d.
    assert entropy_bits(np.array([[1, 1, 0, 0]]), pairs=True) == pytest.approx(0.5)  # pairs 11, 00


def test_dictionary_code_between_entropy_and_two_bits():
    for p0 in (0.7, 0.885):
        q = iid(256, 256, p0, seed=2)
        enc = DictionaryCode.fit(q, size=2 ** 12).encode(q)
        H = entropy_bits(q)
        assert H - 0.02 <= enc.bits_per_param("codes") <= min(2.0, 1.3 * H)
        extra = (64 * 256 + (len(DictionaryCode.fit(q, size=2 ** 12)) - 9) * 16) / q.size
        assert enc.bits_per_param("all") == pytest.approx(enc.bits_per_param("codes") + extra)


def test_optimal_parse_never_needs_more_codewords():
    q = iid(64, 200, 0.885, seed=4)
    optimal = DictionaryCode.fit(q, size=2 ** 10, rounds=1)
    greedy = DictionaryCode(optimal.keys, optimal.max_pairs, parse="greedy")
    assert optimal.encode(q).n_codewords <= greedy.encode(q).n_codewords
    assert (greedy.decode(optimal.encode(q)).numpy() == q).all()  # one decoder for both


def test_lzma_baseline():
    q = iid(128, 128, 0.885, seed=5)
    bits = lzma_bits(torch.from_numpy(q))
    assert bits % 8 == 0 and 0.5 * entropy_bits(q) < bits / q.size < 2.0


@pytest.mark.parametrize("rows", ["offsets", "compact"])
def test_every_flipped_byte_is_detected(small, rows):
    q, code, enc = small
    data = enc.to_bytes(rows)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        with pytest.raises(ValueError):
            code.decode(bytes(bad))


@pytest.mark.parametrize("rows", ["offsets", "compact"])
@pytest.mark.parametrize("keep", [0, 3, "header", "header + 10", -1])
def test_truncated_or_padded_stream_raises(small, rows, keep):
    _, code, enc = small
    data = enc.to_bytes(rows)
    header = (HEADER if rows == "offsets" else COMPACT_HEADER).size
    keep = {"header": header, "header + 10": header + 10}.get(keep, keep)
    with pytest.raises(ValueError, match="truncated|magic"):
        code.decode(data[:keep])
    with pytest.raises(ValueError, match="announces"):
        code.decode(data + b"\0")


def _pack_like(enc, codes):
    """The codeword stream of ``codes`` at enc's codeword width (MSB first)."""
    bits = (np.asarray(codes)[:, None] >> np.arange(enc.codeword_bits - 1, -1, -1)) & 1
    return np.packbits(bits.astype(np.uint8).ravel()).tobytes()


def test_semantic_corruption_raises_even_with_a_valid_crc():
    q = iid(12, 40, 0.8, seed=6)
    code = DictionaryCode(DictionaryCode.fit(q, size=2 ** 8, max_pairs=4).keys[:200], max_pairs=4)
    enc = code.encode(q)
    assert code.codeword_bits == 8 and len(code) == 200
    codes = enc.codes.copy()
    cases = {"outside the dictionary": np.where(np.arange(len(codes)) == 5, 250, codes)}
    other = np.argmax(code.lengths != code.lengths[codes[0]])  # an entry of another length
    cases["row 0 decodes to"] = np.concatenate([[other], codes[1:]])
    for message, bad in cases.items():
        stream = Encoded.from_bytes(dataclasses.replace(enc, stream=_pack_like(enc, bad)).to_bytes())
        with pytest.raises(ValueError, match=message):
            code.decode(stream)
    shifted, falling = enc.offsets.copy(), enc.offsets.copy()
    shifted[4] += 1
    falling[4] = falling[2]
    with pytest.raises(ValueError, match="row 3 decodes to"):
        code.decode(dataclasses.replace(enc, offsets=shifted).to_bytes())
    with pytest.raises(ValueError, match="row offsets must rise"):
        code.decode(dataclasses.replace(enc, offsets=falling).to_bytes())
    with pytest.raises(ValueError, match="bytes"):
        code.decode(dataclasses.replace(enc, n_codewords=enc.n_codewords + 7))
    with pytest.raises(ValueError, match="another dictionary"):
        DictionaryCode.fit(iid(12, 40, 0.5, seed=7), size=2 ** 8, max_pairs=4).decode(enc)


def test_nonzero_padding_column_raises():
    q = iid(4, 9, 0.5, seed=8)
    code = DictionaryCode(np.arange(1, 10), max_pairs=1)  # one pair per codeword
    enc = code.encode(q)
    codes = enc.codes.copy()
    codes[enc.offsets[1] - 1] = 5  # the last pair of row 0 becomes (0, +1)
    with pytest.raises(ValueError, match="padding"):
        code.decode(dataclasses.replace(enc, stream=_pack_like(enc, codes)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=100), "size=100"), (dict(size=8), "size=8"), (dict(size=2.0 ** 10), "size="),
    (dict(max_pairs=0), "max_pairs=0"), (dict(max_pairs=19), "max_pairs=19"),
    (dict(rounds=-1), "rounds=-1"), (dict(parse="lazy"), "parse='lazy'")])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DictionaryCode.fit(iid(4, 8, 0.8), **kwargs)


@pytest.mark.parametrize("q,match", [
    (np.array([[0, 2, 1]]), "q holds 2; allowed values are -1, 0, \\+1"),
    (np.array([[0.5, 0.0]]), "q holds 0.5"), (np.zeros(6), "q must be .*2-D"),
    (np.zeros((2, 3, 4)), "q must be .*2-D"), (np.zeros((0, 4)), "q must be a non-empty")])
def test_bad_codes_raise(small, q, match):
    _, code, _ = small
    for call in (code.encode, DictionaryCode.fit, entropy_bits, lzma_bits):
        with pytest.raises(ValueError, match=match):
            call(q)


def test_other_bad_inputs(small):
    q, code, enc = small
    with pytest.raises(ValueError, match="counts='bits'"):
        enc.bits_per_param("bits")
    with pytest.raises(ValueError, match="wmin must have shape"):
        code.encode(q, wmin=np.ones(3))
    W = torch.tensor([[0.5, 0.0, -0.25], [0.3, 0.1, 0.0]])
    with pytest.raises(ValueError, match=r"W\[1, 1\] = 0.1.* row 1's ternary values"):
        ternary_codes(W, torch.tensor([-0.25, 0.0]), torch.tensor([0.5, 0.3]))
    with pytest.raises(ValueError, match="W must be 2-D"):
        ternary_codes(W[0], -1.0, 1.0)


def test_codes_of_a_ternary_quantizer_round_trip():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(48, 65, generator=g)
    Q = Quantizer("ternary").fit(W)
    Wq = Q.quantize(W)
    q = ternary_codes(Wq, Q.wmin, Q.wmax)
    assert q.dtype == torch.int8 and set(q.unique().tolist()) == {-1, 0, 1}
    assert torch.equal(from_codes(q, Q.wmin, Q.wmax), Wq)
    assert torch.equal(from_codes(q, Q.wmin[:, 0], Q.wmax[:, 0]), Wq)  # (rows,) works too
    code = DictionaryCode.fit(q, size=2 ** 8)
    enc = code.encode(q, Q.wmin, Q.wmax)
    back = Encoded.from_bytes(enc.to_bytes())
    lo, hi = back.scales()
    assert torch.equal(lo, Q.wmin.bfloat16().float()) and torch.equal(hi, Q.wmax.bfloat16().float())
    assert torch.equal(code.decode(back), q)
    assert torch.allclose(from_codes(code.decode(back), lo, hi), Wq, rtol=2 ** -8, atol=0)
