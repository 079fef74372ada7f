"""Layers list: one row per layer of the current step with a small summary.

Columns: layer, residual-stream norm after the block (last position), mean attention entropy
over heads (last query row, nats), and the logit-lens top token with its probability. The
selected layer is highlighted; only the rows that fit are rendered.

Keys (screen level): `j`/`↓` next layer, `k`/`↑` previous layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from tui.views.cache import cached
from tui.widgets.common import fmt_num, token_label


@dataclass(frozen=True)
class LayerSummary:
    layer: int
    resid_norm: float | None
    attn_entropy: float | None
    lens_id: int | None
    lens_prob: float | None


def head_entropies(step, layer: int) -> np.ndarray | None:
    """Entropy (nats) of each query head's attention over keys, last query row: [n_heads]."""
    name = f"blocks.{layer}.attn.hook_pattern"
    if step is None or name not in step:
        return None

    def compute():
        row = np.asarray(step[name][:, -1, :], dtype=np.float64)  # [n_heads, S]
        safe = np.where(row > 0, row, 1.0)
        return -(row * np.log(safe)).sum(axis=-1)  # [n_heads]

    return cached(step, ("head_entropy", layer), compute)


def head_argmax(step, layer: int) -> np.ndarray | None:
    """Key position each head attends most from the last query row: [n_heads]."""
    name = f"blocks.{layer}.attn.hook_pattern"
    if step is None or name not in step:
        return None
    return cached(step, ("head_argmax", layer), lambda: np.argmax(step[name][:, -1, :], axis=-1))


def layer_summaries(step, n_layers: int) -> list[LayerSummary]:
    """Per-layer summary rows for a step (cached per step file)."""

    def compute():
        lens_ids = step["logit_lens.ids"] if "logit_lens.ids" in step else None
        lens_probs = step["logit_lens.probs"] if "logit_lens.probs" in step else None
        rows = []
        for layer in range(n_layers):
            name = f"blocks.{layer}.hook_resid_post"
            norm = float(np.linalg.norm(np.asarray(step[name][-1], dtype=np.float64))) if name in step else None
            ent = head_entropies(step, layer)
            has_lens = lens_ids is not None and layer < len(lens_ids)
            rows.append(
                LayerSummary(
                    layer=layer,
                    resid_norm=norm,
                    attn_entropy=float(ent.mean()) if ent is not None and len(ent) else None,
                    lens_id=int(lens_ids[layer, 0]) if has_lens else None,
                    lens_prob=float(lens_probs[layer, 0]) if has_lens and lens_probs is not None else None,
                )
            )
        return rows

    if step is None:
        return []
    return cached(step, ("layer_summaries", n_layers), compute)


def window(selected: int, total: int, height: int) -> tuple[int, int]:
    """[start, end) of `height` rows containing `selected`, centred where possible."""
    height = max(height, 1)
    if total <= height:
        return 0, total
    start = min(max(selected - height // 2, 0), total - height)
    return start, start + height


class LayersList(Widget):
    """One row per layer; `trace`, `step`, `layer` are set by the app."""

    COMPONENT_CLASSES = {"layers-list--selected", "layers-list--header", "layers-list--dim"}

    step: reactive[int] = reactive(0)
    layer: reactive[int] = reactive(0)

    class Selected(Message):
        """The user picked a layer with the mouse."""

        def __init__(self, layer: int) -> None:
            super().__init__()
            self.layer = layer

    def __init__(self, trace=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace = trace
        self._first_row = 0

    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace = value
        self.refresh()

    def render(self) -> Text:
        trace = self._trace
        if trace is None or not len(trace.steps):
            return Text("layers", style="dim")
        n_layers = int(trace.model.get("n_layers", 0))
        step = trace.steps[min(self.step, len(trace.steps) - 1)]
        rows = layer_summaries(step, n_layers)
        style = self.get_component_rich_style
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append(" L  ‖resid‖  H(attn) lens\n", style=style("layers-list--header"))
        start, end = window(self.layer, len(rows), self.size.height - 1)
        self._first_row = start
        for row in rows[start:end]:
            line = Text(no_wrap=True, overflow="ellipsis", end="")
            line.append(f"{row.layer:>2} {fmt_num(row.resid_norm, 1):>8} {fmt_num(row.attn_entropy, 2):>7} ")
            if row.lens_id is not None:
                line.append_text(token_label(trace, row.lens_id))
            if row.layer == self.layer:
                line.truncate(self.size.width, pad=True)
                line.stylize(style("layers-list--selected"))
            out.append_text(line)
            if row.layer != end - 1:
                out.append("\n")
        return out

    def on_click(self, event) -> None:
        if event.y >= 1:
            self.post_message(self.Selected(self._first_row + event.y - 1))
