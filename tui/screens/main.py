"""The main screen: the debugger itself.

Layout (top to bottom): status bar · token strip · pane tabs · [layers + heads sidebar | the
active pane] · footer. At 80×24 the sidebar narrows; `f` hides it to give the pane the full
width. While a live session loads, a loading panel takes the place of the body.

Only the visible pane gets the current `trace`/`step`/`layer`/`head` (a hidden pane reads
nothing); a pane is brought up to date when its tab is shown.

Keys: see the table in `MainScreen`'s docstring (and `?` in the app).
"""

from __future__ import annotations

import importlib

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Footer, Static, Tab, Tabs

from tui.widgets.heads import HeadsList
from tui.widgets.layers import LayersList
from tui.widgets.loading import LoadingPanel
from tui.widgets.status_bar import StatusBar
from tui.widgets.token_strip import TokenStrip

NARROW_WIDTH = 110

# (tab id, tab label, module, candidate class names) in key order 1..7. Owner A's panes are
# imported lazily and by name so that a missing one shows a placeholder instead of breaking.
PANES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("candidates", "Candidates", "tui.widgets.candidates", ("CandidatesPane",)),
    ("heatmap", "Attention", "tui.widgets.heatmap", ("HeatmapPane", "AttentionHeatmap", "Heatmap")),
    ("tensors", "Tensors", "tui.widgets.tensor_inspector", ("TensorInspector", "TensorInspectorPane")),
    ("lens", "Lens", "tui.widgets.logit_lens", ("LogitLensPane", "LogitLens")),
    ("kv", "KV", "tui.widgets.kv_cache", ("KVCachePane", "KvCachePane", "KVCache")),
    ("heads", "Heads", "tui.widgets.heads_overview", ("HeadsOverview",)),
    ("model", "Model", "tui.widgets.model_overview", ("ModelOverviewPane", "ModelOverview")),
]
PANE_IDS = [p[0] for p in PANES]


def pane_class(module: str, names: tuple[str, ...]) -> type[Widget] | None:
    """The pane widget class of a module, or None when the module is not there (yet)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    for name in names:
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and issubclass(cls, Widget):
            return cls
    for value in vars(mod).values():  # any widget defined there with the pane contract
        if (
            isinstance(value, type)
            and issubclass(value, Widget)
            and value.__module__ == mod.__name__
            and "step" in getattr(value, "_reactives", {})
        ):
            return value
    return None


class PaneTabs(Tabs, can_focus=False):
    """The pane tabs; never focused, so ←/→ always step (number keys pick a pane). The underline
    moves at once (no 0.3 s animation: a pane switch must redraw within the latency budget)."""

    def _highlight_active(self, animate: bool = True) -> None:
        super()._highlight_active(animate=False)


class MissingPane(Static):
    """Stands in for a pane whose module is not available."""

    def __init__(self, trace=None, what: str = "", **kwargs) -> None:
        super().__init__(Text(f"{what}: not available in this build", style="dim"), **kwargs)
        self.trace = trace


class MainScreen(Screen[None]):
    """The debugger screen. The app owns the state (`app.step`, `app.layer`, `app.head`) and
    calls `sync()`; widgets get attributes, their messages come back up here.

    | key | action |
    |---|---|
    | `n` `→` | next step (live: computes the next token at the end) |
    | `p` `←` | previous step |
    | `c` | continue until EOS, the token limit or a breakpoint (any key or `Esc` pauses) |
    | `g` | go to step |
    | `Home` `End` | first / last step |
    | `j` `↓` / `k` `↑` | next / previous layer |
    | `l` / `h` | next / previous head |
    | `1`..`7` | show a pane: candidates, attention, tensors, logit lens, KV cache, heads, model |
    | `Tab` | focus the next pane (its own keys then apply) |
    | `f` | hide / show the layers+heads sidebar |
    | `b` | breakpoints |
    | `w` | write the live session to a trace directory |
    | `?` | help (every key) |
    | `q` | quit |
    """

    AUTO_FOCUS = ""  # nothing focused: the debugger keys (arrows included) act at once

    BINDINGS = [
        Binding("n,right", "app.next_step", "Next", tooltip="Next step (live: computes the next token at the end)"),
        Binding("p,left", "app.prev_step", "Prev", tooltip="Previous step"),
        Binding("c", "app.continue_run", "Continue",
                tooltip="Continue until EOS, the limit or a breakpoint; any key or Esc pauses"),
        Binding("escape", "pause_or_blur", "Pause", show=False,
                tooltip="Pause a continue; otherwise leave the focused pane"),
        Binding("g", "app.goto", "Go to", tooltip="Go to step"),
        Binding("home", "app.first_step", "First", show=False, tooltip="First step"),
        Binding("end", "app.last_step", "Last", show=False, tooltip="Last step"),
        Binding("j,down", "app.move_layer(1)", "Layer+", show=False, tooltip="Next layer"),
        Binding("k,up", "app.move_layer(-1)", "Layer-", show=False, tooltip="Previous layer"),
        Binding("l", "app.move_head(1)", "Head+", show=False, tooltip="Next head"),
        Binding("h", "app.move_head(-1)", "Head-", show=False, tooltip="Previous head"),
        *[
            Binding(str(i + 1), f"show_pane('{pid}')", label, show=False, tooltip=f"Show the {label} pane")
            for i, (pid, label, _, _) in enumerate(PANES)
        ],
        Binding("f", "toggle_sidebar", "Sidebar", show=False, tooltip="Hide/show the layers and heads sidebar"),
        Binding("b", "app.breakpoints", "Breaks", tooltip="Breakpoints: add, list, remove"),
        Binding("w", "app.write", "Write", tooltip="Write the live session to a trace directory"),
        Binding("question_mark", "app.help", "Help", tooltip="Help: every key"),
        Binding("q", "app.quit", "Quit", tooltip="Quit"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._panes: dict[str, Widget] = {}

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield TokenStrip(id="strip")
        tabs = [Tab(Text(f"{i + 1} {label}"), id=f"tab-{pid}") for i, (pid, label, _, _) in enumerate(PANES)]
        yield PaneTabs(*tabs, id="tabs")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield LayersList(id="layers")
                yield HeadsList(id="heads")
            with ContentSwitcher(initial="pane-candidates", id="panes"):
                for pid, label, module, names in PANES:
                    cls = pane_class(module, names)
                    wid = f"pane-{pid}-widget"
                    pane = cls(id=wid) if cls is not None else MissingPane(what=label, id=wid)
                    self._panes[pid] = pane
                    with Container(id=f"pane-{pid}", classes="pane-box"):
                        yield pane
        yield LoadingPanel(id="loading")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#layers").border_title = "layers"
        self.query_one("#heads").border_title = "heads"
        self.set_class(self.app.size.width < NARROW_WIDTH, "-narrow")
        self.set_state(getattr(self.app, "state_text", ""), getattr(self.app, "busy", False))
        progress = getattr(self.app, "load_progress", None)
        if progress is not None:
            self.set_progress(*progress)
        self.sync()

    def on_resize(self, event) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    # -- state down ---------------------------------------------------------------------------
    @property
    def active_pane_id(self) -> str:
        current = self.query_one(ContentSwitcher).current or "pane-candidates"
        return current.removeprefix("pane-")

    @property
    def active_pane(self) -> Widget:
        return self._panes[self.active_pane_id]

    def pane(self, pane_id: str) -> Widget:
        return self._panes[pane_id]

    def sync(self) -> None:
        """Push the app's state to the visible widgets."""
        app = self.app
        trace = getattr(app, "trace", None)
        loading = trace is None
        self.set_class(loading, "-loading")
        step, layer, head = app.step, app.layer, app.head
        status = self.query_one(StatusBar)
        _set(status, trace, step=step, layer=layer, head=head)
        status.mode = app.mode
        strip = self.query_one(TokenStrip)
        _set(strip, trace, step=step)
        _set(self.query_one(LayersList), trace, step=step, layer=layer)
        _set(self.query_one(HeadsList), trace, step=step, layer=layer, head=head)
        _set(self.active_pane, trace, step=step, layer=layer, head=head)

    def refresh_trace_views(self) -> None:
        """The trace grew (live): redraw what shows the token list and step count."""
        for widget in (self.query_one(StatusBar), self.query_one(TokenStrip)):
            widget.refresh()

    def prefetch_jobs(self, step_index: int) -> list:
        """Callables that warm the caches of the visible widgets for `step_index` (each cheap)."""
        trace = getattr(self.app, "trace", None)
        if trace is None or not 0 <= step_index < len(trace.steps):
            return []
        jobs = [lambda: "logits" in trace.steps[step_index]]  # reads the step file's header once
        widgets = [self.query_one(LayersList), self.query_one(HeadsList), self.active_pane]
        for widget in widgets:
            prefetch = getattr(widget, "prefetch", None)  # optional hook, also for owner A's panes
            if callable(prefetch) and widget.display:
                jobs.append(lambda prefetch=prefetch: prefetch(step_index))
        return jobs

    def hidden_pane_jobs(self, step_index: int) -> list:
        """Warm-up callables, for the current step, of hidden panes cheap enough to prepare."""
        jobs = []
        active = self.active_pane
        for pane in self._panes.values():
            prefetch = getattr(pane, "prefetch", None)
            if pane is not active and callable(prefetch) and getattr(pane, "PREFETCH_WHEN_HIDDEN", False):
                jobs.append(lambda prefetch=prefetch: prefetch(step_index))
        return jobs

    def set_state(self, text: str, busy: bool = False) -> None:
        status = self.query_one(StatusBar)
        status.state = text
        status.busy = busy

    def set_progress(self, stage: str, fraction: float | None) -> None:
        panel = self.query_one(LoadingPanel)
        panel.stage = stage
        panel.fraction = fraction

    # -- actions ------------------------------------------------------------------------------
    def action_show_pane(self, pane_id: str) -> None:
        if pane_id not in self._panes:
            return
        self.query_one(Tabs).active = f"tab-{pane_id}"

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab is None or event.tab.id is None:
            return
        pane_id = event.tab.id.removeprefix("tab-")
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != f"pane-{pane_id}":
            focused_in_old = self.focused is not None and self.focused in switcher.walk_children()
            switcher.current = f"pane-{pane_id}"
            if focused_in_old:
                self.set_focus(None)
        app = self.app
        _set(self._panes[pane_id], getattr(app, "trace", None), step=app.step, layer=app.layer, head=app.head)

    def action_toggle_sidebar(self) -> None:
        self.toggle_class("-no-sidebar")

    def action_pause_or_blur(self) -> None:
        if getattr(self.app, "continuing", False):
            self.app.pause()
        else:
            self.set_focus(None)

    # -- messages up --------------------------------------------------------------------------
    def on_layers_list_selected(self, message: LayersList.Selected) -> None:
        self.app.layer = message.layer

    def on_heads_list_selected(self, message: HeadsList.Selected) -> None:
        self.app.head = message.head


def _set(widget: Widget, trace, **values) -> None:
    """Set `trace` and the reactives a widget has, only where they change.

    The selected layer goes to a `layer_index` reactive, or to `layer` when the widget declares
    one (Widget.layer is also Textual's compositor-layer property: a pane declaring a `layer`
    reactive is wrapped in its own container by the screen so that it still lays out)."""
    if getattr(widget, "trace", None) is not trace:
        try:
            widget.trace = trace
        except AttributeError:
            pass
    reactives = getattr(type(widget), "_reactives", {})
    for name, value in values.items():
        if name == "layer" and "layer_index" in reactives:
            name = "layer_index"
        if name in reactives and getattr(widget, name) != value:
            setattr(widget, name, value)
