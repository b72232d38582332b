"""The bytes of one encoded ternary matrix: codewords, row metadata, header (QMoE section 5).

``Encoded`` holds what ``ternary_coding.DictionaryCode.encode`` produces -- the fixed-width
codeword stream, each row's first codeword (offset) and bf16 wmin / wmax -- and writes it in one
of two row layouts:

* ``"offsets"``: QMoE's, 64 bits a row (32-bit offset, bf16 wmin, bf16 wmax);
* ``"compact"``: bf16 wmin / wmax and the row's codeword *count* in ``count_bits`` bits (the bit
  length of the largest count of the matrix); the offsets are the running sum of the counts,
  computed once when the matrix is loaded, so a row is still reached in one lookup.

Both carry a header with a CRC32; ``from_bytes`` reads either and refuses a truncated, padded
or corrupted stream.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

SYMBOLS = 9  # pair symbols; symbol s of a single pair is dictionary entry s
ROW_BITS = 64  # per row: 32-bit offset + bf16 wmin + bf16 wmax
MAGIC = b"QMT1"
HEADER = struct.Struct("<4sIIBIIII")  # magic rows cols codeword_bits entries codewords dict_crc crc
COMPACT_MAGIC = b"QMC1"
COMPACT_HEADER = struct.Struct("<4sIIBBIIII")  # as HEADER, + count_bits after codeword_bits
ROW_LAYOUTS = ("offsets", "compact")


def as_column(v, rows: int, name: str, dtype) -> torch.Tensor:
    v = torch.as_tensor(v).to(dtype)
    if tuple(v.shape) not in ((rows,), (rows, 1)):
        raise ValueError(f"{name} must have shape ({rows},) or ({rows}, 1), got {tuple(v.shape)}")
    return v.reshape(rows, 1)


def compression_ratio(rows: int, cols: int, codewords: int, bf16_bits: int = 16,
                      codeword_bits: int = 16, row_bits: int = ROW_BITS) -> float:
    """QMoE's ratio against bf16: (16 rows cols) / (16 codewords + 64 rows)."""
    return bf16_bits * rows * cols / (codeword_bits * codewords + row_bits * rows)


def _stream_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def _bits(values: np.ndarray, bits: int) -> np.ndarray:
    """(n * bits,) uint8 0/1: fixed-width unsigned integers, most significant bit first."""
    return ((np.asarray(values)[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).ravel()


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Fixed-width codewords, most significant bit first, zero-padded to a byte."""
    return np.packbits(_bits(codes, bits)).tobytes()


def unpack_bits(stream: bytes, n: int, bits: int) -> np.ndarray:
    if len(stream) != _stream_bytes(n, bits):
        raise ValueError(f"codeword stream has {len(stream)} bytes, expected "
                         f"{_stream_bytes(n, bits)} for {n} codewords of {bits} bits")
    b = np.unpackbits(np.frombuffer(stream, np.uint8))
    if b[n * bits:].any():
        raise ValueError("codeword stream has nonzero padding bits: corrupted")
    return from_bits(b[: n * bits], bits)


def from_bits(b: np.ndarray, bits: int) -> np.ndarray:
    """Fixed-width unsigned integers (MSB first) from a 0/1 array of length n * bits."""
    return b.reshape(-1, bits).astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1))


def to_bf16_bits(v, rows: int, name: str) -> np.ndarray:
    v = as_column(v, rows, name, torch.float32).reshape(rows).to(torch.bfloat16)
    return v.view(torch.int16).numpy().view(np.uint16).copy()


@dataclass(frozen=True, eq=False)
class Encoded:
    """One encoded matrix: the codeword stream, per-row offsets and bf16 wmin / wmax."""
    rows: int
    cols: int
    codeword_bits: int
    entries: int  # dictionary size the codewords index
    dictionary_crc: int
    offsets: np.ndarray = field(repr=False)  # (rows,) uint32: index of each row's first codeword
    wmin_bf16: np.ndarray = field(repr=False)  # (rows,) uint16 bf16 bit patterns
    wmax_bf16: np.ndarray = field(repr=False)
    stream: bytes = field(repr=False)  # codewords, codeword_bits each, MSB first
    n_codewords: int

    params = property(lambda self: self.rows * self.cols)
    code_bits = property(lambda self: self.n_codewords * self.codeword_bits)
    row_bits = property(lambda self: ROW_BITS * self.rows)
    dictionary_bits = property(lambda self: (self.entries - SYMBOLS) * (self.codeword_bits + 4))
    header_bits = property(lambda self: 8 * HEADER.size)

    @property
    def counts(self) -> np.ndarray:
        """(rows,) int64 codewords per row: the offsets' differences."""
        return np.diff(np.append(self.offsets.astype(np.int64), self.n_codewords))

    @property
    def count_bits(self) -> int:
        """Width of a row's codeword count in the compact layout: bit length of the largest."""
        return max(int(self.counts.max()), 1).bit_length()

    compact_row_bits = property(lambda self: (32 + self.count_bits) * self.rows)
    compact_header_bits = property(lambda self: 8 * COMPACT_HEADER.size)

    def stored_bits(self, rows: str = "offsets") -> int:
        """Bits of ``to_bytes(rows)`` without padding: header + row metadata + codewords."""
        if rows not in ROW_LAYOUTS:
            raise ValueError(f"rows={rows!r}; allowed values are 'offsets', 'compact'")
        if rows == "compact":
            return self.compact_header_bits + self.compact_row_bits + self.code_bits
        return self.header_bits + self.row_bits + self.code_bits

    @property
    def codes(self) -> np.ndarray:
        return unpack_bits(self.stream, self.n_codewords, self.codeword_bits)  # (n_codewords,)

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(wmin, wmax), each (rows, 1) float32, as stored in bf16."""
        def f(b):
            return torch.from_numpy(b.view(np.int16).copy()).view(torch.bfloat16).float()
        return f(self.wmin_bf16)[:, None], f(self.wmax_bf16)[:, None]

    def bits_per_param(self, counts: str = "codes") -> float:
        """"codes": codewords only; "all": + 64 bits per row + the dictionary (no header)."""
        if counts not in ("codes", "all"):
            raise ValueError(f"counts={counts!r}; allowed values are 'codes', 'all'")
        extra = self.row_bits + self.dictionary_bits if counts == "all" else 0
        return (self.code_bits + extra) / self.params

    def compression_ratio(self) -> float:
        return compression_ratio(self.rows, self.cols, self.n_codewords,
                                 codeword_bits=self.codeword_bits)

    def _header(self, crc: int) -> bytes:
        return HEADER.pack(MAGIC, self.rows, self.cols, self.codeword_bits, self.entries,
                           self.n_codewords, self.dictionary_crc, crc)

    def _compact_header(self, crc: int, count_bits: int) -> bytes:
        return COMPACT_HEADER.pack(COMPACT_MAGIC, self.rows, self.cols, self.codeword_bits, count_bits,
                                   self.entries, self.n_codewords, self.dictionary_crc, crc)

    def to_bytes(self, rows: str = "offsets") -> bytes:
        """``"offsets"``: header | offsets (u32) | wmin (bf16) | wmax (bf16) | codewords.
        ``"compact"``: header | wmin | wmax | counts (count_bits each) and codewords, one bit
        stream. Both with a CRC32 over header and body."""
        if rows not in ROW_LAYOUTS:
            raise ValueError(f"rows={rows!r}; allowed values are 'offsets', 'compact'")
        scales = self.wmin_bf16.astype("<u2").tobytes() + self.wmax_bf16.astype("<u2").tobytes()
        if rows == "compact":
            b = self.count_bits
            words = np.unpackbits(np.frombuffer(self.stream, np.uint8))[: self.code_bits]
            body = scales + np.packbits(np.concatenate([_bits(self.counts, b), words])).tobytes()
            return self._compact_header(zlib.crc32(self._compact_header(0, b) + body), b) + body
        body = self.offsets.astype("<u4").tobytes() + scales + self.stream
        return self._header(zlib.crc32(self._header(0) + body)) + body

    @classmethod
    def _from_compact(cls, b: bytes) -> "Encoded":
        h = COMPACT_HEADER.size
        if len(b) < h:
            raise ValueError(f"stream truncated: {len(b)} bytes, the header alone takes {h}")
        _, rows, cols, bits, cbits, entries, n, dcrc, crc = COMPACT_HEADER.unpack_from(b)
        size = h + 4 * rows + _stream_bytes(cbits * rows + bits * n, 1)
        if len(b) != size:
            raise ValueError(f"stream has {len(b)} bytes, its header announces {size}: "
                             "truncated or padded")
        check = COMPACT_HEADER.pack(COMPACT_MAGIC, rows, cols, bits, cbits, entries, n, dcrc, 0)
        if zlib.crc32(check + b[h:]) != crc:
            raise ValueError("CRC32 mismatch: the stream is corrupted")
        if not (1 <= cbits <= 32 and 1 <= bits <= 32 and rows >= 1):
            raise ValueError(f"count width {cbits} / codeword width {bits} / rows {rows} out of range")
        at = h + 4 * rows
        s = np.unpackbits(np.frombuffer(b, np.uint8, len(b) - at, at))
        if s[cbits * rows + bits * n:].any():
            raise ValueError("bit stream has nonzero padding bits: corrupted")
        counts = from_bits(s[: cbits * rows], cbits)
        if int(counts.sum()) != n:
            raise ValueError(f"row counts sum to {int(counts.sum())}, the header announces {n} codewords")
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint32)  # the one prefix sum
        def u2(k):
            return np.frombuffer(b, "<u2", rows, h + 2 * k * rows).copy()
        words = np.packbits(s[cbits * rows: cbits * rows + bits * n]).tobytes()
        return cls(rows, cols, bits, entries, dcrc, offsets, u2(0), u2(1), words, n)

    @classmethod
    def from_bytes(cls, b: bytes) -> "Encoded":
        """Either layout of ``to_bytes`` (told apart by the magic)."""
        b, h = bytes(b), HEADER.size
        if b[:4] == COMPACT_MAGIC:
            return cls._from_compact(b)
        if len(b) < h:
            raise ValueError(f"stream truncated: {len(b)} bytes, the header alone takes {h}")
        magic, rows, cols, bits, entries, n, dcrc, crc = HEADER.unpack_from(b)
        if magic != MAGIC:
            raise ValueError(f"not a ternary dictionary stream: magic {magic!r}, expected {MAGIC!r}")
        size = h + 8 * rows + _stream_bytes(n, bits)
        if len(b) != size:
            raise ValueError(f"stream has {len(b)} bytes, its header announces {size}: "
                             "truncated or padded")
        def u2(at):
            return np.frombuffer(b, "<u2", rows, at).copy()
        e = cls(rows, cols, bits, entries, dcrc, np.frombuffer(b, "<u4", rows, h).copy(),
                u2(h + 4 * rows), u2(h + 6 * rows), b[h + 8 * rows:], n)
        if zlib.crc32(e._header(0) + b[h:]) != crc:
            raise ValueError("CRC32 mismatch: the stream is corrupted")
        return e
