"""KV cache pane: prefill vs decode, cache length per layer before/after the step, what it appended.

With sliding-window layers, two more columns: the keys the step read (S, from which position)
and the layer's kind (local with its window, or global)."""

from __future__ import annotations

from rich.text import Text

from stepscope.tracer.trace_format import human_bytes
from stepscope.tui.render.columns import columns
from stepscope.tui.text import display_token
from stepscope.tui.views.kv_cache import kv_cache
from stepscope.tui.views.vocab import tok_text
from stepscope.tui.widgets.lines_pane import LinesPane

MAX_APPENDED = 12
LEGEND = ("before/after: positions cached before/after", "+new: appended by this step",
          "K, V: bytes of the layer's keys and values")
LEGEND_WINDOW = ("keys read: the keys this step's query saw", "evicted: dropped by the window")


class KVCachePane(LinesPane):
    """Per layer: cached positions before → after this step and the bytes of K and V."""

    WATCHES = frozenset({"step", "layer"})
    COMPONENT_CLASSES = {"kv-cache--selected"}

    first_row = 5  # title, summary line(s), appended, legend, column header

    def on_click(self, event) -> None:
        """A click on a layer's row selects that layer."""
        offset = event.get_content_offset(self)
        if offset is None or self._trace is None:
            return
        layer = offset.y + round(self.scroll_y) - self.first_row
        if 0 <= layer < int(self._trace.model.get("n_layers") or 0):
            self.move(layer=layer)

    def lines(self) -> list[Text]:
        kv = kv_cache(self._trace, self.step_index)
        start, end = kv.positions
        what = (f"{end - start} prompt positions {start}..{end - 1} enter the cache" if kv.kind == "prefill"
                else f"position {start} appended to a cache of {start}")
        appended = Text("appended: ", no_wrap=True)
        tokens = self._trace.tokens
        width = self.scrollable_content_region.width
        for i, (pos, _, _) in enumerate(kv.appended[:MAX_APPENDED]):
            token = tokens[pos]
            piece = Text.assemble(f"{pos}:", display_token(tok_text(token), bool(token.get("special"))), " ")
            rest = len(kv.appended) - i - 1
            if width and appended.cell_len + piece.cell_len + (len(f"… +{rest}") if rest else 0) > width:
                appended.append(f"… +{len(kv.appended) - i}", style="dim")  # whole tokens only, then a count
                break
            appended.append_text(piece)
        else:
            if len(kv.appended) > MAX_APPENDED:
                appended.append(f"… +{len(kv.appended) - MAX_APPENDED}", style="dim")
        window = []
        if kv.sliding_window:
            window = [f"window {kv.sliding_window}: local layers keep the last {kv.sliding_window - 1}"
                      + (", global all" if kv.mixed else "")]
        summary = self.wrap_parts([kv.dtype, f"{human_bytes(kv.bytes_per_position)} per position per layer (K+V)",
                                   f"total {human_bytes(kv.total_bytes)}", *window])
        rows = [[str(r.layer), str(r.before), str(r.after), f"+{r.appended}", human_bytes(r.k_bytes),
                 human_bytes(r.v_bytes)] if not r.no_attention else [str(r.layer), "—", "—", "—", "no KV", "—"]
                for r in kv.layers]
        headers, justify = ["layer", "before", "after", "+new", "K", "V"], "rrrrrr"
        if kv.sliding_window:
            for row, r in zip(rows, kv.layers):
                row += [f"{r.keys} ({r.first_key}..{r.first_key + r.keys - 1})" if r.keys else "0",
                        f"local {r.window}" if r.window else "global", f"-{r.dropped}" if r.dropped else ""]
            headers, justify = headers + ["keys read", "kind", "evicted"], justify + "rlr"
        table = columns(headers, rows, justify=justify)
        selected = self.get_component_rich_style("kv-cache--selected")
        for layer_row, line in zip(kv.layers, table[1:]):
            if layer_row.layer == self.cursor.layer:
                line.stylize(selected)
        title = self.wrap_parts([f"{kv.kind.upper()} step {kv.step}", what])
        title[0].stylize("bold", 0, len(kv.kind))
        legend = self.wrap_parts([*LEGEND, *(LEGEND_WINDOW if kv.sliding_window else ())], style="dim")
        none = [r.layer for r in kv.layers if r.no_attention]
        why = [] if not none else self.wrap_parts(
            f"no KV cache at layer{'s' if len(none) > 1 else ''} {', '.join(map(str, none))}: {kv.no_attention_reason}"
            .split(" "), sep=" ", style="dim")
        self.first_row = 2 + len(title) + len(summary) + len(why) + len(legend)  # where the table's rows start (clicks)
        return [*title, *summary, *why, appended, *legend, *table]
