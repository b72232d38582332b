"""Sub-1-bit storage of ternary weights: a QMoE-style dictionary code (QMoE section 5).

QMoE (Frantar & Alistarh 2023, arXiv 2310.16795) rounds each expert row r to {wmin_r, 0, wmax_r};
the codes ``q`` are -1 / 0 / +1, about 86-89% of them zero. Section 5 stores them so that a GPU
decodes them fast: weights taken in pairs (9 symbols), a dictionary of 2^16 entries holding the
most probable sequences of up to 14 pairs, per row a stream of fixed-width 16-bit codewords
(dictionary indices), and per row a 32-bit stream offset plus bf16 wmin / wmax (64 bits). The
ratio against bf16 is (16 * rows * cols) / (16 * codewords + 64 * rows).

This module's own design (no code from the QMoE repository):

* pair symbol ``s = 3 (a + 1) + (b + 1)`` (0..8) for columns (2j, 2j + 1); an odd column count
  is padded with a zero column, which the decoder checks;
* dictionary (``DictionaryCode.fit``): the 9 single pairs, then the ``size - 9`` most frequent
  n-grams of pair symbols (n = 2..max_pairs, inside rows; ties: shorter first). A prefix occurs
  wherever its extension does, so the set is prefix-closed: a trie whose every node is a
  codeword. ``rounds`` refits count n-grams only where codewords start in the last parse; the
  dictionary giving the fewest codewords wins;
* parse: ``"optimal"`` (default) takes the fewest codewords per row (dynamic programming from
  the row's end: with fixed-width codewords, the shortest stream); ``"greedy"`` the longest
  match at each step, as in the paper. Both decode the same way;
* dictionary as stored (``Encoded.dictionary_bits``): entries in rank order, parents first, so
  entry e > 8 is (parent codeword, last pair symbol): codeword_bits + 4 bits; the 9 single pairs
  are implicit. ``DictionaryCode.table_bits`` is the flat GPU table instead: 4 * max_pairs + 8
  bits per entry, i.e. 64 bits and 512 KiB for 2^16 entries of 14 pairs as in QMoE;
* row metadata, two layouts (``Encoded.to_bytes(rows=...)``, one ``from_bytes`` for both):
  ``"offsets"`` is QMoE's 64 bits per row (32-bit offset, bf16 wmin, bf16 wmax); ``"compact"``
  keeps bf16 wmin / wmax (32 bits) and the row's codeword COUNT in ``count_bits`` bits, the bit
  length of the matrix's largest count (6 to 8 bits for rows of 768 to 3072 weights at
  P(0) = 0.885): 38 to 40 bits per row instead of 64. Random access per row survives: the
  counts have a fixed width, and the offsets are their running sum, one prefix sum per matrix
  at load time (a GPU scan); row r's codewords start at bit offset[r] * codeword_bits. Per
  matrix a 30-byte header (``COMPACT_HEADER``: magic, rows, cols, codeword width, count width,
  dictionary size, codewords, dictionary CRC32, CRC32); counts and codewords are one bit
  stream, zero-padded once to a byte.

The bound is the zero-order entropy ``entropy_bits(q)`` (bits per weight of i.i.d. -1/0/+1);
``lzma_bits`` is the generic-compressor baseline (adaptive, so near that bound on i.i.d. codes,
but without random access to rows).
"""
from __future__ import annotations

import lzma
import zlib

import numpy as np
import torch

from .stream import (  # noqa: F401
    COMPACT_HEADER,
    COMPACT_MAGIC,
    HEADER,
    MAGIC,
    ROW_BITS,
    ROW_LAYOUTS,
    SYMBOLS,
    Encoded,
    as_column,
    compression_ratio,
    from_bits,
    pack_bits,
    to_bf16_bits,
    unpack_bits,
)

PARSES = ("optimal", "greedy")
MAX_PAIRS = 18  # n-gram keys are base-10 int64 with one digit (s + 1) per pair



def ternary_codes(W: torch.Tensor, wmin, wmax) -> torch.Tensor:
    """int8 codes of a ternary matrix W (rows x cols): wmin -> -1, 0 -> 0, wmax -> +1."""
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D (rows x cols), got shape {tuple(W.shape)}")
    lo = as_column(wmin, W.shape[0], "wmin", W.dtype).to(W.device)  # (rows, 1)
    hi = as_column(wmax, W.shape[0], "wmax", W.dtype).to(W.device)
    is_hi, is_0 = W == hi, W == 0
    bad = ~(is_hi | is_0 | (W == lo))
    if bad.any():
        r, c = bad.nonzero()[0].tolist()
        raise ValueError(f"W[{r}, {c}] = {W[r, c].item()} is none of row {r}'s ternary values "
                         f"{{wmin={lo[r, 0].item()}, 0, wmax={hi[r, 0].item()}}}")
    return torch.where(is_0, 0, torch.where(is_hi, 1, -1)).to(torch.int8)  # (rows, cols)


def from_codes(q, wmin, wmax) -> torch.Tensor:
    """Weights from codes: -1 -> wmin, 0 -> 0, +1 -> wmax (float, wmin's dtype)."""
    q = torch.from_numpy(as_codes(q))
    dtype = wmin.dtype if torch.is_tensor(wmin) and wmin.is_floating_point() else torch.float32
    lo, hi = as_column(wmin, q.shape[0], "wmin", dtype), as_column(wmax, q.shape[0], "wmax", dtype)
    return torch.where(q == 1, hi, torch.where(q == -1, lo, torch.zeros((), dtype=dtype)))


def as_codes(q, name: str = "q") -> np.ndarray:
    """Checked int8 numpy copy of ternary codes (rows x cols, values -1/0/+1)."""
    a = q.detach().cpu().numpy() if torch.is_tensor(q) else np.asarray(q)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows x cols), got shape {a.shape}")
    ok = np.isin(a, (-1, 0, 1))
    if not ok.all():
        raise ValueError(f"{name} holds {a[~ok].flat[0].item()!r}; allowed values are -1, 0, +1")
    return a.astype(np.int8)


def pair_symbols(a: np.ndarray) -> np.ndarray:
    """(rows, ceil(cols/2)) int64 pair symbols 3 (a + 1) + (b + 1); odd cols padded with 0."""
    if a.shape[1] % 2:
        a = np.concatenate([a, np.zeros((a.shape[0], 1), np.int8)], axis=1)
    return 3 * (a[:, 0::2].astype(np.int64) + 1) + a[:, 1::2] + 1


def entropy_bits(q, pairs: bool = False) -> float:
    """Zero-order entropy in bits per weight: of -1/0/+1 (the bound), or H(pair symbol) / 2."""
    a = as_codes(q)
    sym, per = (pair_symbols(a), 2) if pairs else (a.astype(np.int64) + 1, 1)
    p = np.bincount(sym.ravel(), minlength=SYMBOLS) / sym.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() / per)


def lzma_bits(q) -> int:
    """Bits of stdlib lzma (xz, preset 9 | EXTREME) on the codes, 4 per byte in base 3.

    Four per byte beats pairs-as-bytes (0..8) on i.i.d. codes: 0.669 vs 0.743 bits/weight at
    P(0) = 0.885, 1.534 vs 1.582 at P(0) = 0.5 (1024 x 1024)."""
    t = as_codes(q).ravel().astype(np.uint8) + 1
    t = np.concatenate([t, np.ones(-len(t) % 4, np.uint8)]).reshape(-1, 4)
    packed = (t @ np.array([27, 9, 3, 1], np.uint8)).astype(np.uint8).tobytes()
    return 8 * len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME))


def check_parameters(size, max_pairs, rounds, parse) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if not (is_int(size) and 16 <= size <= 2 ** 24 and size & (size - 1) == 0):
        raise ValueError(f"size={size!r}: allowed values are powers of two from 16 to 2**24")
    if not (is_int(max_pairs) and 1 <= max_pairs <= MAX_PAIRS):
        raise ValueError(f"max_pairs={max_pairs!r}: allowed values are integers 1..{MAX_PAIRS}")
    if not (is_int(rounds) and rounds >= 0):
        raise ValueError(f"rounds={rounds!r}: allowed values are integers >= 0")
    if parse not in PARSES:
        raise ValueError(f"parse={parse!r}: allowed values are {', '.join(map(repr, PARSES))}")


def _ngram_keys(S: np.ndarray, max_pairs: int):
    """(n, keys (rows, P - n + 1)), n = 1..max_pairs: the n pairs from each column as digits s + 1."""
    k = S + 1
    for n in range(1, min(max_pairs, S.shape[1]) + 1):
        if n > 1:
            k = k[:, :-1] * 10 + S[:, n - 1:] + 1
        yield n, k


def _most_frequent(S_list, size: int, max_pairs: int, starts=None) -> np.ndarray:
    """Keys of the 9 single pairs, then of the size - 9 most frequent longer n-grams.

    Counted over all positions, or only where ``starts`` (one (rows, P) mask per matrix) is set."""
    found = {}
    for S, st in zip(S_list, starts or [None] * len(S_list)):
        for n, k in _ngram_keys(S, max_pairs):
            if n > 1:
                k = k[st[:, :k.shape[1]]] if st is not None else k.ravel()
                found.setdefault(n, []).append(np.unique(k, return_counts=True))
    keys, counts, lengths = ([np.zeros(0, np.int64)] for _ in range(3))
    for n, uc in found.items():
        u, inverse = np.unique(np.concatenate([x[0] for x in uc]), return_inverse=True)
        c = np.bincount(inverse, np.concatenate([x[1] for x in uc])).astype(np.int64)
        top = np.lexsort((u, -c))[:size]  # the rest of this length cannot make the overall top
        keys.append(u[top]), counts.append(c[top]), lengths.append(np.full(len(top), n))
    keys, counts, lengths = map(np.concatenate, (keys, counts, lengths))
    rank = np.lexsort((keys, lengths, -counts))[: size - SYMBOLS]  # ties: shorter first
    return np.concatenate([np.arange(1, SYMBOLS + 1), keys[rank]])


def _fewest_codewords(ell: np.ndarray, max_pairs: int) -> np.ndarray:
    """Per position the match length on a shortest parse; ``ell`` (rows, P) = longest match."""
    rows, P = ell.shape
    cost = np.full((rows, P + max_pairs + 1), P + 1, np.int64)  # codewords from column i to the end
    cost[:, P] = 0
    steps = np.arange(max_pairs, 0, -1)  # longest first: ties keep the longer match
    choice, all_rows = np.ones((rows, P), np.int64), np.arange(rows)
    for i in range(P - 1, -1, -1):
        c = np.where(steps <= ell[:, i:i + 1], cost[:, i + steps], P + 1)  # (rows, max_pairs)
        j = c.argmin(axis=1)
        choice[:, i], cost[:, i] = steps[j], c[all_rows, j] + 1
    return choice


def _starts(choice: np.ndarray) -> np.ndarray:
    """(rows, P) mask of the columns where a codeword starts, following ``choice`` from column 0."""
    rows, P = choice.shape
    starts, pos, live = np.zeros((rows, P), bool), np.zeros(rows, np.int64), np.arange(rows)
    while live.size:
        starts[live, pos[live]] = True
        pos[live] += choice[live, pos[live]]
        live = live[pos[live] < P]
    return starts


class DictionaryCode:
    """Prefix-closed dictionary of pair sequences; ``fit``, ``encode`` and ``decode``.

    ``keys`` (entries,) int64: entry e is the pair sequence whose base-10 digits are s + 1;
    entries 0..8 are the single pairs, every other entry's prefix comes before it."""

    def __init__(self, keys: np.ndarray, max_pairs: int = 14, parse: str = "optimal"):
        check_parameters(16, max_pairs, 0, parse)
        keys, E = np.asarray(keys, np.int64), len(keys)
        if E < SYMBOLS or (keys[:SYMBOLS] != np.arange(1, 10)).any() or keys.max() >= 10 ** max_pairs:
            raise ValueError(f"keys must start with the single pairs 1..9, at most {max_pairs} pairs")
        self.keys, self.max_pairs, self.parse = keys, max_pairs, parse
        self.lengths = (keys[:, None] >= 10 ** np.arange(max_pairs)).sum(1)  # (E,) pairs per entry
        order = np.argsort(keys)
        at = order[np.minimum(np.searchsorted(keys, keys // 10, sorter=order), E - 1)]
        self.parents = np.where(keys < 10, -1, np.where(keys[at] == keys // 10, at, E))  # (E,)
        if (self.parents >= np.arange(E)).any() or len(np.unique(keys)) != E:
            raise ValueError("keys must be distinct and prefix-closed, parents before children")
        digits = np.stack([keys // 10 ** j % 10 for j in range(max_pairs)], 1)  # (E, max_pairs), last 1st
        self.table = np.zeros((E, max_pairs), np.int8)  # (E, max_pairs) pair symbols, first pair first
        for j in range(max_pairs):
            has = self.lengths > j
            self.table[has, self.lengths[has] - 1 - j] = digits[has, j] - 1
        self.root, self.dead = E, E + 1
        self.children = np.full((E + 2, SYMBOLS), self.dead, np.int64)  # trie; row E is the root
        self.children[np.where(self.parents < 0, E, self.parents), digits[:, 0] - 1] = np.arange(E)
        self.codeword_bits = max(E - 1, 1).bit_length()
        self.crc = zlib.crc32(keys.astype("<i8").tobytes())

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"DictionaryCode({len(self)} entries, max_pairs={self.max_pairs}, parse={self.parse!r})"

    @property
    def table_bits(self) -> int:
        """The flat decoding table: per entry max_pairs 4-bit symbols + an 8-bit length."""
        return len(self) * (4 * self.max_pairs + 8)

    @classmethod
    def fit(cls, q, size: int = 2 ** 16, max_pairs: int = 14, rounds: int = 2,
            parse: str = "optimal") -> "DictionaryCode":
        """At most ``size`` entries fitted to a code matrix or a list (e.g. a layer's experts)."""
        check_parameters(size, max_pairs, rounds, parse)
        S_list = [pair_symbols(as_codes(x)) for x in (q if isinstance(q, (list, tuple)) else [q])]
        best, starts = None, None
        for _ in range(rounds + 1):
            code = cls(_most_frequent(S_list, size, max_pairs, starts), max_pairs, parse)
            starts = [_starts(code._choice(S)) for S in S_list]
            n = sum(int(st.sum()) for st in starts)  # codewords of this dictionary
            if best is None or n < best[0]:
                best = (n, code)
        return best[1]

    def _choice(self, S: np.ndarray) -> np.ndarray:
        """(rows, P) match length to take at each column: longest match, or a shortest parse's."""
        node, ell = S, np.ones(S.shape, np.int64)
        for n in range(2, min(self.max_pairs, S.shape[1]) + 1):
            node = self.children[node[:, :-1], S[:, n - 1:]]  # entry of the n pairs at each column
            ell[:, : S.shape[1] - n + 1] += node != self.dead
        return ell if self.parse == "greedy" else _fewest_codewords(ell, self.max_pairs)

    def encode(self, q, wmin=None, wmax=None) -> Encoded:
        """Encode codes q (rows x cols); wmin / wmax (rows,) are kept in bf16 (default -1 / +1)."""
        a = as_codes(q)
        S = pair_symbols(a)  # (rows, P)
        choice = self._choice(S)
        r, p = np.nonzero(_starts(choice))  # codeword starts, row by row
        lens, node = choice[r, p], np.full(len(r), self.root)
        for n in range(int(lens.max())):
            m = lens > n
            node[m] = self.children[node[m], S[r[m], p[m] + n]]
        rows = a.shape[0]
        offsets = np.searchsorted(r, np.arange(rows)).astype(np.uint32)
        lo = to_bf16_bits(-np.ones(rows) if wmin is None else wmin, rows, "wmin")
        hi = to_bf16_bits(np.ones(rows) if wmax is None else wmax, rows, "wmax")
        return Encoded(rows, a.shape[1], self.codeword_bits, len(self), self.crc, offsets, lo, hi,
                       pack_bits(node, self.codeword_bits), len(node))

    def _checked_codes(self, e: Encoded) -> np.ndarray:
        """The codewords of e after checking they fit this dictionary and e's rows and offsets."""
        if (e.dictionary_crc, e.entries, e.codeword_bits) != (self.crc, len(self), self.codeword_bits):
            raise ValueError("the stream was encoded with another dictionary (CRC, size or width)")
        codes, offsets = e.codes, e.offsets.astype(np.int64)
        if (codes >= len(self)).any():
            i = int(np.argmax(codes >= len(self)))
            raise ValueError(f"codeword {codes[i]} at position {i} is outside the dictionary "
                             f"({len(self)} entries)")
        if (e.rows < 1 or e.cols < 1 or offsets.shape != (e.rows,) or offsets[0] != 0
                or (np.diff(offsets) < 0).any() or offsets[-1] > len(codes)):
            raise ValueError(f"row offsets must rise from 0 to at most {len(codes)} codewords")
        return codes

    def decode(self, encoded) -> torch.Tensor:
        """int8 codes (rows x cols) of an Encoded or its bytes; ValueError on any inconsistency."""
        e = encoded if isinstance(encoded, Encoded) else Encoded.from_bytes(encoded)
        codes, P = self._checked_codes(e), (e.cols + 1) // 2
        lens = self.lengths[codes]
        ends = np.concatenate([[0], np.cumsum(lens)])  # pairs decoded before each codeword
        first = e.offsets.astype(np.int64)  # (rows,)
        per_row = ends[np.append(first[1:], len(codes))] - ends[first]  # pairs per row
        if (per_row != P).any():
            r = int(np.argmax(per_row != P))
            raise ValueError(f"row {r} decodes to {per_row[r]} pairs, expected {P}: corrupted stream")
        S = self.table[np.repeat(codes, lens), np.arange(ends[-1]) - np.repeat(ends[:-1], lens)]
        S = S.reshape(e.rows, P)  # pair symbols
        q = np.stack([S // 3 - 1, S % 3 - 1], axis=2).reshape(e.rows, 2 * P).astype(np.int8)
        if e.cols % 2 and q[:, -1].any():
            raise ValueError("the padding column of an odd column count is nonzero: corrupted stream")
        return torch.from_numpy(np.ascontiguousarray(q[:, : e.cols]))
