"""QMoE's own format (fixed 2^16-entry dictionary, 64 bits a row) next to ours (compact rows)."""
import math
import time

import numpy as np
import pytest
import torch

from peakllm.compress.qmoe import paper as F
from peakllm.compress.qmoe.coding import COMPACT_HEADER, DictionaryCode, Encoded
from peakllm.compress.qmoe.paper import iid_codes

P885 = (0.0575, 0.885, 0.0575)


@pytest.fixture(scope="module")
def qd():
    F.qmoe_dictionary.cache_clear()
    start = time.perf_counter()
    code = F.qmoe_dictionary()
    return code, time.perf_counter() - start


def test_qmoe_dictionary_is_the_most_probable_prefix_closed_set(qd):
    code, seconds = qd
    assert seconds < 10 and F.qmoe_dictionary() is code  # built once, then cached
    E = len(code)
    assert E == 2 ** 16 and code.codeword_bits == 16 and code.parse == "greedy"
    assert (code.keys[:9] == np.arange(1, 10)).all() and (code.lengths[:9] == 1).all()
    assert code.lengths.max() == 14 and (code.lengths[9:] >= 2).all()
    assert (code.parents[9:] >= 0).all() and (code.parents[9:] < np.arange(9, E)).all()  # parents first
    assert (code.keys[9:] // 10 == code.keys[code.parents[9:]]).all()  # prefix-closed
    lp = F.log2_probabilities(code)
    assert np.isclose(lp[4], 2 * math.log2(0.885)) and np.isclose(lp[0], 2 * math.log2(0.0575))
    rest = np.arange(9, E)  # by probability, ties shorter first, then by key
    assert (rest[np.lexsort((code.keys[rest], code.lengths[rest], -lp[rest]))] == rest).all()
    # nothing left out is more probable: check the frontier (left-out children of entries)
    parents = np.flatnonzero(code.lengths < 14)
    kids = (10 * code.keys[parents, None] + np.arange(1, 10)).ravel()
    out = ~np.isin(kids, code.keys)
    valid = np.arange(14) < code.lengths[:, None]  # nonzero weights of each entry, from its pairs
    nonzero = np.array([(s // 3 != 1) + (s % 3 != 1) for s in range(9)])
    entry_nz = (nonzero[code.table.astype(int)] * valid).sum(1)
    kid_len = np.repeat(code.lengths[parents] + 1, 9)
    kid_nz = np.repeat(entry_nz[parents], 9) + np.tile(nonzero, len(parents))
    kid_lp = (2 * kid_len - kid_nz) * math.log2(0.885) + kid_nz * math.log2(0.0575)
    assert out.sum() > 0 and kid_lp[out].max() <= lp[-1] == lp[9:].min()
    tied = out & (kid_lp == lp[-1])  # left out at the last entry's probability: longer, or later key
    assert ((kid_len[tied] > code.lengths[-1]) | ((kid_len[tied] == code.lengths[-1])
                                                  & (kids[tied] > code.keys[-1]))).all()


def test_qmoe_dictionary_parameters():
    small = F.qmoe_dictionary(p0=0.5, size=64, max_pairs=3)
    assert len(small) == 64 and small.lengths.max() <= 3
    lp = F.log2_probabilities(small, 0.5)
    assert (np.diff(lp[9:]) <= 1e-12).all()
    for bad in (dict(p0=1.0), dict(p0=0), dict(size=1000), dict(max_pairs=0)):
        with pytest.raises(ValueError):
            F.qmoe_dictionary(**bad)


def test_qmoe_format_reaches_the_papers_ratio(qd):
    code, _ = qd
    e = code.encode(iid_codes(1024, 1024, P885, seed=0))
    codes = e.code_bits / e.params
    # codewords alone: within 3% of 21.11x; the 64 bits of each 1024-weight row cost 0.0625 bit
    assert abs(16 / codes / F.PAPER_IID_RATIO - 1) < 0.03
    assert e.compression_ratio() == pytest.approx(16 / (codes + 64 / 1024))
    assert 19.5 < e.compression_ratio() < 20.5  # 19.9x: 1024-weight rows pay 6% more than...
    # ...switch-c-2048's shapes (rows of 2080 and 6144 weights, equal parameter shares): 21.1x
    per_matrix = []
    for i, (_, cols) in enumerate(F.C2048_SHAPES.values()):
        m = code.encode(iid_codes(64, cols, P885, seed=1 + i))
        per_matrix.append((m.code_bits + 64 * m.rows) / m.params)  # per parameter: row count drops out
    assert abs(16 / np.mean(per_matrix) / F.PAPER_IID_RATIO - 1) < 0.01


@pytest.mark.parametrize("shape", [(37, 101), (5, 1), (16, 64)])
def test_both_formats_decode_bit_exact(qd, shape):
    code, _ = qd
    g = torch.Generator().manual_seed(sum(shape))
    q = iid_codes(*shape, P885, seed=shape[1])
    wmin, wmax = -torch.rand(shape[0], generator=g), torch.rand(shape[0], generator=g)
    fitted = DictionaryCode.fit(q, size=2 ** 8, max_pairs=6)
    for c in (code, fitted):
        e = c.encode(q, wmin, wmax)
        for layout in ("offsets", "compact"):
            back = Encoded.from_bytes(e.to_bytes(layout))
            assert torch.equal(c.decode(back), q) and torch.equal(c.decode(e.to_bytes(layout)), q)
            assert (back.wmin_bf16 == e.wmin_bf16).all() and (back.wmax_bf16 == e.wmax_bf16).all()
            assert (back.offsets == e.offsets).all() and back.stream == e.stream
    rep = F.bits_report({"a": q, "b": iid_codes(8, 33, P885, seed=9)}, {"a": (wmin, wmax)}, size=2 ** 8)
    assert rep["qmoe"].verified == 2 and rep["dictionary"].verified == 2


@pytest.fixture(scope="module")
def compact():
    q = iid_codes(24, 75, P885, seed=4)
    code = DictionaryCode.fit(q, size=2 ** 8, max_pairs=6)
    e = code.encode(q, -torch.ones(24), torch.ones(24))
    return code, e, e.to_bytes("compact")


def test_compact_rows_with_a_shifted_count_raise(compact):
    import dataclasses

    code, e, _ = compact
    shifted = e.offsets.copy()
    shifted[3] += 1  # row 2 loses its last codeword to row 3: counts still sum to n, CRC valid
    with pytest.raises(ValueError, match="row 2 decodes to"):
        code.decode(dataclasses.replace(e, offsets=shifted).to_bytes("compact"))
    with pytest.raises(ValueError, match="rows='dense'"):
        e.to_bytes("dense")


@pytest.mark.parametrize("cols", [768, 3072])
def test_compact_row_metadata_is_smaller_and_counted_exactly(qd, cols):
    code, _ = qd
    q = iid_codes(96, cols, P885, seed=cols)
    for c in (code, DictionaryCode.fit(q, size=2 ** 10, rounds=0)):
        e = c.encode(q)
        assert e.count_bits == int(e.counts.max()).bit_length() and e.counts.sum() == e.n_codewords
        assert e.compact_row_bits / e.rows == 32 + e.count_bits < 64  # 38 to 41 bits a row
        data = e.to_bytes("compact")
        pad = -(e.count_bits * e.rows + e.code_bits) % 8  # one bit stream, padded once to a byte
        assert 8 * len(data) - pad == e.stored_bits("compact")
        assert e.stored_bits("compact") == 8 * COMPACT_HEADER.size + (32 + e.count_bits) * e.rows + e.code_bits
        assert 8 * len(e.to_bytes()) >= e.stored_bits("offsets") > e.stored_bits("compact")


def test_bits_report_accounting(qd):
    code, _ = qd
    codes = {"wi": iid_codes(48, 96, P885, seed=1), "wo": iid_codes(24, 192, P885, seed=2)}
    rep = F.bits_report(codes, size=2 ** 9)
    q, d = rep["qmoe"], rep["dictionary"]
    assert q.code is code and q.params == d.params == 2 * 48 * 96 and q.rows == d.rows == 72
    assert q.row_bits == 64 * 72 and q.header_bits == 0 and q.dictionary_bits == 0
    assert q.table_bits == 2 ** 16 * 64 == 8 * 512 * 1024
    assert q.bits_per_param("rows") == pytest.approx((16 * q.codewords + 64 * 72) / q.params)
    assert q.bits_per_param("all") == q.bits_per_param("rows")
    assert d.row_bits == sum((32 + e.count_bits) * e.rows for e in d.encoded.values())
    assert d.header_bits == 2 * 8 * COMPACT_HEADER.size
    assert d.dictionary_bits == (len(d.code) - 9) * (d.code.codeword_bits + 4)
    assert d.bits_per_param("all") - d.bits_per_param("rows") == pytest.approx(d.dictionary_bits / d.params)
    assert d.bits_per_param("codes") < q.bits_per_param("codes")  # fitted, optimal parse, shorter words
    with pytest.raises(ValueError, match="coder 'zip'"):
        F.bits_report(codes, coders=("zip",))
    with pytest.raises(ValueError, match="counts='bytes'"):
        d.bits_per_param("bytes")


def test_entropy_limit_is_the_papers():
    steps = F.entropy_derivation(0.885)
    assert steps["P(-1) = P(+1)"] == pytest.approx(0.0575)
    assert steps["H (bit/weight)"] == pytest.approx(0.629816, abs=1e-6)
    assert steps["H (bit/weight)"] == pytest.approx(steps["-P(0) log2 P(0)"] + steps["-2 P(1) log2 P(1)"])
    assert steps["ratio = 16 / H"] == pytest.approx(25.40, abs=0.05)  # the paper's entropy limit
    assert F.entropy_derivation(1 / 3)["ratio = 16 / H"] == pytest.approx(16 / math.log2(3))
    with pytest.raises(ValueError, match="p0=1.5"):
        F.entropy_derivation(1.5)


def test_whatif_table():
    rows = F.paper_statistics_whatif(row_fraction=1 / 16)
    by = {(r["coder"], r["matrix"]): r for r in rows}
    assert {m for c, m in by if c == "qmoe"} == {"192x768", "48x3072", "all"}
    assert by["entropy (prior)", "all"]["ratio (codes + rows)"] == pytest.approx(25.40, abs=0.01)
    q, d = by["qmoe", "all"], by["dictionary", "all"]
    assert 0.76 < q["codes + rows"] < 0.82  # 768-weight rows of wi: 20.2x on Switch-base shapes
    assert d["codes + rows"] < q["codes + rows"] and d["row bits / row"] < 64
    assert by["qmoe", "48x3072"]["ratio (codes + rows)"] == pytest.approx(21.11, rel=0.03)


def test_one_row_coded_by_hand_is_the_encoders_stream():
    """Notebook 20's hand-built row: pair symbols, greedy longest match, 16 bits per codeword + 64 per row."""
    D = F.qmoe_dictionary()
    row = iid_codes(1, 256, (0.0575, 0.885, 0.0575), seed=3).numpy()[0]
    S = 3 * (row[0::2].astype(int) + 1) + row[1::2] + 1
    index = {tuple(D.table[e, :D.lengths[e]]): e for e in range(len(D))}
    words, p = [], 0
    while p < len(S):
        n = max(k for k in range(1, min(14, len(S) - p) + 1) if tuple(S[p:p + k]) in index)
        words, p = words + [index[tuple(S[p:p + n])]], p + n
    enc = D.encode(row[None])
    assert words == enc.codes.tolist()
    assert 16 * len(words) + 64 == enc.code_bits + enc.row_bits
    assert (np.concatenate([D.table[w, :D.lengths[w]] for w in words]) == S).all()
