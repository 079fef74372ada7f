"""Breakpoints of the step-through debugger: pure logic, no Textual, no array reads.

A breakpoint is evaluated on a step's manifest entry only (`step.token`, `step.sampling`,
`step.index` and the entry's `nonfinite` list), so checking it over a 1,000-step trace
costs no file access.

Kinds and the spec syntax typed in the breakpoints screen (`Breakpoint.parse`):

    text=Paris      the chosen token's text is "Paris" (surrounding whitespace ignored,
                    so `text=Paris` also stops at " Paris"); `text="  "` for exact whitespace
    id=7042         the chosen token id is 7042
    p<0.3           p(chosen) (final sampling probability) is below 0.3
    top1<0.5        p(top-1) (raw probability of the most likely token) is below 0.5
    entropy>2.5     the sampling distribution's entropy (nats) is above 2.5
    nan             any recorded tensor of the step holds NaN or inf
    step=5          at step 5

    from tui.breakpoints import Breakpoint, BreakpointSet
    bps = BreakpointSet([Breakpoint.parse("p<0.3")])
    hit = bps.first_hit(trace.steps[4])      # the Breakpoint that fires, or None
    i, bp = bps.scan(trace.steps, start=1)   # first step index >= start that fires
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TOKEN_TEXT = "text"
TOKEN_ID = "id"
CHOSEN_PROB_BELOW = "p"
TOP1_PROB_BELOW = "top1"
ENTROPY_ABOVE = "entropy"
NONFINITE = "nan"
AT_STEP = "step"

KINDS: dict[str, str] = {
    TOKEN_TEXT: "chosen token text is",
    TOKEN_ID: "chosen token id is",
    CHOSEN_PROB_BELOW: "p(chosen) <",
    TOP1_PROB_BELOW: "p(top-1) <",
    ENTROPY_ABOVE: "entropy >",
    NONFINITE: "any tensor has NaN/inf",
    AT_STEP: "at step",
}

SYNTAX_HELP = "text=Paris · id=7042 · p<0.3 · top1<0.5 · entropy>2.5 · nan · step=5"

_ALIASES = {
    "token": TOKEN_TEXT,
    "text": TOKEN_TEXT,
    "id": TOKEN_ID,
    "token_id": TOKEN_ID,
    "p": CHOSEN_PROB_BELOW,
    "chosen": CHOSEN_PROB_BELOW,
    "p_chosen": CHOSEN_PROB_BELOW,
    "top1": TOP1_PROB_BELOW,
    "top-1": TOP1_PROB_BELOW,
    "p_top1": TOP1_PROB_BELOW,
    "entropy": ENTROPY_ABOVE,
    "h": ENTROPY_ABOVE,
    "nan": NONFINITE,
    "inf": NONFINITE,
    "nonfinite": NONFINITE,
    "step": AT_STEP,
    "at": AT_STEP,
}
# the comparison each kind accepts in a spec
_OPERATORS = {
    TOKEN_TEXT: "=",
    TOKEN_ID: "=",
    CHOSEN_PROB_BELOW: "<",
    TOP1_PROB_BELOW: "<",
    ENTROPY_ABOVE: ">",
    AT_STEP: "=",
}


class BreakpointError(ValueError):
    """A breakpoint spec that cannot be parsed; the message says what is expected."""


def step_nonfinite(step: Any) -> list[str]:
    """The recorded names holding NaN/inf of a step (from its manifest entry, no array read)."""
    if isinstance(step, dict):
        return list(step.get("nonfinite") or [])
    return list(getattr(step, "nonfinite", None) or [])


def _get(step: Any, attr: str, default: Any = None) -> Any:
    if isinstance(step, dict):
        return step.get(attr, default)
    return getattr(step, attr, default)


@dataclass(frozen=True)
class Breakpoint:
    """One stop condition. `kind` is one of `KINDS`; `value` its argument (None for `nan`)."""

    kind: str
    value: Any = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BreakpointError(f"unknown breakpoint kind {self.kind!r}; one of {', '.join(KINDS)}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> "Breakpoint":
        """`text=Paris`, `id=7042`, `p<0.3`, `top1<0.5`, `entropy>2.5`, `nan`, `step=5`."""
        raw = spec.strip()
        if not raw:
            raise BreakpointError(f"empty breakpoint; examples: {SYNTAX_HELP}")
        if raw.lower() in ("nan", "inf", "nonfinite", "nan/inf"):
            return cls(NONFINITE)
        pos = min((i for i in (raw.find("="), raw.find("<"), raw.find(">")) if i >= 0), default=-1)
        if pos <= 0:
            raise BreakpointError(f"cannot read {raw!r}; examples: {SYNTAX_HELP}")
        key, op, arg = raw[:pos].strip().lower(), raw[pos], raw[pos + 1 :]
        kind = _ALIASES.get(key)
        if kind is None or kind == NONFINITE:
            raise BreakpointError(f"unknown breakpoint {key!r}; examples: {SYNTAX_HELP}")
        if op != _OPERATORS[kind]:
            raise BreakpointError(f"{key} takes '{_OPERATORS[kind]}', e.g. {_example(kind)}")
        if kind == TOKEN_TEXT:
            text = arg
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
                text = text[1:-1]  # quoted: exact text, whitespace included
            elif text.strip():
                text = text.strip()
            if text == "":
                raise BreakpointError("text= needs a token text, e.g. text=Paris")
            return cls(TOKEN_TEXT, text)
        arg = arg.strip()
        if kind in (TOKEN_ID, AT_STEP):
            try:
                value = int(arg)
            except ValueError:
                raise BreakpointError(f"{key} takes a whole number, e.g. {_example(kind)}") from None
            if value < 0:
                raise BreakpointError(f"{key} must be 0 or more")
            return cls(kind, value)
        try:
            number = float(arg)
        except ValueError:
            raise BreakpointError(f"{key} takes a number, e.g. {_example(kind)}") from None
        if not math.isfinite(number):
            raise BreakpointError(f"{key} takes a finite number")
        return cls(kind, number)

    # -- evaluation -----------------------------------------------------------------------------
    def matches(self, step: Any) -> bool:
        """Whether this breakpoint fires at `step` (a `tracer.Step` or a manifest step entry)."""
        if not self.enabled:
            return False
        kind = self.kind
        if kind == AT_STEP:
            return int(_get(step, "index", -1)) == self.value
        if kind == NONFINITE:
            return bool(step_nonfinite(step))
        token = _get(step, "token", None) or {}
        if kind == TOKEN_TEXT:
            text = token.get("text")
            if not isinstance(text, str):
                return False
            return text == self.value or text.strip() == self.value
        if kind == TOKEN_ID:
            return token.get("id") == self.value
        sampling = _get(step, "sampling", None) or {}
        if kind == CHOSEN_PROB_BELOW:
            return _lt(sampling.get("chosen_prob"), self.value)
        if kind == TOP1_PROB_BELOW:
            return _lt(sampling.get("top1_prob"), self.value)
        if kind == ENTROPY_ABOVE:
            value = sampling.get("entropy")
            return isinstance(value, (int, float)) and (value > self.value or math.isnan(value))
        return False  # pragma: no cover - __post_init__ rejects unknown kinds

    # -- display --------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The spec string that parses back to this breakpoint."""
        if self.kind == NONFINITE:
            return "nan"
        if self.kind == TOKEN_TEXT:
            text = self.value
            return f"text={text!r}" if text != text.strip() else f"text={text}"
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.kind}{_OPERATORS[self.kind]}{value}"

    def describe(self) -> str:
        """Plain words, e.g. "p(chosen) < 0.3" (plain text: show it with a rich Text, never markup)."""
        if self.kind == NONFINITE:
            return KINDS[NONFINITE]
        if self.kind == TOKEN_TEXT:
            value = repr(self.value)
        elif isinstance(self.value, float):
            value = f"{self.value:g}"
        else:
            value = str(self.value)
        return f"{KINDS[self.kind]} {value}"

    def __str__(self) -> str:
        return self.describe()


def _lt(value: Any, bound: float) -> bool:
    return isinstance(value, (int, float)) and (value < bound or math.isnan(value))


def _example(kind: str) -> str:
    return {
        TOKEN_TEXT: "text=Paris",
        TOKEN_ID: "id=7042",
        CHOSEN_PROB_BELOW: "p<0.3",
        TOP1_PROB_BELOW: "top1<0.5",
        ENTROPY_ABOVE: "entropy>2.5",
        AT_STEP: "step=5",
    }.get(kind, "nan")


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

    def first_hit(self, step: Any) -> Breakpoint | None:
        """The first breakpoint firing at `step`, or None."""
        for bp in self._items:
            if bp.matches(step):
                return bp
        return None

    def scan(self, steps: Sequence[Any], start: int = 0, stop: int | None = None) -> tuple[int, Breakpoint] | None:
        """(index, breakpoint) of the first step in steps[start:stop] where one fires, or None."""
        end = len(steps) if stop is None else min(stop, len(steps))
        if not self._items:
            return None
        for i in range(max(start, 0), end):
            hit = self.first_hit(steps[i])
            if hit is not None:
                return i, hit
        return None
