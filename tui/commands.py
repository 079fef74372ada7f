"""Command palette (Ctrl+P) providers: jump anywhere by typing.

    a step        `12`, `step 12`, or the text of the token it chose (`Paris`)
    a layer/head  `layer 5`, `head 3`, `L5 H3`, `5.3`
    a tensor      fuzzy name of any tensor of the current step (`res post 10` -> blocks.10.hook_resid_post)
    a pane        `attention`, `tensors`, ...
    a breakpoint  `p>0.9 and entropy<0.5` -> add it (also `break ...`)
    a watch       `norm(blocks.10.hook_resid_post[-1])` -> watch it (also `watch ...`)

Every text from the trace reaches the palette as plain text, never markup: token text by `display_token`,
the rest inert since the reader (tracer/inert.py); what the user typed through `inert`.
"""

from __future__ import annotations

import re
from functools import partial
from typing import cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from stepscope.tracer.inert import inert
from stepscope.tracer.names import split_block_name
from stepscope.tui.app_view import DebuggerApp
from stepscope.tui.breakpoints import Breakpoint, BreakpointError
from stepscope.tui.screens.main import PANES
from stepscope.tui.text import display_token
from stepscope.tui.views.vocab import tok_text
from stepscope.tui.watch import ExprError, Watch

_NUMBER = re.compile(r"^\s*(?:step\s*|g\s*)?(-?\d+)\s*$", re.IGNORECASE)
_LAYER_HEAD = re.compile(r"^\s*(?:l(?:ayer)?\s*(\d+))?\s*(?:[,.\s]\s*)?(?:h(?:ead)?\s*(\d+))?\s*$", re.IGNORECASE)
_DOTTED = re.compile(r"^\s*(\d+)\.(\d+)\s*$")
_PREFIX = re.compile(r"^\s*(break(?:point)?|watch)\s+(.*)$", re.IGNORECASE | re.DOTALL)
MAX_TOKEN_HITS = 50
EXACT = 1000.0  # Textual's matcher scores are unbounded (≈1-20): an exact hit must rank above them
MAX_TENSOR_HITS = 40


def _app_ready(app) -> bool:
    return getattr(app, "trace", None) is not None and len(app.trace.steps) > 0


def step_label(trace, index: int) -> str:
    """`step 3 → ·Paris` (the token text made visible and inert)."""
    token = trace.manifest["steps"][index].get("token") or {}
    return f"step {index} → {display_token(tok_text(token), bool(token.get('special'))).plain}"


class StepCommands(Provider):
    """Go to a step by number or by the text of the token it chose."""

    async def search(self, query: str) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        if not _app_ready(app):
            return
        assert app.trace is not None  # _app_ready
        trace, n = app.trace, len(app.trace.steps)
        m = _NUMBER.match(query)
        if m:
            index = int(m.group(1))
            index = index + n if index < 0 else index
            if 0 <= index < n:
                yield Hit(EXACT, step_label(trace, index), partial(app.move, step=index), help="go to this step")
            return
        needle = query.strip()
        if not needle:
            return
        matcher = self.matcher(needle)
        hits = []
        for index, entry in enumerate(trace.manifest["steps"]):
            token = entry.get("token") or {}
            text = tok_text(token)
            exact = text.strip() == needle or text == query
            score = EXACT if exact else matcher.match(text.strip()) * 0.9
            if score > 0:
                hits.append((score, index))
        hits.sort(key=lambda h: (-h[0], h[1]))
        for score, index in hits[:MAX_TOKEN_HITS]:
            label = step_label(trace, index)
            yield Hit(score, matcher.highlight(label), partial(app.move, step=index), text=label,
                      help="go to the step that chose this token")

    async def discover(self) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        if _app_ready(app):
            yield DiscoveryHit("go to step… (type a number or a token's text)", app.action_goto,
                               help="step by number; or type the text of a generated token")


class PlaceCommands(Provider):
    """A layer, a head, a pane."""

    async def search(self, query: str) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        if not _app_ready(app):
            return
        assert app.trace is not None  # _app_ready
        model = app.trace.model
        n_layers, n_heads = int(model.get("n_layers") or 0), int(model.get("n_heads") or 0)
        m = _DOTTED.match(query) or (_LAYER_HEAD.match(query) if re.search(r"[lLhH]", query) else None)
        if m and (m.group(1) or m.group(2)):
            layer = int(m.group(1)) if m.group(1) else None
            head = int(m.group(2)) if m.group(2) else None
            changes = {}
            if layer is not None and layer < n_layers:
                changes["layer"] = layer
            if head is not None and head < n_heads:
                changes["head"] = head
            if changes:
                label = " ".join(f"{k} {v}" for k, v in changes.items())
                yield Hit(EXACT, label, partial(app.move, **changes), help="select it (sidebar, heatmap, tensors)")
        matcher = self.matcher(query)
        for pid, label, _ in PANES:
            text = f"pane: {label}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score * 0.8, matcher.highlight(text), partial(app.main_screen.action_show_pane, pid),
                          text=text, help="show this pane")

    async def discover(self) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        for pid, label, _ in PANES:
            yield DiscoveryHit(f"pane: {label}", partial(app.main_screen.action_show_pane, pid), help="show this pane")


def goto_tensor(app, name: str) -> None:
    """Show the Tensors pane with `name` selected (its layer becomes the cursor's)."""
    block = split_block_name(name)
    if block is not None:
        app.move(layer=block[0])
    app.main_screen.show_tensor(name)


class TensorCommands(Provider):
    """A tensor of the current step by fuzzy name."""

    async def search(self, query: str) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        if not _app_ready(app) or not query.strip():
            return
        try:
            assert app.trace is not None  # _app_ready
            names = app.trace.steps[app.step].names
        except Exception:  # noqa: BLE001 - an unreadable step: no tensor hits (the app reports it)
            return
        compact = query.replace(" ", "")
        matcher = self.matcher(compact)
        hits = []
        for name in names:
            score = matcher.match(name)
            if score > 0:
                hits.append((score, name))
        hits.sort(key=lambda h: -h[0])
        for score, name in hits[:MAX_TENSOR_HITS]:
            label = f"tensor {name}"  # recorded names are inert since the reader
            yield Hit(score * 0.85, matcher.highlight(label), partial(goto_tensor, app, name), text=label,
                      help="show it in the Tensors pane")


class ActionCommands(Provider):
    """Add a breakpoint or a watch from the text typed; open the screens that list them."""

    async def search(self, query: str) -> Hits:
        app = cast(DebuggerApp, self.app)  # the app's own state (App[object] to textual)
        if not _app_ready(app) or not query.strip():
            return
        m = _PREFIX.match(query)
        kind, body = (m.group(1).lower()[:5], m.group(2)) if m else (None, query)
        if kind in (None, "break"):
            try:
                bp = Breakpoint.parse(body)
            except BreakpointError:
                bp = None
            if bp is not None:
                label = f"add breakpoint: {inert(bp.spec)}"
                yield Hit(EXACT if kind else 0.7, label, partial(add_breakpoint, app, bp), text=label,
                          help=inert(bp.describe()))
        if kind in (None, "watch"):
            try:
                watch = Watch.compile(body, app.trace)
            except ExprError:
                watch = None
            if watch is not None:
                label = f"watch: {inert(watch.text)}"
                yield Hit(EXACT if kind else 0.6, label, partial(add_watch, app, watch.text), text=label,
                          help="its value and a sparkline over all steps in the sidebar")
        matcher = self.matcher(query)
        for text, action, help_text in self._fixed(app):
            score = matcher.match(text)
            if score > 0:
                yield Hit(score * 0.8, matcher.highlight(text), action, text=text, help=help_text)

    @staticmethod
    def _fixed(app):
        yield "breakpoints…", app.action_breakpoints, "add, list and remove breakpoints"
        yield "watch an expression…", app.action_add_watch, "p(\" Paris\"), entropy, norm(...), pattern(L, H)[q, k] …"
        if hasattr(app, "action_live_settings"):
            yield "sampler settings… (live)", app.action_live_settings, "temperature, top-k, top-p, min-p, seed, token limit"

    async def discover(self) -> Hits:
        for text, action, help_text in self._fixed(self.app):
            yield DiscoveryHit(text, action, help=help_text)


def add_breakpoint(app, bp: Breakpoint) -> None:
    app.breakpoints.add(bp)
    app.notify(f"breakpoint added: {inert(bp.describe())}", timeout=3, markup=False)


def add_watch(app, text: str) -> None:
    error = app.main_screen.add_watch(text)
    if error:
        app.notify(inert(error), severity="warning", timeout=4, markup=False)


PROVIDERS = (StepCommands, PlaceCommands, TensorCommands, ActionCommands)
