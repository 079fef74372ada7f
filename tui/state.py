"""The app's state values: the `Cursor` (where the user looks) and `AppState` (what the debugger
is doing). Both are immutable; only the app replaces them (`StepscopeApp.move`, the app's own
handlers of screen and worker messages), and hands them down to the views."""

from __future__ import annotations

import enum
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

    def moved(self, **changes) -> Cursor:
        """A copy with `changes` applied (fields not named keep their value)."""
        return replace(self, **changes)

    def changed(self, other: Cursor | None) -> frozenset[str]:
        """Names of the fields that differ from `other` (every field when other is None)."""
        if other is None:
            return frozenset(FIELDS)
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name))

    def clamped(self, trace) -> Cursor:
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


class Activity(enum.Enum):
    """What the debugger is doing."""

    IDLE = "idle"
    """Waiting for the user."""
    BUSY = "busy"
    """A worker computes (the model loading, the next step, a branch); keys still work."""
    CONTINUING = "continuing"
    """`c` runs (live generation, or a scan for a breakpoint): any key pauses it."""


@dataclass(frozen=True)
class AppState:
    """The debugger's mode: where the trace comes from, what runs, the status bar's note, and the
    live session's end (as the last message from its worker said)."""

    source: str = "replay"
    """"replay" (a trace read from disk) or "live" (a session computing steps)."""
    activity: Activity = Activity.IDLE
    note: str = ""
    """The status bar's state text (end of trace, a breakpoint, computing step 5…)."""
    finished: bool = False
    """Live: the session ended (EOS or the token limit)."""
    stop_reason: str | None = None

    @property
    def busy(self) -> bool:
        return self.activity is not Activity.IDLE

    @property
    def continuing(self) -> bool:
        return self.activity is Activity.CONTINUING

    def with_(self, **changes) -> AppState:
        """A copy with `changes` applied."""
        return replace(self, **changes)
