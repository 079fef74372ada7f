"""Rich renderables rendered into a 256-colour console: colours in the right cells, labels inert."""

import io
import re

import numpy as np
from rich.color import ColorSystem
from rich.console import Console

from tui.render import MASKED, PALETTE, WINDOW, HeatmapRenderable, Histogram, ProbBar, Sparkline
from tui.render.palette import PALETTE_RGB, levels, luminance
from tui.render.probbar import bar_chars
from tui.render.spark import spark_chars

SGR = re.compile(r"\x1b\[([0-9;]*)m")
CELL = re.compile(r"\x1b\[([0-9;]*)m(▀+)")


def render(renderable, width=60, color_system="256") -> str:
    console = Console(file=io.StringIO(), width=width, color_system=color_system, force_terminal=True)
    console.print(renderable)
    return console.file.getvalue()


def n256(color) -> int:
    return color.downgrade(ColorSystem.EIGHT_BIT).number


def cells(line: str) -> list[tuple[int | None, int | None]]:
    """(fg, bg) 256-colour numbers of each half-block cell of one rendered line."""
    out = []
    for params, run in CELL.findall(line):
        nums = [int(x) for x in params.split(";") if x]
        fg = bg = None
        for i in range(len(nums) - 2):
            if nums[i] == 38 and nums[i + 1] == 5:
                fg = nums[i + 2]
            if nums[i] == 48 and nums[i + 1] == 5:
                bg = nums[i + 2]
        out += [(fg, bg)] * len(run)
    return out


def grid_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "▀" in line]


def test_palette_stays_distinct_and_monotonic_in_256_colours():
    numbers = [n256(c) for c in PALETTE]
    assert len(set(numbers)) == len(PALETTE)
    from rich.color import EIGHT_BIT_PALETTE

    lum = [luminance(tuple(EIGHT_BIT_PALETTE[n])) for n in numbers]
    assert all(a < b for a, b in zip(lum, lum[1:]))
    assert n256(MASKED) not in numbers
    assert [tuple(EIGHT_BIT_PALETTE[n]) for n in numbers] == list(PALETTE_RGB)  # exact, no drift


def test_levels_are_equal_width_bins():
    lv = levels(np.array([0.0, 0.05, 0.5, 0.999, 1.0]), 0.0, 1.0, np.array([False, False, False, False, True]))
    assert lv.tolist() == [0, 0, 6, 11, -1]


def test_known_matrix_puts_colours_in_the_right_cells():
    values = np.array([[0.0, 1.0], [0.5, 0.0]])
    mask = np.array([[False, False], [False, True]])
    out = render(HeatmapRenderable(values, mask, vmax=1.0, legend=False))
    (line,) = grid_lines(out)
    zero, top, mid, masked = n256(PALETTE[0]), n256(PALETTE[-1]), n256(PALETTE[6]), n256(MASKED)
    assert cells(line) == [(zero, mid), (top, masked)]  # column 0: rows 0/1, column 1: rows 0/1


def test_masked_cells_differ_from_zero_probability_cells():
    values = np.zeros((2, 3))
    mask = np.array([[False, True, True], [False, False, True]])
    (line,) = grid_lines(render(HeatmapRenderable(values, mask, vmax=1.0, legend=False)))
    zero, masked = n256(PALETTE[0]), n256(MASKED)
    assert cells(line) == [(zero, zero), (masked, zero), (masked, masked)]
    assert zero != masked


def test_odd_row_count_leaves_last_lower_half_empty():
    values = np.array([[1.0], [0.0], [1.0]])
    lines = grid_lines(render(HeatmapRenderable(values, vmax=1.0, legend=False)))
    assert len(lines) == 2
    assert cells(lines[1]) == [(n256(PALETTE[-1]), None)]


def test_zoomed_cells_repeat_each_value():
    values = np.array([[0.0, 1.0]])
    lines = grid_lines(render(HeatmapRenderable(values, vmax=1.0, cell=2, legend=False)))
    top, zero = n256(PALETTE[-1]), n256(PALETTE[0])
    assert len(lines) == 1 and cells(lines[0]) == [(zero, zero), (zero, zero), (top, top), (top, top)]


def test_labels_are_escaped_and_truncated():
    values = np.eye(2)
    r = HeatmapRenderable(values, row_labels=["\x1b[31m", "[red]x[/red]"], col_labels=["\x07a", "Ġb"],
                          label_width=12, col_label_rows=2, legend=False)
    out = render(r)
    visible = SGR.sub("", out)
    assert "\x1b" not in visible and "\x07" not in visible
    assert "\\x1b[…╱[red… ▀▀" in visible  # 12 cells: 6 for the upper row's label, 5 for the lower
    top = visible.splitlines()[:2]
    assert top[0].endswith("\\·") and top[1].endswith("xb")  # vertical labels: "\x07a" and "·b"


def test_legend_shows_scale_and_masked_swatch():
    out = SGR.sub("", render(HeatmapRenderable(np.array([[0.0, 0.8]]), vmin=0.0, vmax=0.8)))
    legend = out.splitlines()[-1]
    assert legend.startswith("0 " + "█" * len(PALETTE) + " 0.8") and legend.endswith("█ masked")


def test_window_cells_differ_from_causal_cells_and_the_palette():
    values = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    mask = np.array([[False, True, True], [True, False, True]])
    window = np.array([[False, False, False], [True, False, False]])  # row 1, key 0: outside the window
    out = render(HeatmapRenderable(values, mask, vmax=1.0, window_mask=window, window=4))
    (line,) = grid_lines(out)
    mid, masked, outside = n256(PALETTE[6]), n256(MASKED), n256(WINDOW)
    assert cells(line) == [(mid, outside), (masked, mid), (masked, masked)]
    assert outside not in {masked, *(n256(c) for c in PALETTE)}
    assert SGR.sub("", out).splitlines()[-1].endswith("█ masked  █ outside window 4")
    no_window = SGR.sub("", render(HeatmapRenderable(values, mask, vmax=1.0, window_mask=np.zeros_like(mask))))
    assert no_window.splitlines()[-1].endswith("█ masked")  # the window swatch only when such cells show


def test_default_vmax_ignores_masked_cells():
    r = HeatmapRenderable(np.array([[0.2, 9.0]]), np.array([[False, True]]))
    assert r.vmax == 0.2


def test_sparkline_and_histogram_heights():
    assert spark_chars([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert spark_chars([0, 4, 8], zero_blank=True) == " ▄█"
    assert spark_chars([3, 3]) == "▁▁" and spark_chars([]) == ""
    assert SGR.sub("", render(Sparkline([1, 2, 3]))).strip() == "▁▄█"
    out = SGR.sub("", render(Histogram([0, 2, 0, 8], lo=-1.5, hi=2.0)))
    assert out.strip() == "-1.5  ▂ █ 2"


def test_prob_bar_widths():
    assert bar_chars(0.5, 10) == "█████     "
    assert bar_chars(1.0, 4) == "████" and bar_chars(2.0, 4) == "████"
    assert bar_chars(0.0, 3) == "   " and bar_chars(float("nan"), 3) == "   "
    assert bar_chars(0.5, 1) == "▌" and bar_chars(0.3, 2) == "▋ "  # 0.3 · 2 cells · 8 = 4.8 -> 5 eighths
    out = SGR.sub("", render(ProbBar(0.25, 8)))
    assert out == "██      \n"
