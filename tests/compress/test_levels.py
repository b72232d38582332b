"""The quantization pictures (peakllm.compress.levels) draw what they are given."""
import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from peakllm.compress import levels  # noqa: E402


def test_plot_levels_draws_one_line_per_level_over_the_histogram():
    q = torch.linspace(-1, 1, 16)
    ax = levels.plot_levels(torch.randn(4, 64).clamp(-1, 1), q)
    assert len(ax.lines) == 16 and len(ax.patches) == 120
    assert ax.get_legend() is not None and "256 weights" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_outlier_columns_marks_the_columns_at_or_above_the_threshold():
    x = torch.zeros(5, 10)
    x[2, 3], x[0, 7] = 6.0, -9.0
    ax = levels.plot_outlier_columns(x, 6.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "2 outlier columns (16-bit)" in labels and "threshold 6.0" in labels
