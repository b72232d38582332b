"""QMoE's own storage format next to ours, counted to the bit (QMoE section 5).

QMoE (Frantar & Alistarh 2023, arXiv 2310.16795, section 5) stores ternary expert codes with a
FIXED dictionary: the 2^16 most probable sequences of 1..14 ternary pairs under an i.i.d. prior
with P(0) = 0.885 (P(-1) = P(+1) = 0.0575), parsed greedily (longest match), 16-bit codewords,
and per row a 32-bit offset and bf16 wmin / wmax (64 bits). The paper reports 21.11x against
bf16 on i.i.d. codes of that prior (20.07x on switch-c-2048), entropy limit 25.40x.
``qmoe_dictionary`` builds that dictionary (our code, not the paper's); ``DictionaryCode`` of
``ternary_coding`` parses, encodes and decodes it as any other dictionary.

Bit accounting (``bits_report``), per coder, in three steps (bits per parameter):

* ``codes``: codewords only;
* ``codes + rows``: + row metadata. QMoE: 64 bits per row, no per-matrix header (the paper's
  ratio 16 rows cols / (16 codewords + 64 rows)). Ours (``"dictionary"``): the compact layout
  of ``Encoded.to_bytes(rows="compact")``: bf16 wmin / wmax + the row's codeword count in
  ``count_bits`` bits (bit length of the largest count of the matrix), so 32 + 6..8 bits per row (rows of 768..3072 weights)
  instead of 64, plus the 30-byte header of each matrix (240 bits, counted). Random access to a
  row still costs one lookup once the offsets, the running sum of the counts, are computed: one
  prefix sum per matrix at load time;
* ``all``: + the dictionary. Ours: ``Encoded.dictionary_bits`` (stored parent-first, E - 9
  entries of codeword_bits + 4 bits), once per set of matrices; QMoE's: 0, since it is fixed
  and shared by every model. Its decoding table, 2^16 entries x 64 bits = 512 KiB on the GPU,
  is given apart (``table_bits``) for both coders.

Entropy limit (``entropy_derivation``): with P(0) = 0.885 and P(+-1) = 0.0575,
H = -0.885 log2 0.885 - 2 x 0.0575 log2 0.0575 = 0.885 x 0.176251 + 0.115 x 4.120294
= 0.155982 + 0.473834 = 0.629816 bit per weight, and 16 / 0.629816 = 25.404x: the paper's
"theoretical limit" of 25.40x.
"""
from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .coding import SYMBOLS, DictionaryCode, Encoded, as_codes, check_parameters, entropy_bits

QMOE_P0, QMOE_SIZE, QMOE_MAX_PAIRS = 0.885, 2 ** 16, 14
PAPER_IID_RATIO, PAPER_C2048_RATIO, PAPER_ENTROPY_RATIO = 21.11, 20.07, 25.40  # QMoE, section 5
SWITCH_BASE_SHAPES = {"wi": (3072, 768), "wo": (768, 3072)}  # rows x cols = out x in
C2048_SHAPES = {"wi": (6144, 2080), "wo": (2080, 6144)}  # switch-c-2048
_SWITCH_BASE = tuple(SWITCH_BASE_SHAPES.values())
CODERS = ("dictionary", "qmoe")
_NONZERO = np.array([(s // 3 != 1) + (s % 3 != 1) for s in range(SYMBOLS)])  # nonzero weights per pair


def _check_p0(p0) -> float:
    if not (isinstance(p0, (float, int)) and 0 < p0 < 1):
        raise ValueError(f"p0={p0!r}: the probability of a zero must lie strictly between 0 and 1")
    return float(p0)


@functools.lru_cache(maxsize=8)
def qmoe_dictionary(p0: float = QMOE_P0, size: int = QMOE_SIZE, max_pairs: int = QMOE_MAX_PAIRS
                    ) -> DictionaryCode:
    """The ``size`` most probable pair sequences of 1..max_pairs pairs, i.i.d. prior P(0) = p0.

    Entries 0..8 are the single pairs, then the others by non-increasing probability (ties:
    shorter first, then smaller key). Best-first: a child (one pair more) is less probable than
    its parent, and siblings are visited in order of probability, so a heap holding the next
    child of each visited sequence and the next sibling of each visited child yields sequences
    in order, parents first: about 2 pushes per entry (~0.6 s for 2^16). Greedy parse."""
    p0 = _check_p0(p0)
    check_parameters(size, max_pairs, 0, "greedy")
    lp0, lp1 = math.log(p0), math.log((1 - p0) / 2)

    def logp(length, nonzero):  # from integer counts: equal classes tie exactly
        return (2 * length - nonzero) * lp0 + nonzero * lp1

    order = sorted(range(SYMBOLS), key=lambda s: (-logp(1, _NONZERO[s]), s))  # siblings, best first
    first = order[0]
    heap = [(-logp(1, _NONZERO[first]), 1, first + 1, int(_NONZERO[first]), 0)]  # (-logp, len, key, nz, rank)
    out = []
    while heap and len(out) < size - SYMBOLS:
        _, n, key, nz, rank = heapq.heappop(heap)
        if n > 1:
            out.append(key)
        if rank + 1 < SYMBOLS:  # next sibling: same parent, next pair in probability order
            s, t = order[rank], order[rank + 1]
            nz2 = nz - int(_NONZERO[s]) + int(_NONZERO[t])
            heapq.heappush(heap, (-logp(n, nz2), n, key - s + t, nz2, rank + 1))
        if n < max_pairs:  # first child: the most probable pair appended
            nz2 = nz + int(_NONZERO[first])
            heapq.heappush(heap, (-logp(n + 1, nz2), n + 1, 10 * key + first + 1, nz2, 0))
    return DictionaryCode(np.array(list(range(1, SYMBOLS + 1)) + out, np.int64), max_pairs, parse="greedy")


def log2_probabilities(code: DictionaryCode, p0: float = QMOE_P0) -> np.ndarray:
    """(entries,) log2 of each entry's probability under the i.i.d. prior P(0) = p0."""
    p0 = _check_p0(p0)
    valid = np.arange(code.max_pairs) < code.lengths[:, None]  # (E, max_pairs)
    nonzero = (_NONZERO[code.table.astype(np.int64)] * valid).sum(1)
    return (2 * code.lengths - nonzero) * math.log2(p0) + nonzero * math.log2((1 - p0) / 2)


def entropy_derivation(p0: float = QMOE_P0, bf16_bits: int = 16) -> dict:
    """The entropy limit step by step: P(0), P(+-1), the terms of H, H, and 16 / H."""
    p0 = _check_p0(p0)
    p1 = (1 - p0) / 2
    zero_term, nonzero_terms = -p0 * math.log2(p0), -2 * p1 * math.log2(p1)
    H = zero_term + nonzero_terms
    return {"P(0)": p0, "P(-1) = P(+1)": p1, "-P(0) log2 P(0)": zero_term,
            "-2 P(1) log2 P(1)": nonzero_terms, "H (bit/weight)": H, "ratio = 16 / H": bf16_bits / H}


@dataclass(frozen=True, eq=False)
class FormatBits:
    """One coder over a set of matrices: the encodings and every bit they take."""
    coder: str  # "dictionary" (ours, compact rows) or "qmoe" (fixed dictionary, 64 bits a row)
    code: DictionaryCode = field(repr=False)
    encoded: dict = field(repr=False)  # name -> Encoded
    params: int
    rows: int
    codewords: int
    code_bits: int
    row_bits: int  # QMoE: 64 a row; ours: (32 + count_bits) a row
    header_bits: int  # ours: the compact header of each matrix; QMoE: 0 (not in the paper's count)
    dictionary_bits: int  # ours: as stored; QMoE: 0 (fixed, shared)
    table_bits: int  # the flat decoding table (QMoE: 2^16 x 64 bits = 512 KiB)
    verified: int = 0  # matrices decoded bit-exact from their bytes

    @property
    def layout(self) -> str:
        return "offsets" if self.coder == "qmoe" else "compact"

    def bits_per_param(self, counts: str = "rows") -> float:
        """"codes"; "rows": + row metadata (+ headers); "all": + the dictionary."""
        parts = {"codes": 0, "rows": self.row_bits + self.header_bits}
        parts["all"] = parts["rows"] + self.dictionary_bits
        if counts not in parts:
            raise ValueError(f"counts={counts!r}; allowed values are 'codes', 'rows', 'all'")
        return (self.code_bits + parts[counts]) / self.params

    def row(self) -> dict:
        """One line of a table (pandas.DataFrame([...]))."""
        r = self.bits_per_param("rows")
        return {"coder": self.coder, "entries": len(self.code), "codeword bits": self.code.codeword_bits,
                "params": self.params, "codes": self.bits_per_param("codes"), "codes + rows": r,
                "all": self.bits_per_param("all"), "ratio (codes + rows)": 16 / r,
                "row bits / row": self.row_bits / self.rows, "table KiB": self.table_bits / 8 / 1024}


def _tally(coder: str, code: DictionaryCode, encoded: dict, verified: int = 0) -> FormatBits:
    es = list(encoded.values())
    return FormatBits(
        coder, code, encoded, params=sum(e.params for e in es), rows=sum(e.rows for e in es),
        codewords=sum(e.n_codewords for e in es), code_bits=sum(e.code_bits for e in es),
        row_bits=sum(e.row_bits if coder == "qmoe" else e.compact_row_bits for e in es),
        header_bits=0 if coder == "qmoe" else sum(e.compact_header_bits for e in es),
        dictionary_bits=0 if coder == "qmoe" else es[0].dictionary_bits, table_bits=code.table_bits,
        verified=verified)


def _encode_all(code, codes, scales, coder, verify) -> FormatBits:
    encoded = {n: code.encode(q, *scales.get(n, (None, None))) for n, q in codes.items()}
    layout = "offsets" if coder == "qmoe" else "compact"
    verified = 0
    for n, e in encoded.items():
        if not verify:
            continue
        data = e.to_bytes(layout)
        back = Encoded.from_bytes(data)
        if not (np.array_equal(code.decode(back).numpy(), codes[n]) and
                np.array_equal(back.wmin_bf16, e.wmin_bf16) and np.array_equal(back.wmax_bf16, e.wmax_bf16)):
            raise AssertionError(f"{n}: the {coder} stream does not decode to the codes and scales")
        if not 0 <= 8 * len(data) - e.stored_bits(layout) < 8:
            raise AssertionError(f"{n}: {len(data)} bytes for {e.stored_bits(layout)} counted bits")
        verified += 1
    return _tally(coder, code, encoded, verified)


def bits_report(codes: dict, scales: dict | None = None, coders=CODERS, size: int = 2 ** 12,
                max_pairs: int = 14, rounds: int = 2, verify: bool = True) -> dict:
    """Each coder over the matrices ``codes`` (name -> int8 codes, rows x cols): coder -> FormatBits.

    ``scales``: name -> (wmin, wmax), each (rows,), kept in bf16 (default -1 / +1). "dictionary"
    fits one ``DictionaryCode`` (``size`` entries, optimal parse) to all the matrices; "qmoe" uses
    ``qmoe_dictionary()``. With ``verify``, every matrix is serialized, read back, decoded and
    compared bit-exact, codes and scales, and its byte count checked against the counted bits."""
    if not codes:
        raise ValueError("codes is empty: give at least one matrix (name -> codes)")
    for c in coders:
        if c not in CODERS:
            raise ValueError(f"coder {c!r}; allowed values are {', '.join(map(repr, CODERS))}")
    codes = {n: as_codes(q, n) for n, q in codes.items()}
    scales = scales or {}
    out = {}
    for c in coders:
        code = (qmoe_dictionary() if c == "qmoe" else
                DictionaryCode.fit(list(codes.values()), size=size, max_pairs=max_pairs, rounds=rounds))
        out[c] = _encode_all(code, codes, scales, c, verify)
    return out


def iid_codes(rows: int, cols: int, probs: tuple[float, float, float], seed: int = 0) -> torch.Tensor:
    """Random ternary codes with P(-1), P(0), P(+1) = ``probs``: stand-ins of a given shape."""
    g = torch.Generator().manual_seed(seed)
    return (torch.multinomial(torch.tensor(probs), rows * cols, replacement=True, generator=g) - 1
            ).to(torch.int8).reshape(rows, cols)


def paper_statistics_whatif(p0: float = QMOE_P0, shapes=_SWITCH_BASE, seed: int = 0,
                            row_fraction: float = 0.25, size: int = 2 ** 12, verify: bool = True) -> list[dict]:
    """Both coders on i.i.d. codes at the paper's zero share and Switch-base expert shapes.

    One row per coder and matrix, one per coder over all matrices (our dictionary is fitted to
    them all and counted once, in "all"), and the entropy bound (of the
    prior and of the sample); "codes + rows" is the figure to set against 16 / 21.11 = 0.758.
    ``row_fraction`` keeps that share of each shape's rows (default 1/4: 768 x 768 and 192 x 3072,
    1.2M weights, a few seconds on 2 CPU cores; 1.0: full shapes, 4.7M weights): bits per
    parameter with row metadata depend on the row length (cols), not on the row count, and the
    same fraction of every shape keeps each matrix's share of the parameters. What does change:
    our dictionary is fitted to fewer weights, and in "all" its bits are spread over them only."""
    p0 = _check_p0(p0)
    if not 0 < row_fraction <= 1:
        raise ValueError(f"row_fraction={row_fraction!r} must lie in (0, 1]")
    p1 = (1 - p0) / 2
    codes = {}
    for i, (r, c) in enumerate(shapes):
        r = max(1, round(r * row_fraction))
        codes[f"{r}x{c}"] = iid_codes(r, c, (p1, p0, p1), seed + i).numpy()
    report = bits_report(codes, size=size, verify=verify)
    rows = []
    for coder, fb in report.items():
        for n, e in fb.encoded.items():  # "all" only over the set: the dictionary is shared
            rows.append({"matrix": n, **_tally(coder, fb.code, {n: e}).row(), "all": float("nan")})
        rows.append({"matrix": "all", **fb.row()})
    H = entropy_bits(np.concatenate([q.ravel() for q in codes.values()])[None])
    for label, h in (("entropy (prior)", entropy_derivation(p0)["H (bit/weight)"]), ("entropy (sample)", H)):
        rows.append({"matrix": "all", "coder": label, "codes": h, "codes + rows": h, "all": h,
                     "ratio (codes + rows)": 16 / h})
    return rows
