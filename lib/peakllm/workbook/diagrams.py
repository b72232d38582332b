"""Three diagrams the notebooks draw where a picture explains better than text.

* ``obs_sweep``: SparseGPT / GPTQ's column sweep (SparseGPT Algorithm 1, GPTQ section 3.2-3.3):
  columns one at a time inside a block of B, each column's OBS update inside the block, the
  block's errors reaching the rest in one product, every row sharing the rows of chol(H⁻¹);
* ``lora_side_path``: LoRA (Hu et al. 2021, section 4.1, Figure 1): frozen W₀ beside the
  trainable A (Gaussian init) and B (zero init), scaled by α / r;
* ``qmoe_layout``: QMoE's storage of one expert matrix (Frantar & Alistarh 2023, section 5), as
  ``compress.qmoe.coding`` / ``compress.qmoe.stream`` write it: ternary codes in pairs, pairs parsed
  greedily into entries of the fixed 2^16-entry dictionary, 16-bit codewords in one stream,
  per row a 32-bit offset and bf16 wmin / wmax.

Each returns a ``matplotlib.figure.Figure``, already closed in pyplot: nothing is shown or kept
open, any backend (Agg included) can save it, and the same call draws the same picture.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

GREY, RED, ORANGE, BLUE, GREEN = "#bdbdbd", "#e4572e", "#f3a712", "#4c86c6", "#59a96a"


def _canvas(width: float, height: float, xlim, ylim):
    """A figure made through pyplot (so that Jupyter's inline backend, which registers the PNG
    display of figures when pyplot first draws, is loaded) and closed at once: pyplot keeps no
    reference, nothing is shown at the end of a cell, and a notebook displays it once when a
    cell returns it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    plt.close(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, color, label="", fontsize=9, **kw):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", lw=kw.pop("lw", 0.8), **kw))
    if label:
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, color="black", **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color,
                                 lw=kw.pop("lw", 1.2), **kw))


def _brace(ax, x0, x1, y, label, up=True, fontsize=9):
    """A square bracket from x0 to x1 at height y, its label above (up) or below."""
    tick = 0.25 if up else -0.25
    ax.plot([x0, x0, x1, x1], [y, y + tick, y + tick, y], color="black", lw=0.9)
    ax.text((x0 + x1) / 2, y + 2.2 * tick, label, ha="center", va="bottom" if up else "top", fontsize=fontsize)


def obs_sweep(rows: int = 6, columns: int = 12, blocksize: int = 4, column: int = 5) -> Figure:
    """The OBS column sweep with its lazy block update: W (rows x columns) and chol(H⁻¹).

    Drawn at the moment the sweep reaches column i = ``column`` (inside the block that holds it)."""
    if not (0 < blocksize <= columns and 0 <= column < columns and rows > 0):
        raise ValueError(f"need 0 < blocksize={blocksize} <= columns={columns}, 0 <= column={column} < columns")
    i1 = column - column % blocksize
    i2 = min(i1 + blocksize, columns)
    gap = 4.0  # between W and chol(H⁻¹)
    fig, ax = _canvas(12, 5.6, (-0.5, 2 * columns + gap + 0.5), (-0.6, columns + 2.6))
    top = columns  # W sits at the top left, rows downwards
    for r in range(rows):
        for c in range(columns):
            color = (GREY if c < i1 else "#e0e0e0" if c < column else RED if c == column
                     else ORANGE if c < i2 else BLUE)
            _box(ax, c, top - 1 - r, 1, 1, color, lw=0.5)
    ax.add_patch(Rectangle((i1, top - rows), i2 - i1, rows, fill=False, edgecolor="black", lw=2.2))
    ax.text(columns / 2, top + 1.9, "W  (rows × columns): every row of W at once", ha="center", fontsize=11)
    _brace(ax, i1, i2, top + 0.1, f"block of B = {blocksize} columns")
    _brace(ax, i2, columns, top + 0.1, "the rest")
    ax.text(-0.3, top - rows / 2, "rows", rotation=90, ha="right", va="center", fontsize=9)
    # legend under W
    y = top - rows - 1.3
    for k, (color, text) in enumerate([
            (GREY, "earlier blocks: final (pruned / rounded)"),
            (RED, "column i: w_i → q_i,  err_i = (w_i − q_i) / [chol(H⁻¹)]_ii"),
            (ORANGE, "rest of the block: W1[:, i:] −= err_i · chol(H⁻¹)[i, i:]  (after each column)"),
            (BLUE, "the rest: W[:, i2:] −= Err1 · chol(H⁻¹)[i1:i2, i2:]  (one matrix multiply per block)")]):
        _box(ax, 0, y - 1.05 * k, 0.7, 0.7, color, lw=0.5)
        ax.text(1.0, y - 1.05 * k + 0.35, text, va="center", fontsize=9)
    ax.text(0, y - 4.6, "Err1 (rows × B): the block's scaled errors err_i, one column each, "
            "kept for the lazy update", fontsize=9)
    # chol(H⁻¹): upper triangular, columns x columns
    x0 = columns + gap
    for r in range(columns):
        for c in range(r, columns):
            color = (RED if r == column and c == column else ORANGE if r == column and c < i2
                     else BLUE if i1 <= r < i2 and c >= i2 else "white")
            _box(ax, x0 + c, top - 1 - r, 1, 1, color, lw=0.4)
    ax.add_patch(Rectangle((x0 + i1, top - i2), i2 - i1, i2 - i1, fill=False, edgecolor="black", lw=2.2))
    ax.text(x0 + columns / 2, top + 1.9, "chol(H⁻¹)  (upper Cholesky factor, columns × columns)",
            ha="center", fontsize=11)
    ax.text(x0 + columns / 2, top + 0.6, "computed once from H = 2XXᵀ; its rows are shared by every row of W",
            ha="center", fontsize=9)
    ax.text(x0 + 1, top - columns + 1.8, "row i = the OBS update of column i\nonce columns < i are removed",
            fontsize=9)
    _arrow(ax, (x0 + column - 0.1, top - column - 0.5), (columns + 0.1, top - column - 0.5), color=RED, lw=1.0)
    ax.text((x0 + column + columns) / 2, top - column - 0.3, "row i", ha="center", va="bottom", fontsize=9, color=RED)
    return fig


def lora_side_path() -> Figure:
    """LoRA: h = W₀x + (α/r)·B A x, W₀ frozen, A Gaussian, B zero, so h = W₀x at step 0."""
    fig, ax = _canvas(9, 6.4, (0, 14), (-0.6, 10))
    ax.text(7, 9.55, "LoRA:  h = W₀x + (α / r) · B A x", ha="center", fontsize=13)
    # input x and output h
    _box(ax, 1, 0.0, 12, 0.8, "#f0f0f0", "x  (k inputs)", fontsize=10)
    _box(ax, 1, 8.2, 12, 0.8, "#f0f0f0", "h  (d outputs)", fontsize=10)
    # frozen W0
    _box(ax, 1.5, 2.2, 5, 4.6, "#d9e6f5", "", fontsize=10)
    ax.text(4, 5.0, "W₀  (d × k)", ha="center", fontsize=12)
    ax.text(4, 4.1, "pretrained, frozen", ha="center", fontsize=10)
    ax.text(4, 3.3, "no gradient, no optimizer state", ha="center", fontsize=8.5)
    # A (r x k): wide at the bottom (k inputs), narrow at the top (r)
    ax.add_patch(Polygon([(8, 2.2), (12.5, 2.2), (11.2, 3.9), (9.3, 3.9)], facecolor="#fbe3c5", edgecolor="black"))
    ax.text(10.25, 2.95, "A  (r × k)", ha="center", fontsize=11)
    ax.text(12.7, 2.8, "A ~ N(0, σ²)", fontsize=9, va="center")
    # B (d x r): narrow at the bottom (r), wide at the top (d)
    ax.add_patch(Polygon([(9.3, 5.1), (11.2, 5.1), (12.5, 6.8), (8, 6.8)], facecolor="#fbe3c5", edgecolor="black"))
    ax.text(10.25, 5.95, "B  (d × r)", ha="center", fontsize=11)
    ax.text(12.7, 6.0, "B = 0", fontsize=10, va="center", color=RED)
    ax.text(10.5, 4.5, "r ≪ min(d, k)", ha="left", va="center", fontsize=9)
    ax.text(10.5, 1.45, "trainable: r(d + k) weights", ha="left", fontsize=9)
    # scaling and the sum
    ax.text(10.25, 7.45, "× α / r", ha="center", va="center", fontsize=10,
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="black"))
    ax.add_patch(Rectangle((6.75, 7.35), 0.5, 0.5, facecolor="white", edgecolor="black"))
    ax.text(7, 7.6, "+", ha="center", va="center", fontsize=12)
    for start, end in [((4, 0.8), (4, 2.2)), ((10.25, 0.8), (10.25, 2.2)), ((10.25, 3.9), (10.25, 5.1)),
                       ((10.25, 6.8), (10.25, 7.15)), ((9.5, 7.6), (7.25, 7.6)), ((4, 6.8), (6.8, 7.5)),
                       ((7, 7.85), (7, 8.2))]:
        _arrow(ax, start, end)
    ax.text(0.2, -0.45, "At step 0, B = 0: h = W₀x exactly. After training, W₀ + (α / r)·BA "
            "merges into one d × k matrix: no extra cost at inference.", fontsize=8.5)
    return fig


def qmoe_layout(rows: int = 4, cols: int = 40, seed: int = 4) -> Figure:
    """One expert matrix as QMoE stores it: a row's codes -> pair symbols -> greedy parse in the
    fixed dictionary (``qmoe.paper.qmoe_dictionary``) -> 16-bit codewords; below, the
    ``"offsets"`` layout of ``qmoe.stream.Encoded.to_bytes``: header, per row a u32 offset
    and bf16 wmin / wmax (64 bits), then the codewords of all rows in one stream.

    The matrix: ``rows`` x ``cols`` i.i.d. codes at QMoE's P(0) = 0.885 (``iid_codes``, ``seed``);
    row 0 is drawn in full. Symbols, parse, codewords and counts are the library's own."""
    from ..compress.qmoe.coding import pair_symbols
    from ..compress.qmoe.paper import QMOE_P0, iid_codes, qmoe_dictionary
    from ..compress.qmoe.stream import HEADER, ROW_BITS

    if not (2 <= rows <= 8 and 2 <= cols <= 48 and cols % 2 == 0):
        raise ValueError(f"rows={rows}, cols={cols}: draw 2..8 rows of an even 2..48 columns")
    p1 = (1 - QMOE_P0) / 2
    q = iid_codes(rows, cols, (p1, QMOE_P0, p1), seed).numpy()  # (rows, cols) int8
    code = qmoe_dictionary()
    enc = code.encode(q)
    counts = enc.counts  # (rows,) codewords per row
    words = enc.codes[: counts[0]]  # row 0's dictionary indices
    lens = code.lengths[words]  # pairs per codeword
    sym = pair_symbols(q)[0]  # (cols / 2,)
    u = 24 / cols  # width of one weight
    fig, ax = _canvas(12, 6.9, (-0.3, 24.3), (-5.0, 8.6))
    ax.text(0, 8.1, f"1. one row of ternary codes q ∈ {{−1, 0, +1}}  (row 0 of a {rows} × {cols} "
            f"matrix, P(0) = {QMOE_P0})", fontsize=10)
    for j, v in enumerate(q[0]):
        _box(ax, j * u, 7.0, u, 0.7, "white" if v == 0 else ("#f4c7c3" if v < 0 else "#c8e6c9"),
             "0" if v == 0 else ("−1" if v < 0 else "+1"), fontsize=7)
    ax.text(0, 6.4, "2. taken as pairs (a, b): pair symbol s = 3(a + 1) + (b + 1), one of 9", fontsize=10)
    for k, v in enumerate(sym):
        _box(ax, 2 * k * u, 5.5, 2 * u, 0.7, "#eeeeee", str(v), fontsize=8)
    ax.text(0, 4.8, f"3. parsed, longest match first, into sequences of 1..{code.max_pairs} pairs "
            f"found in the fixed dictionary of 2^16 = {len(code)} entries", fontsize=10)
    at = 0
    for w, n in zip(words, lens):
        _box(ax, 2 * at * u + 0.05, 3.9, 2 * n * u - 0.1, 0.7, "#d9e6f5", f"{n} pairs" if n > 1 else "1 pair",
             fontsize=8)
        _arrow(ax, ((2 * at + n) * u, 3.9), ((2 * at + n) * u, 3.25), lw=0.9)
        ax.text((2 * at + n) * u, 2.95, f"codeword {w}", ha="center", va="center", fontsize=8)
        at += n
    ax.text(0, 2.0, f"4. each sequence is one {code.codeword_bits}-bit codeword: row 0's {cols} weights "
            f"take {len(words)} codewords = {len(words) * code.codeword_bits} bits", fontsize=10)
    ax.text(0, 1.0, "5. the matrix as stored, rows r = 0 .. R − 1  (Encoded.to_bytes(\"offsets\")):",
            fontsize=10)
    y, x = -0.9, 0.0
    parts = [(f"header\n{HEADER.size} B (ours)", 2.2, "#eeeeee"), ("offset (u32)\n× R", 3.0, "#fde2c4"),
             ("wmin (bf16)\n× R", 3.0, "#f4c7c3"), ("wmax (bf16)\n× R", 3.0, "#c8e6c9")]
    for label, w, color in parts:
        _box(ax, x, y, w, 1.2, color, label, fontsize=8.5)
        x += w
    stream_x0, cw = x, (24 - x) / counts.sum()
    for r, n in enumerate(counts):
        _box(ax, x, y, n * cw, 1.2, ["#d9e6f5", "#b7cdea"][r % 2], f"row {r}", fontsize=8)
        for k in range(1, n):
            ax.plot([x + k * cw] * 2, [y, y + 1.2], color="black", lw=0.4, ls=":")
        if r < 2:
            _arrow(ax, (2.2 + 0.8 + 1.2 * r, y), (x + 0.15, y - 0.02), lw=0.8,
                   connectionstyle="arc3,rad=0.18", color="#b06000")
        x += n * cw
    _brace(ax, stream_x0, x, y + 1.3, f"the codewords of all rows in one stream, {code.codeword_bits} bits each")
    ax.text(0, y - 1.9, f"{ROW_BITS} bits per row: a 32-bit offset (the index of the row's first codeword) "
            "+ bf16 wmin + bf16 wmax", fontsize=9)
    ax.text(0, y - 2.7, "decoding row r: from its offset, codewords until cols / 2 pairs are out; "
            "code −1 → wmin_r, 0 → 0, +1 → wmax_r", fontsize=9)
    ax.text(0, y - 3.5, "ratio against bf16 = 16 · rows · cols / (16 · codewords + 64 · rows); the decoding "
            "table, 2^16 entries × 64 bits = 512 KiB, is shared by every matrix", fontsize=9)
    return fig
