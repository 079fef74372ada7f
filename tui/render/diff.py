"""The Compare pane's lines: two traces compared at a step (`tui.views.diff`)."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.diff import TraceDiff
from stepscope.tracer.inert import inert
from stepscope.tracer.trace_format import TraceError
from stepscope.tui.render.lines import bar, click, token
from stepscope.tui.views.diff import cached_diff, tensor_difference


def token_rows(a, b, d: TraceDiff, step: int) -> list[Text]:
    """The chosen tokens of both traces aligned by step (differing ones red, the cursor's step underlined);
    a click on one goes to its step."""
    rows = []
    for label, trace, key in (("A ", a, "token_a"), ("B ", b, "token_b")):
        line = Text(label, style="bold")
        for s in d.steps:
            shown = token(trace, int(getattr(s, key)["id"]))
            shown.stylize(click(f"go_step({s.index})"))
            if s.token_a["id"] != s.token_b["id"]:
                shown.stylize("red")
            if s.index == step:
                shown.stylize("underline reverse")
            line.append_text(shown)
            line.append(" ")
        rows.append(line)
    return rows


def diff_lines(a, b, step: int, layer: int, name: str | None = None, result: TraceDiff | None = None) -> list[Text]:
    """Alignment and first differences, the tokens side by side, the step's residual divergence per
    layer, then the drill-down of one tensor (default: the selected layer's resid_post) side by side
    and as a difference. `result`: compare(a, b) when already computed (e.g. by a worker)."""
    try:
        d = result if result is not None else cached_diff(a, b)
    except TraceError as exc:
        return [Text(f"diff unavailable: {exc}", style="yellow")]
    lines = [Text(f"aligned {d.aligned}", style="bold"), Text(f"A {inert(a.path, 60)} · B {inert(b.path, 60)}", style="dim")]
    lines += token_rows(a, b, d, step)
    if d.identical:
        return lines + [Text(f"identical: {len(d.steps)} steps, every token and tensor equal", style="green")]
    if d.first_token is not None:
        lines.append(Text(f"first differing token at position {d.first_token} (of A)"))
    if d.first_step is not None:
        s = d.steps[d.first_step]
        lines.append(Text.assemble(f"first step choosing differently: {s.index}: A ", token(a, int(s.token_a["id"])),
                                   " vs B ", token(b, int(s.token_b["id"]))))
    if d.first_difference is not None:
        f = d.first_difference
        lines.append(Text(f"first differing value: step {f.step} {inert(f.name, 80)}{list(f.index)}"
                          + (f" at position {f.position}" if f.position is not None else "")))
    if step >= len(d.steps):
        return lines + [Text(f"step {step} is only in one of the traces", style="dim")]
    s = d.steps[step]
    lines.append(Text.assemble(f"step {step}: A ", token(a, int(s.token_a["id"])), " · B ", token(b, int(s.token_b["id"])),
                               f" · {len(s.differs)} tensors differ"))
    lines += tensor_lines(a, b, step, name or f"blocks.{layer}.hook_resid_post")
    lines.append(Text("layer  rel |b−a|/|a|    cos   (residual stream at the predicting position)", style="bold"))
    scale = max((r for r, _ in s.layers), default=0.0)
    for i, (rel, cos) in enumerate(s.layers):
        line = Text.assemble(f"{'▶' if i == layer else ' '}{i:>4}  {rel:10.4f}  {cos:7.4f}  ", bar(rel, scale))
        if i == layer:
            line.stylize("reverse")
        line.stylize(click(f"select_layer({i})"))
        lines.append(line)
    return lines


def tensor_lines(a, b, step: int, name: str) -> list[Text]:
    """One tensor of the step in both traces: its largest differences side by side (A, B, b − a)."""
    try:
        t = tensor_difference(a, b, step, name)
    except TraceError as exc:
        return [Text(str(exc), style="dim")]
    lines = [Text(f"{inert(name, 80)} {t.shape}" + (" (aligned at the end)" if t.cropped else "")
                  + f": max |b−a| {t.max_abs:.4g}   (, . another tensor · r residual)", style="bold")]
    lines.append(Text(f"row {t.row}, largest differences:  index      A          B        b−a", style="dim"))
    lines += [Text(f"{'':>31}{j:>6} {x:10.4g} {y:10.4g} {d:+10.4g}") for j, x, y, d in t.top]
    return lines
