"""Breakpoints of the step-through debugger: pure logic, no Textual.

A breakpoint is one condition or several joined by `and` (all must hold). Conditions compare a
watch expression (`tui.watch`) in either direction, or test the chosen token's text or NaN/inf:

    p<0.3  p>0.9        p(chosen): final sampling probability of the chosen token
    top1>0.8            p(top-1): raw probability of the most likely token
    entropy<0.5         entropy (nats) of the sampling distribution
    rank>1              rank of the chosen token by logit (1 = top)
    rank(" London")<3   any watch expression: p(" Paris")>0.5, lens(12, " Paris")>0.1, norm(...)>40
    id=7042  step=5     the chosen token id, the step index (`=` means equal; also != <= >=)
    text=Paris          the chosen token's text (surrounding whitespace ignored); text="  " exact
    nan                 any recorded tensor of the step holds NaN or inf
    p>0.9 and entropy<0.5      both at once

Conditions on the manifest entry (everything above but expressions naming tensors, tokens or the
logit lens) are checked without opening a step file, so scanning 1,000 steps costs no file access.

    from stepscope.tui.breakpoints import Breakpoint, BreakpointSet
    bps = BreakpointSet([Breakpoint.parse("p>0.9 and entropy<0.5")])
    hit = bps.first_hit(trace.steps[4], trace)   # the Breakpoint that fires, or None
    i, bp = bps.scan(trace.manifest["steps"], start=1, trace=trace)
    bp.explain(step, trace)                      # "p(chosen) > 0.9 (0.934) and entropy < 0.5 (0.21)"
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepscope.tracer.trace_format import TraceError
from stepscope.tui.watch import ExprError, fresh_step, parse_comparison, unparse
from stepscope.tui.watch.evaluate import VARIABLES, Context, EvalError, check, compare, evaluate, needs_arrays
from stepscope.tui.watch.parse import Compare, Name

SYNTAX_HELP = ('p<0.3 · p>0.9 · top1>0.8 · entropy<0.5 · rank>1 · rank(" London")<3 · id=7042 · step=5 · '
               'text=Paris · nan · join with "and"')

_WORDS = {"p": "p(chosen)", "top1": "p(top-1)", "rank": "rank(chosen)", "id": "chosen id"}
_TOP_LEVEL = {"logits", "hook_embed", "hook_pos_embed"}  # recorded names without a dot


class BreakpointError(ValueError):
    """A breakpoint spec that cannot be parsed; the message says what is expected (one line)."""


def step_nonfinite(step: Any) -> list[str]:
    """The recorded names holding NaN/inf of a step (from its manifest entry, no array read)."""
    if isinstance(step, dict):
        return list(step.get("nonfinite") or [])
    return list(getattr(step, "nonfinite", None) or [])


def _entry(step: Any) -> dict:
    return step if isinstance(step, dict) else step.entry


@dataclass(frozen=True)
class TokenText:
    """The chosen token's text is `text` (also when it only differs by surrounding whitespace)."""

    text: str

    def holds(self, step, trace) -> tuple[bool, str]:
        text = (_entry(step).get("token") or {}).get("text")
        ok = isinstance(text, str) and (text == self.text or text.strip() == self.text)
        return ok, repr(text) if isinstance(text, str) else "?"

    @property
    def spec(self) -> str:
        return f"text={self.text!r}" if self.text != self.text.strip() or " and " in self.text else f"text={self.text}"

    def describe(self) -> str:
        return f"chosen token text is {self.text!r}"


@dataclass(frozen=True)
class NonFinite:
    """Any recorded tensor of the step holds NaN or inf (from the manifest entry)."""

    def holds(self, step, trace) -> tuple[bool, str]:
        names = step_nonfinite(step)
        return bool(names), ", ".join(names[:3]) + (" …" if len(names) > 3 else "")

    spec = "nan"

    def describe(self) -> str:
        return "any tensor has NaN/inf"


@dataclass(frozen=True)
class Comparison:
    """`expression OP expression`; a NaN value fires an ordering comparison (something is off)."""

    tree: Compare

    @property
    def reads_arrays(self) -> bool:
        return needs_arrays(self.tree)

    def holds(self, step, trace) -> tuple[bool, str]:
        if self.reads_arrays and trace is None:
            return False, "needs the trace"
        if isinstance(step, dict) and self.reads_arrays:
            step = fresh_step(trace, step)  # a private view of the step file (thread-safe to build)
        ctx = Context(trace, step)
        try:
            left, right = (evaluate(side, ctx) for side in (self.tree.left, self.tree.right))
            a, b = _number(left), _number(right)
        except (EvalError, ExprError, TraceError, OSError, KeyError, ValueError, IndexError) as exc:
            return False, str(exc)
        if self.tree.op in ("<", "<=", ">", ">=") and (math.isnan(a) or math.isnan(b)):
            return True, "NaN"
        return compare(self.tree.op, a, b), f"{a:.4g}"

    @property
    def spec(self) -> str:
        op = "=" if self.tree.op == "==" else self.tree.op
        return f"{unparse(self.tree.left)}{op}{unparse(self.tree.right)}"

    def describe(self) -> str:
        if self.tree.op == "==" and self.tree.left == Name("step"):
            return f"at step {unparse(self.tree.right)}"
        op = "=" if self.tree.op == "==" else self.tree.op
        return f"{_words(self.tree.left)} {op} {_words(self.tree.right)}"


def _words(node) -> str:
    if isinstance(node, Name) and node.name in _WORDS:
        return _WORDS[node.name]
    return unparse(node)


def _number(value) -> float:
    if isinstance(value, str):
        raise EvalError("a token text is not a number")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise EvalError(f"an array of shape {list(value.shape)} is not one number")
        return float(value.reshape(()))
    return float(value)


_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_TEXT = re.compile(r"^\s*(text|token)\s*=(.*)$", re.IGNORECASE | re.DOTALL)


def _split_and(spec: str) -> list[str]:
    """Split on the word `and` outside quotes."""
    parts, start, quote, i = [], 0, None, 0
    while i < len(spec):
        ch = spec[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        else:
            m = _AND.match(spec, i)
            if m and i > start:
                parts.append(spec[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(spec[start:])
    return parts


def _clause(raw: str):
    text = raw.strip()
    if not text:
        raise BreakpointError(f"empty condition; examples: {SYNTAX_HELP}")
    if text.lower() in ("nan", "inf", "nonfinite", "nan/inf"):
        return NonFinite()
    m = _TEXT.match(raw)
    if m:
        value = m.group(2)
        if len(value.strip()) >= 2 and value.strip()[0] == value.strip()[-1] and value.strip()[0] in "\"'":
            value = value.strip()[1:-1]  # quoted: exact text, whitespace included
        elif value.strip():
            value = value.strip()
        if value == "":
            raise BreakpointError("text= needs a token text, e.g. text=Paris")
        return TokenText(value)
    try:
        tree = parse_comparison(text)
        check(tree, None)
    except ExprError as exc:
        raise BreakpointError(f"cannot read {text!r}: {exc}") from None
    for node in (tree.left, tree.right):
        if isinstance(node, Name) and node.name not in VARIABLES and "." not in node.name \
                and node.name not in _TOP_LEVEL:
            raise BreakpointError(f"unknown variable {node.name!r}; examples: {SYNTAX_HELP}")
    return Comparison(tree)


@dataclass(frozen=True)
class Breakpoint:
    """Stop where every condition holds. Build with `Breakpoint.parse(spec)`."""

    conditions: tuple
    enabled: bool = True

    @classmethod
    def parse(cls, spec: str) -> Breakpoint:
        """`p>0.9`, `entropy<0.5 and top1<0.5`, `rank(" London")<3`, `text=Paris`, `nan`, `step=5`."""
        if not spec.strip():
            raise BreakpointError(f"empty breakpoint; examples: {SYNTAX_HELP}")
        if len(spec) > 1000:
            raise BreakpointError("breakpoint longer than 1000 characters")
        return cls(tuple(_clause(part) for part in _split_and(spec)))

    @property
    def reads_arrays(self) -> bool:
        """Whether checking it opens step files (False: the manifest entry is enough)."""
        return any(getattr(c, "reads_arrays", False) for c in self.conditions)

    def matches(self, step: Any, trace=None) -> bool:
        """Whether it fires at `step` (a `tracer.Step` or a manifest entry; `trace` for expressions)."""
        if not self.enabled:
            return False
        return all(c.holds(step, trace)[0] for c in self.conditions)

    def explain(self, step: Any, trace=None) -> str:
        """The conditions with the values that made them fire, e.g. `p(chosen) > 0.9 (0.934)`."""
        return " and ".join(f"{c.describe()} ({c.holds(step, trace)[1]})" for c in self.conditions)

    @property
    def spec(self) -> str:
        """The spec string that parses back to this breakpoint."""
        return " and ".join(c.spec for c in self.conditions)

    def describe(self) -> str:
        """Plain words, e.g. "p(chosen) < 0.3 and entropy > 2" (plain text: show it with a rich Text)."""
        return " and ".join(c.describe() for c in self.conditions)

    def __str__(self) -> str:
        return self.describe()


class BreakpointSet:
    """An ordered list of breakpoints without duplicates."""

    def __init__(self, breakpoints: Iterable[Breakpoint] = ()):
        self._items: list[Breakpoint] = []
        for bp in breakpoints:
            self.add(bp)

    def add(self, bp: Breakpoint | str) -> Breakpoint:
        """Add a breakpoint (or a spec string); an equal one already there is kept once."""
        if isinstance(bp, str):
            bp = Breakpoint.parse(bp)
        if bp not in self._items:
            self._items.append(bp)
        return bp

    def remove(self, index: int) -> Breakpoint:
        return self._items.pop(index)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __getitem__(self, index: int) -> Breakpoint:
        return self._items[index]

    def __bool__(self) -> bool:
        return bool(self._items)

    def first_hit(self, step: Any, trace=None) -> Breakpoint | None:
        """The first breakpoint firing at `step`, or None."""
        for bp in self._items:
            if bp.matches(step, trace):
                return bp
        return None

    def scan(self, steps: Sequence[Any], start: int = 0, stop: int | None = None,
             trace=None) -> tuple[int, Breakpoint] | None:
        """(index, breakpoint) of the first step in steps[start:stop] where one fires, or None."""
        end = len(steps) if stop is None else min(stop, len(steps))
        if not self._items:
            return None
        for i in range(max(start, 0), end):
            hit = self.first_hit(steps[i], trace)
            if hit is not None:
                return i, hit
        return None
