"""The debugger's cursor: one immutable value (step, layer, head, selected attention cell) owned by
the app and handed to every pane. `clamped(trace)` makes any value valid for a trace."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

FIELDS = ("step", "layer", "head", "query", "key")


@dataclass(frozen=True)
class Cursor:
    """Where the user is looking. `query`/`key` are token positions of the selected attention cell
    (None: no cell selected, the heatmap shows its default)."""

    step: int = 0
    layer: int = 0
    head: int = 0
    query: int | None = None
    key: int | None = None

    def moved(self, **changes) -> "Cursor":
        """A copy with `changes` applied (fields not named keep their value)."""
        return replace(self, **changes)

    def changed(self, other: "Cursor | None") -> frozenset[str]:
        """Names of the fields that differ from `other` (every field when other is None)."""
        if other is None:
            return frozenset(FIELDS)
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name))

    def clamped(self, trace) -> "Cursor":
        """The nearest valid cursor for `trace` (no trace: the origin)."""
        if trace is None:
            return Cursor()
        n_steps = len(trace.steps)
        model = trace.model
        step = _clamp(self.step, n_steps - 1)
        layer = _clamp(self.layer, int(model.get("n_layers") or 1) - 1)
        head = _clamp(self.head, int(model.get("n_heads") or 1) - 1)
        query, key = self.query, self.key
        if query is not None or key is not None:
            last = len(trace.tokens) - 1
            query = None if query is None else _clamp(query, last)
            key = None if key is None else _clamp(key, last)
        return Cursor(step, layer, head, query, key)


def _clamp(value, top: int) -> int:
    return max(0, min(int(value), max(top, 0)))
