"""Watch expressions: a small language of its own (never Python `eval`) over the trace reading API.

    w = Watch.compile('norm(blocks.1.hook_resid_post[-1])', trace)   # ExprError: one line
    w.at(trace, 3)           # float (NaN when it cannot be computed at that step; w.error_at says why)
    w.values(trace)          # every step, numpy [n_steps]

The grammar is in `tui.watch.parse`, the variables and functions in `tui.watch.evaluate`.
Values are cached per step file, so a step is read once whatever the number of redraws.
"""

from __future__ import annotations

import math

import numpy as np

from stepscope.tracer.reader import Trace
from stepscope.tracer.trace_format import TraceError
from stepscope.tui.watch.evaluate import FUNCTIONS, VARIABLES, Context, EvalError, check, needs_arrays, scalar_value
from stepscope.tui.watch.parse import ExprError, parse, parse_comparison, unparse

__all__ = ["FUNCTIONS", "VARIABLES", "EvalError", "ExprError", "Watch", "fresh_step", "private_trace", "parse", "parse_comparison",
           "unparse"]


def fresh_step(trace, entry: dict):
    """A private `Step` over the step file of manifest `entry`, sharing nothing with `trace.steps`
    (safe to build and read in a worker thread; drop it after use)."""
    return trace.steps.fresh(entry)


def private_trace(trace, previous=None):
    """A Trace over the same directory whose manifest lists are copies (the steps and tokens so
    far): a worker reads it while the UI thread keeps the app's Trace to itself. `previous` (an
    earlier private copy of the same trace) is grown instead, so what it loaded lazily (a logit
    lens' unembedding) is loaded once."""
    steps, tokens = trace.manifest["steps"], trace.tokens
    if previous is not None and previous.path == trace.path:
        n, mine = len(previous.manifest["steps"]), previous.manifest["steps"]
        if n <= len(steps) and all(mine[i] is steps[i] for i in (0, n - 1) if n):
            if n < len(steps):
                previous.add_steps(list(steps[n:]), list(tokens[len(previous.tokens):]))
            return previous
    return Trace(trace.path, {**trace.manifest, "steps": list(steps), "tokens": list(tokens)})


def _key(trace, index: int) -> tuple:
    entry = trace.manifest["steps"][index]
    return (entry.get("file"), entry.get("bytes"), index)


class Watch:
    """A compiled expression and its per-step values (cached)."""

    def __init__(self, tree, text: str):
        self.tree = tree
        self.text = text
        self.reads_arrays = needs_arrays(tree)
        self._values: dict[tuple, float] = {}
        self.version = 0  # bumped by every stored value (views key their drawings on it)
        self._errors: dict[tuple, str] = {}
        self.spark_memo: tuple | None = None  # the watch pane's sparkline: (its key, the drawing)

    @classmethod
    def compile(cls, text: str, trace=None) -> Watch:
        """Parse and check `text` against `trace` (names, functions, token texts); one-line ExprError."""
        tree = parse(text)
        check(tree, trace)
        watch = cls(tree, unparse(tree))
        if trace is not None and len(trace.steps):  # an expression that is no single number anywhere
            try:
                scalar_value(tree, Context(trace, trace.steps[len(trace.steps) - 1]))
            except EvalError as exc:
                if "array of shape" in str(exc) or "token text" in str(exc):
                    raise ExprError(str(exc)) from None
        return watch

    def compute(self, trace, index: int, tokens=None, step=None) -> tuple[float, str | None]:
        """(value, None) or (NaN, why) at step `index`, computed now (no cache); `tokens`: a
        token-text resolver (default: the trace's own); `step`: the step object to read (default
        `trace.steps[index]`)."""
        try:
            step = trace.steps[index] if step is None else step
            return scalar_value(self.tree, Context(trace, step, tokens)), None
        except (EvalError, ExprError) as exc:
            return math.nan, str(exc)
        except (TraceError, OSError, ValueError, KeyError, IndexError) as exc:  # a damaged step file
            return math.nan, f"{type(exc).__name__}: {exc}"

    def store(self, trace, index: int, value: float, error: str | None) -> None:
        key = _key(trace, index)
        self._values[key] = value
        self.version += 1
        if error is not None:
            self._errors[key] = error

    def known(self, trace, index: int) -> bool:
        return _key(trace, index) in self._values

    def at(self, trace, index: int) -> float:
        """The value at step `index` (computed once, then cached)."""
        key = _key(trace, index)
        if key not in self._values:
            self.store(trace, index, *self.compute(trace, index))
        return self._values[key]

    def error_at(self, trace, index: int) -> str | None:
        """Why the value at `index` is NaN (None when it is a number or not computed yet)."""
        return self._errors.get(_key(trace, index))

    def cached(self, trace) -> np.ndarray:
        """Values of every step, NaN where not computed yet: [n_steps]."""
        steps = trace.manifest["steps"]
        return np.array([self._values.get(_key(trace, i), math.nan) for i in range(len(steps))], dtype=np.float64)

    def missing(self, trace) -> list[int]:
        """Indices of steps whose value is not computed yet."""
        return [i for i in range(len(trace.manifest["steps"])) if _key(trace, i) not in self._values]

    def values(self, trace) -> np.ndarray:
        """Values at every step: [n_steps] (computes the missing ones now)."""
        for i in self.missing(trace):
            self.at(trace, i)
        return self.cached(trace)
