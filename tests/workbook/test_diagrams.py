"""The three diagrams: Figures with their labelled parts, drawn the same way every time."""
import io

import pytest
from matplotlib.figure import Figure

from peakllm.compress.qmoe.paper import QMOE_P0, iid_codes, qmoe_dictionary
from peakllm.workbook import diagrams


def texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40, metadata={"Software": None})
    return buf.getvalue()


def test_obs_sweep_shows_the_block_the_column_and_the_shared_cholesky_rows():
    fig = diagrams.obs_sweep(blocksize=4, column=5)
    assert isinstance(fig, Figure)
    t = texts(fig)
    for part in ("chol(H⁻¹)", "block of B = 4 columns", "Err1", "one matrix multiply per block", "row i",
                 "H = 2XXᵀ"):
        assert part in t, part
    with pytest.raises(ValueError, match="blocksize"):
        diagrams.obs_sweep(blocksize=0)


def test_lora_side_path_shows_frozen_w0_gaussian_a_zero_b_and_the_scale():
    t = texts(diagrams.lora_side_path())
    for part in ("W₀  (d × k)", "frozen", "A  (r × k)", "A ~ N(0, σ²)", "B  (d × r)", "B = 0", "α / r"):
        assert part in t, part


def test_qmoe_layout_draws_the_library_parse_and_the_64_bit_rows():
    fig = diagrams.qmoe_layout(rows=4, cols=40, seed=4)
    t = texts(fig)
    p1 = (1 - QMOE_P0) / 2
    code = qmoe_dictionary()
    enc = code.encode(iid_codes(4, 40, (p1, QMOE_P0, p1), 4).numpy())
    for w in enc.codes[: enc.counts[0]]:  # row 0's codewords, as the library encodes them
        assert f"codeword {w}" in t
    assert "64 bits per row" in t and "offset (u32)" in t and "wmin (bf16)" in t and "wmax (bf16)" in t
    assert f"2^16 = {2 ** 16} entries" in t and "16 bits each" in t
    with pytest.raises(ValueError, match="cols"):
        diagrams.qmoe_layout(cols=41)


def test_diagrams_are_deterministic_and_leave_no_pyplot_figure_open():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for draw in (diagrams.obs_sweep, diagrams.lora_side_path, diagrams.qmoe_layout):
        assert png(draw()) == png(draw())
    assert plt.get_fignums() == before
