"""The (step, layer, head) cursor every trace pane shares: a `trace` attribute and the
`validate_` methods that clamp the three reactives to the trace.

A pane subclasses Widget (or a container) and this mixin, declares the `step`, `layer` and
`head` reactives, and implements `_trace_changed()` (what to redo when the app sets `trace`).
"""

from __future__ import annotations


class TraceHolder:
    """Mixin: the `trace` attribute the app sets; setting it calls `_trace_changed()`."""

    _trace = None

    @property
    def trace(self):
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace = value
        self._trace_changed()

    def _trace_changed(self) -> None:
        self.refresh()


class TraceCursor(TraceHolder):
    """Mixin: `trace` plus clamping validators for the `step`, `layer`, `head` reactives."""

    def _max(self, key: str) -> int:
        """Largest valid index: last step, or model fact `key` (n_layers, n_heads) less one."""
        if self._trace is None:
            return 0
        if key == "step":
            return max(0, len(self._trace.steps) - 1)
        return max(0, int(self._trace.model[key]) - 1)

    def validate_step(self, value: int) -> int:
        return min(max(0, int(value)), self._max("step"))

    def validate_layer(self, value: int) -> int:
        return min(max(0, int(value)), self._max("n_layers"))

    def validate_head(self, value: int) -> int:
        return min(max(0, int(value)), self._max("n_heads"))
