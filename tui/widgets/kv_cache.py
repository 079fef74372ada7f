"""KV cache pane: prefill vs decode, cache length per layer before/after the step, what it appended."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tracer.trace_format import human_bytes
from tui.text import display_token
from tui.views.kv_cache import kv_cache
from tui.widgets.scroll_pane import ScrollPane

MAX_APPENDED = 12


class KVCachePane(ScrollPane):
    """Per layer: cached positions before → after this step and the bytes of K and V."""

    DEPENDS = frozenset({"step", "layer"})
    COMPONENT_CLASSES = {"kv-cache--selected"}

    def content(self):
        kv = kv_cache(self._trace, self.step)
        start, end = kv.positions
        what = (f"prefill: {end - start} prompt positions {start}..{end - 1}" if kv.kind == "prefill"
                else f"decode: appended position {start}")
        appended = Text("appended: ")
        for pos, _, _ in kv.appended[:MAX_APPENDED]:
            token = self._trace.tokens[pos]
            appended.append_text(Text.assemble(f"{pos}:", display_token(token["text"], bool(token.get("special"))), " "))
        if len(kv.appended) > MAX_APPENDED:
            appended.append(f"… +{len(kv.appended) - MAX_APPENDED}", style="dim")
        window = f" · sliding window {kv.sliding_window}" if kv.sliding_window else ""
        summary = Text(f"step {kv.step} · {what} · {kv.dtype}, {human_bytes(kv.bytes_per_position)} per position "
                       f"per layer (K+V) · total {human_bytes(kv.total_bytes)}{window}")
        table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
        for title in ("layer", "before", "after", "+new", "K", "V"):
            table.add_column(title, justify="right", no_wrap=True, header_style="bold dim")
        selected = self.get_component_rich_style("kv-cache--selected")
        for row in kv.layers:
            table.add_row(str(row.layer), str(row.before), str(row.after), f"+{row.appended}",
                          human_bytes(row.k_bytes), human_bytes(row.v_bytes),
                          style=selected if row.layer == self.layer else None)
        return Group(Text(what.split(":")[0].upper(), style="bold"), summary, appended, table)
