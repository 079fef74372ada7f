"""The attribution pane's lines: why the step chose its token and not another.

Layers × {attention, MLP} as signed bars (in layer order, or sorted by size), the selected
layer's heads sorted by size, and the top contributors in words (`tui.views.attribution`)."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.trace_format import TraceError
from stepscope.tui.render.columns import wrap_parts, wrap_texts
from stepscope.tui.render.lines import bar, click, token
from stepscope.tui.views.attribution import cached_attribution, rivals


def _value(v: float | None) -> str:
    return "      —" if v is None else f"{v:+7.2f}"


def attribution_lines(trace, step: int, layer: int, other: int | None = None, by_size: bool = False,
                      head: int | None = None, width: int | None = None) -> list[Text]:
    """The pane's lines at (step, selected layer); one explanatory line when the trace lacks what it needs.
    Every contribution is in logits (a term of the logit difference). With a `width`, the title and
    the hints wrap between their parts (a number is never cut off)."""
    try:
        a = cached_attribution(trace, step, other)
    except TraceError as exc:
        return [Text(line, style="yellow")
                for line in wrap_parts(f"attribution unavailable: {exc}".split(" "), width or 10_000, sep=" ")]
    title = wrap_texts([Text.assemble("why ", token(trace, a.target), " and not ", token(trace, a.other)),
                        Text(f"at step {step}:"), Text(f"logit difference {a.actual:+.3f}"),
                        Text(f"= Σ {len(a.terms)} terms ({a.total:+.3f}), in logits")], width)
    hints = wrap_parts(["final norm's scale frozen at this position", "o/O: another rival", "s: sort",
                        "Enter: the head's pattern"], width or 10_000)
    top = wrap_parts(("top (logits): " + a.words(6)).split(", "), width or 10_000, sep=", ")
    lines = [*title, rival_line(trace, step, a.other, width), *(Text(t) for t in top),
             *(Text(hint, style="dim") for hint in hints)]
    comps = [t for t in a.components() if t.layer is None]
    scale = max((abs(t.value) for t in a.components()), default=0.0)
    lines.append(Text("  " + " · ".join(f"{t.label} {t.value:+.2f}" for t in comps)))
    lines.append(Text("layer     attn (logits)           MLP (logits)", style="bold"))
    order = list(range(len(a.layers)))
    if by_size:
        order.sort(key=lambda i: -max(abs(v) for v in a.layers[i].values() if v is not None))
    heads = sorted(a.heads(layer), key=lambda t: -abs(t.value))
    for i in order:
        row = a.layers[i]
        mark = "▶" if i == layer else " "
        if row.get("block") is not None:
            line = Text.assemble(f"{mark}{i:>4} block {_value(row['block'])} ", bar(row["block"], scale))
        else:
            line = Text.assemble(f"{mark}{i:>4}  {_value(row['attn'])} ", bar(row["attn"], scale), f"  {_value(row['mlp'])} ", bar(row["mlp"], scale))
        if i == layer:
            line.stylize("reverse")
        line.stylize(click(f"select_layer({i})"))
        lines.append(line)
        if i == layer and heads:  # the drill-down: this layer's heads under its row
            lines += head_lines(heads, head)
    return lines


def head_lines(heads, head: int | None) -> list[Text]:
    """A layer's heads (sorted by size) under its row; each clickable (its attention pattern)."""
    lines = [Text(f"      heads of layer {heads[0].layer}, by size (click or Enter: the pattern; h: the top head)", style="bold")]
    head_scale = max(abs(t.value) for t in heads)
    for t in heads:
        line = Text.assemble(f"     {'▶' if t.head == head else ' '} {t.label:<10} {t.value:+7.2f} ", bar(t.value, head_scale))
        line.stylize(click(f"open_head({t.head})"))
        lines.append(line)
    return lines


def selected_row(lines: list[Text]) -> int | None:
    """Index of the selected layer's row (marked ▶ in the first column), None when absent."""
    return next((i for i, line in enumerate(lines) if line.plain.startswith("▶")), None)


def rival_line(trace, step: int, other: int, width: int | None = None) -> Text:
    """The tokens the chosen one can be compared with, the current one highlighted; each clickable;
    with a `width`, whole tokens only (the rest is a count)."""
    line = Text("vs ")
    options = rivals(trace, step)
    for k, tid in enumerate(options):
        shown = token(trace, tid)
        more = f"+{len(options) - k}"
        if width is not None and line.cell_len + shown.cell_len + 2 + len(more) > width and k < len(options) - 1:
            line.append(more, style="dim")
            break
        shown.stylize(click(f"pick_rival({k})"))
        if tid == other:
            shown.stylize("reverse")
        line.append_text(shown)
        line.append("  ")
    return line
