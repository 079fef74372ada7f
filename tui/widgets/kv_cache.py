"""KV cache pane: prefill vs decode, cache length per layer before/after the step, what it appended."""

from __future__ import annotations

from rich.text import Text

from tracer.trace_format import human_bytes
from tui.render.columns import columns
from tui.text import display_token
from tui.views.kv_cache import kv_cache
from tui.widgets.lines_pane import LinesPane

MAX_APPENDED = 12


class KVCachePane(LinesPane):
    """Per layer: cached positions before → after this step and the bytes of K and V."""

    DEPENDS = frozenset({"step", "layer"})
    COMPONENT_CLASSES = {"kv-cache--selected"}

    def lines(self) -> list[Text]:
        kv = kv_cache(self._trace, self.step)
        start, end = kv.positions
        what = (f"{end - start} prompt positions {start}..{end - 1} enter the cache" if kv.kind == "prefill"
                else f"position {start} appended to a cache of {start}")
        appended = Text("appended: ", no_wrap=True)
        tokens = self._trace.tokens
        for pos, _, _ in kv.appended[:MAX_APPENDED]:
            token = tokens[pos]
            shown = display_token(token["text"], bool(token.get("special")))
            appended.append_text(Text.assemble(f"{pos}:", shown, " "))
        if len(kv.appended) > MAX_APPENDED:
            appended.append(f"… +{len(kv.appended) - MAX_APPENDED}", style="dim")
        window = f" · sliding window {kv.sliding_window}" if kv.sliding_window else ""
        summary = Text(f"{kv.dtype} · {human_bytes(kv.bytes_per_position)} per position per layer (K+V) · "
                       f"total {human_bytes(kv.total_bytes)}{window}", no_wrap=True)
        rows = [[str(r.layer), str(r.before), str(r.after), f"+{r.appended}", human_bytes(r.k_bytes),
                 human_bytes(r.v_bytes)] for r in kv.layers]
        table = columns(["layer", "before", "after", "+new", "K", "V"], rows, justify="rrrrrr")
        selected = self.get_component_rich_style("kv-cache--selected")
        for row, line in zip(kv.layers, table[1:]):
            if row.layer == self.layer:
                line.stylize(selected)
        title = Text.assemble((kv.kind.upper(), "bold"), f" step {kv.step} · {what}", no_wrap=True)
        return [title, summary, appended, Text(""), *table]
