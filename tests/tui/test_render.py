"""Rich renderables rendered into a 256-colour console: colours in the right cells, labels inert."""

import io
import re

import numpy as np
from rich.color import ColorSystem
from rich.console import Console

from stepscope.tui.render import MASKED, PALETTE, WINDOW, HeatmapRenderable, Histogram, ProbBar, Sparkline
from stepscope.tui.render.palette import PALETTE_RGB, levels, luminance
from stepscope.tui.render.probbar import bar_chars
from stepscope.tui.render.spark import spark_chars

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


def fg_row(line: str) -> list[int | None]:
    """Colour of each drawn cell of one grid line (one matrix row per line, fg = bg)."""
    return [fg for fg, bg in cells(line)]


def test_known_matrix_puts_colours_in_the_right_cells():
    values = np.array([[0.0, 1.0], [0.5, 0.0]])
    mask = np.array([[False, False], [False, True]])
    out = render(HeatmapRenderable(values, mask, vmax=1.0, legend=False))
    zero, top, mid, masked = n256(PALETTE[0]), n256(PALETTE[-1]), n256(PALETTE[6]), n256(MASKED)
    lines = grid_lines(out)
    assert [cells(line) for line in lines] == [[(zero, zero), (top, top)], [(mid, mid), (masked, masked)]]


def test_masked_cells_differ_from_zero_probability_cells():
    values = np.zeros((2, 3))
    mask = np.array([[False, True, True], [False, False, True]])
    lines = grid_lines(render(HeatmapRenderable(values, mask, vmax=1.0, legend=False)))
    zero, masked = n256(PALETTE[0]), n256(MASKED)
    assert [fg_row(line) for line in lines] == [[zero, masked, masked], [zero, zero, masked]]
    assert zero != masked


def test_one_line_per_row():
    values = np.array([[1.0], [0.0], [1.0]])
    lines = grid_lines(render(HeatmapRenderable(values, vmax=1.0, legend=False)))
    assert [fg_row(line) for line in lines] == [[n256(PALETTE[-1])], [n256(PALETTE[0])], [n256(PALETTE[-1])]]


def test_zoomed_cells_repeat_each_value():
    values = np.array([[0.0, 1.0]])
    lines = grid_lines(render(HeatmapRenderable(values, vmax=1.0, cell=3, legend=False)))
    top, zero = n256(PALETTE[-1]), n256(PALETTE[0])
    assert len(lines) == 1 and fg_row(lines[0]) == [zero] * 3 + [top] * 3


def test_labels_are_escaped_and_truncated():
    values = np.eye(2)
    r = HeatmapRenderable(values, row_labels=["0 \\x1b[31m", "1 [red]x[/red]"], col_positions=[0, 1],
                          label_width=12, legend=False)
    visible = SGR.sub("", render(r))
    assert "\x1b" not in visible
    assert "0 \\x1b[31m ▀▀" in visible and "1 [red]x[/r… ▀▀" in visible  # literal, cut to 12 cells


def test_wide_characters_never_shift_a_row():
    """Rows labelled with 中 or 🙂 start in the same cell as the others."""
    values = np.full((4, 5), 0.5)
    labels = ["0 中文字", "1 🙂🙂", "2 abc", "3 a\u0301b"]
    visible = SGR.sub("", render(HeatmapRenderable(values, row_labels=labels, label_width=8, legend=False)))
    from rich.cells import cell_len

    starts = [cell_len(line[: line.index("▀")]) for line in visible.splitlines() if "▀" in line]
    assert starts == [9, 9, 9, 9]


def test_ruler_and_cursor_column_label_in_full():
    values = np.full((2, 30), 0.1)
    r = HeatmapRenderable(values, row_labels=["0 a", "1 b"], label_width=4, col_positions=list(range(100, 130)),
                          col_names=[f"k {100 + j} ·token{j}" for j in range(30)], cursor=(1, 12), legend=False)
    lines = SGR.sub("", render(r)).splitlines()
    assert lines[0].split() == ["100", "105", "110", "115", "120", "125"]  # positions, not characters
    assert lines[1].strip() == "k 112 ·token12" and lines[1].index("k 112") == 5 + 12  # above its column
    assert "◆" in lines[3] and lines[3].index("◆") == 5 + 12 and "◆" not in lines[2]


def test_a_wide_single_row_wraps_with_key_ranges():
    """A decode step over 260 keys shows every key, wrapped, with the key ranges labelled."""
    values = np.linspace(0, 1, 260)[None, :]
    r = HeatmapRenderable(values, row_labels=["259 x"], label_width=9, col_positions=list(range(260)),
                          wrap=True, legend=False)
    lines = [line for line in SGR.sub("", render(r, width=60)).splitlines() if "▀" in line]
    assert sum(line.count("▀") for line in lines) == 260  # every key drawn
    assert lines[0].split()[:2] == ["k", "0–49"] and lines[-1].split()[:2] == ["k", "250–259"]


def test_legend_names_the_scale():
    per_map = SGR.sub("", render(HeatmapRenderable(np.array([[0.0, 0.8]]), vmin=0.0, vmax=0.8))).splitlines()[-1]
    assert per_map.startswith("per map 0 " + "█" * len(PALETTE) + " 0.8") and per_map.endswith("█ masked")
    fixed = SGR.sub("", render(HeatmapRenderable(np.array([[0.0, 0.8]]), vmax=1.0, scale="fixed"))).splitlines()[-1]
    assert fixed.startswith("fixed 0 ") and " 1 " in fixed
    log = SGR.sub("", render(HeatmapRenderable(np.array([[0.0, 0.8]]), vmax=1.0, scale="log"))).splitlines()[-1]
    assert log.startswith("log 0.0001 ")


def test_fixed_scale_colours_are_comparable_across_maps():
    weak = HeatmapRenderable(np.array([[0.1, 0.2]]), vmax=1.0, scale="fixed", legend=False)
    strong = HeatmapRenderable(np.array([[0.1, 0.9]]), vmax=1.0, scale="fixed", legend=False)
    (a,), (b,) = grid_lines(render(weak)), grid_lines(render(strong))
    assert fg_row(a)[0] == fg_row(b)[0]  # 0.1 is one colour whatever else the map holds
    per_map = HeatmapRenderable(np.array([[0.1, 0.2]]), legend=False)  # 0.2 is this map's maximum
    (c,) = grid_lines(render(per_map))
    assert fg_row(c)[1] == n256(PALETTE[-1]) != fg_row(a)[1]


def test_log_scale_separates_small_weights():
    r = HeatmapRenderable(np.array([[1e-4, 1e-3, 1e-2, 1e-1, 1.0]]), vmax=1.0, scale="log", legend=False)
    (line,) = grid_lines(render(r))
    row = fg_row(line)
    assert len(set(row)) == 5 and row[0] == n256(PALETTE[0]) and row[-1] == n256(PALETTE[-1])


def test_window_cells_differ_from_causal_cells_and_the_palette():
    values = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    mask = np.array([[False, True, True], [True, False, True]])
    window = np.array([[False, False, False], [True, False, False]])  # row 1, key 0: outside the window
    out = render(HeatmapRenderable(values, mask, vmax=1.0, window_mask=window, window=4))
    mid, masked, outside = n256(PALETTE[6]), n256(MASKED), n256(WINDOW)
    assert [fg_row(line) for line in grid_lines(out)] == [[mid, masked, masked], [outside, mid, masked]]
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
