"""What the attribution pane shows: why the step chose its token and not another, as lines of Text.

Layers × {attention, MLP} as signed bars (in layer order, or sorted by size), the selected
layer's heads sorted by size, and the top contributors in words. Torch-free.
"""

from __future__ import annotations

from types import SimpleNamespace

from rich.style import Style
from rich.text import Text

from stepscope.tracer.attribution import Attribution, attribute, keep_lens_arrays, lens_loaded, read_lens_arrays
from stepscope.tracer.trace_format import TraceError
from stepscope.tui.text import display_token
from stepscope.tui.views.vocab import token_texts

BAR = 12  # cells of the longest bar
POSITIVE, NEGATIVE = "green", "red"

_CACHE: dict[tuple[int, int, int | None], Attribution] = {}


def cached_attribution(trace, step: int, other: int | None = None) -> Attribution:
    """attribute(trace, step, other=other), kept for the last few (trace, step, other)."""
    key = (id(trace), step, other)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 64:
            _CACHE.clear()
        hit = _CACHE[key] = attribute(trace, step, other=other)
    return hit


def lens_ready(trace) -> bool:
    """Whether the unembedding the attribution reads is loaded (or the trace has none: nothing to wait for)."""
    return lens_loaded(trace) or not trace.model.get("lens")


def lens_source(trace) -> SimpleNamespace:
    """What a worker thread needs to read the trace's lens file without touching the Trace."""
    return SimpleNamespace(path=getattr(trace, "root", None) or trace.path, model=dict(trace.model))


def read_lens(source) -> dict:
    """lens.safetensors of `lens_source(trace)` (slow: W_U; run it in a thread)."""
    return read_lens_arrays(source)


def install_lens(trace, arrays: dict) -> None:
    """Hand arrays read by `read_lens` to the trace (UI thread)."""
    keep_lens_arrays(trace, arrays)


def click(action: str) -> Style:
    """A style that runs the pane's `action` when its text is clicked."""
    return Style(meta={"@click": action})


def bar(value: float, scale: float, width: int = BAR) -> Text:
    """A signed bar: green to the right for a push towards the chosen token, red for against."""
    n = 0 if not scale else min(width, round(abs(value) / scale * width))
    return Text("█" * n + " " * (width - n), style=POSITIVE if value >= 0 else NEGATIVE, end="")


def token(trace, token_id: int) -> Text:
    text, special = token_texts(trace)(token_id)
    return display_token(text, special)


def _value(v: float | None) -> str:
    return "      —" if v is None else f"{v:+7.2f}"


def attribution_lines(trace, step: int, layer: int, other: int | None = None, by_size: bool = False,
                      head: int | None = None) -> list[Text]:
    """The pane's lines at (step, selected layer); one explanatory line when the trace lacks what it needs."""
    try:
        a = cached_attribution(trace, step, other)
    except TraceError as exc:
        return [Text(f"attribution unavailable: {exc}", style="yellow")]
    title = Text.assemble("why ", token(trace, a.target), " and not ", token(trace, a.other),
                         f" at step {step}: logit difference {a.actual:+.3f} = Σ {len(a.terms)} terms ({a.total:+.3f})")
    lines = [title, rival_line(trace, step, a.other), Text("top: " + a.words(6)),
             Text("final norm's scale frozen at this position · o/O: another rival · s: sort · Enter: the head's pattern",
                  style="dim")]
    comps = [t for t in a.components() if t.layer is None]
    scale = max((abs(t.value) for t in a.components()), default=0.0)
    lines.append(Text("  " + " · ".join(f"{t.label} {t.value:+.2f}" for t in comps)))
    lines.append(Text("layer     attn                    MLP", style="bold"))
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


def rival_line(trace, step: int, other: int) -> Text:
    """The tokens the chosen one can be compared with, the current one highlighted; each clickable."""
    line = Text("vs ")
    for k, tid in enumerate(rivals(trace, step)):
        shown = token(trace, tid)
        shown.stylize(click(f"pick_rival({k})"))
        if tid == other:
            shown.stylize("reverse")
        line.append_text(shown)
        line.append("  ")
    return line


def top_head(trace, step: int, layer: int, other: int | None = None) -> int | None:
    """The head of `layer` contributing most (by size) at the step, None without per-head results."""
    try:
        heads = cached_attribution(trace, step, other).heads(layer)
    except TraceError:
        return None
    return max(heads, key=lambda t: abs(t.value)).head if heads else None


def rivals(trace, step: int, n: int = 8) -> list[int]:
    """Other tokens to compare the chosen one with: the stored candidates in order, chosen excluded."""
    s = trace.steps[step]
    chosen = int(s.token["id"])
    ids = [int(i) for i in s["sample.candidate_ids"][: n + 1]] if "sample.candidate_ids" in s else []
    return [i for i in ids if i != chosen][:n]
