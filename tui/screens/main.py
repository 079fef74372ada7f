"""The main screen: the debugger itself.

Layout (top to bottom): status bar · token strip · pane tabs · [layers + heads sidebar | the
active pane] · footer. At 80×24 the sidebar narrows; `f` hides it to give the pane the full
width. While a live session loads, a loading panel takes the place of the body.

Only the visible pane gets the current `trace`/`step`/`layer`/`head` (a hidden pane reads
nothing); a pane is brought up to date when its tab is shown.

Keys: see the table in `MainScreen`'s docstring (and `?` in the app).
"""

from __future__ import annotations

from typing import cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Tab, Tabs

from stepscope.tracer import load_trace
from stepscope.tui.app_view import DebuggerApp
from stepscope.tui.branching import (
    INTERVENTION_HELP,
    check_intervention,
    default_choice,
    intervention_templates,
    parse_choice,
    parse_intervention,
)
from stepscope.tui.render.lines import token
from stepscope.tui.screens.prompt import PromptScreen
from stepscope.tui.screens.runs import RunsScreen
from stepscope.tui.screens.snippet import SnippetScreen, intervention_snippets
from stepscope.tui.state import Cursor
from stepscope.tui.views.branches import current_index, parent_dir, run_label, runs
from stepscope.tui.widgets.attribution import AttributionPane
from stepscope.tui.widgets.candidates import CandidatesPane
from stepscope.tui.widgets.diff import DiffPane
from stepscope.tui.widgets.heads import HeadsList
from stepscope.tui.widgets.heads_overview import HeadsOverview
from stepscope.tui.widgets.heatmap import HeatmapPane
from stepscope.tui.widgets.kv_cache import KVCachePane
from stepscope.tui.widgets.layers import LayersList
from stepscope.tui.widgets.loading import LoadingPanel
from stepscope.tui.widgets.logit_lens import LogitLensPane
from stepscope.tui.widgets.model_overview import ModelOverviewPane
from stepscope.tui.widgets.pane import Pane, report_view_error
from stepscope.tui.widgets.patching import PatchingPane
from stepscope.tui.widgets.status_bar import StatusBar
from stepscope.tui.widgets.tensor_inspector import TensorInspector
from stepscope.tui.widgets.tensor_list import TensorList
from stepscope.tui.widgets.token_strip import TokenStrip
from stepscope.tui.widgets.watch import WatchPane
from stepscope.tui.widgets.whatif import WhatIfPane

NARROW_WIDTH = 110


# (tab id, tab label, pane class) in key order 1..9, 0
PANES: list[tuple[str, str, type[Pane]]] = [
    ("candidates", "Candidates", CandidatesPane),
    ("heatmap", "Attention", HeatmapPane),
    ("tensors", "Tensors", TensorInspector),
    ("lens", "Lens", LogitLensPane),
    ("kv", "KV", KVCachePane),
    ("heads", "Heads", HeadsOverview),
    ("model", "Model", ModelOverviewPane),
    ("why", "Why", AttributionPane),
    ("whatif", "What if", WhatIfPane),
    ("compare", "Compare", DiffPane),
    ("patching", "Patching", PatchingPane),
]
EXTRA_PANE_KEYS = ("P",)  # the panes after the tenth


def pane_key(index: int) -> str:
    """The key of the index-th pane: 1..9, then 0, then EXTRA_PANE_KEYS."""
    return str((index + 1) % 10) if index < 10 else EXTRA_PANE_KEYS[index - 10]


SHORT_LABELS = {"candidates": "Cand", "heatmap": "Attn", "tensors": "Tens", "lens": "Lens", "kv": "KV",
                "heads": "Heads", "model": "Model", "why": "Why", "whatif": "If", "compare": "Cmp", "patching": "Patch"}


def tab_labels(width: int, active: str | None) -> list[str]:
    """The tabs' labels for `width` cells, degrading in this order until all of them fit: 1. full labels
    (`1 Candidates`); 2. short labels (`1 Cand`); 3. the keys only, the active tab keeping its short
    label; 4. the keys only. Every tab keeps its key (each tab is its label plus 2 cells of padding)."""
    full = [f"{pane_key(i)} {label}" for i, (_, label, _) in enumerate(PANES)]
    short = [f"{pane_key(i)} {SHORT_LABELS.get(pid, label)}" for i, (pid, label, _) in enumerate(PANES)]
    keys_active = [s if pid == active else pane_key(i) for i, ((pid, _, _), s) in enumerate(zip(PANES, short))]
    keys = [pane_key(i) for i in range(len(PANES))]
    for labels in (full, short, keys_active):
        if sum(len(label) + 2 for label in labels) <= width:
            return labels
    return keys


class PaneTabs(Tabs, can_focus=False):
    """The pane tabs; never focused, so ←/→ always step (number keys pick a pane). The underline
    moves at once (no 0.3 s animation: a pane switch must redraw within the latency budget). The
    labels shorten to the width (`tab_labels`), so every tab and its key stays on screen."""

    def _highlight_active(self, animate: bool = True) -> None:
        super()._highlight_active(animate=False)

    def on_resize(self, event) -> None:
        self.fit_labels()

    def fit_labels(self) -> None:
        active = self.active.removeprefix("tab-") if self.active else None
        width = self.size.width or self.app.size.width
        for (pid, _, _), label in zip(PANES, tab_labels(width, active)):
            tab = self.query_one(f"#tab-{pid}", Tab)
            if tab.label_text != label:
                tab.label = Text(label)


class MainScreen(Screen[None]):
    """The debugger screen. The app owns the trace, the cursor and the state and calls `sync()`;
    every view (a `Pane`) gets them by `show(trace, cursor)`; its `Pane.Moved` requests come back up
    here and go on to `app.move`. What else changes the app's state the screen asks for with its
    messages (`OpenTrace`, `SwitchRun`, `MakeBranch`, `PauseRequested`), handled by the app.

    | key | action |
    |---|---|
    | `n` `→` | next step (live: computes the next token at the end) |
    | `p` `←` | previous step |
    | `c` | continue until EOS, the token limit or a breakpoint (any key pauses; `w` pauses and writes, `q` quits) |
    | `g` | go to step |
    | `Home` `End` | first / last step (in a focused pane: its own top / bottom) |
    | `j` `↓` / `k` `↑` | next / previous layer |
    | `l` / `h` | next / previous head |
    | `1`..`9` `0` `P` | show a pane: candidates, attention, tensors, logit lens, KV cache, heads, model, why (attribution), what if (sampling), compare, patching |
    | `D` | compare with another trace directory (the Compare pane) |
    | `B` | switch to the next run: the original, then each branch |
    | `F` | live: branch at this step with another token forced (`#id` or text; default the Why pane's rival) |
    | `I` | live: branch at this step with an intervention (default: zero the head at the cursor); the effect on the chosen token's p |
    | `Tab` | focus the next pane (its own keys then apply) |
    | `f` | hide / show the layers+heads sidebar |
    | `b` | breakpoints |
    | `/` | filter the tensor list by name (Tensors pane; there `n` `N` next / previous match, `Esc` clears) |
    | `o` | live: sampler settings and token limit, from the next step |
    | `=` | watch an expression (value and sparkline over all steps, in the sidebar) |
    | `w` | write the live session to a trace directory |
    | `?` | help (every key) |
    | `q` `Ctrl+C` | quit |
    """

    AUTO_FOCUS = ""  # nothing focused: the debugger keys (arrows included) act at once

    class OpenTrace(Message):
        """Replay: show `trace`, another run (the original or a branch) of the trace on disk."""

        def __init__(self, trace) -> None:
            super().__init__()
            self.trace = trace

    class SwitchRun(Message):
        """Live: make run `key` ("" the original, "b1", "b1/b2", ...) current; `note` says which."""

        def __init__(self, key: str, note: str) -> None:
            super().__init__()
            self.key, self.note = key, note

    class MakeBranch(Message):
        """Live: branch the current run at `step` with `choice` (`tui.branching.parse_choice` or
        `parse_intervention`); the app computes it in a worker and switches to it."""

        def __init__(self, step: int, choice: dict) -> None:
            super().__init__()
            self.step, self.choice = step, choice

    class PauseRequested(Message):
        """Esc while `c` runs: pause after the step being computed."""

    BINDINGS = [
        Binding("n,right", "app.next_step", "Next", tooltip="Next step (live: computes the next token at the end)"),
        Binding("p,left", "app.prev_step", "Prev", tooltip="Previous step"),
        Binding("c", "app.continue_run", "Continue",
                tooltip="Continue until EOS, the limit or a breakpoint; any key pauses (w also writes, q quits)"),
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
            Binding(pane_key(i), f"show_pane('{pid}')", label, show=False, tooltip=f"Show the {label} pane")
            for i, (pid, label, _) in enumerate(PANES)
        ],
        Binding("f", "toggle_sidebar", "Sidebar", show=False, tooltip="Hide/show the layers and heads sidebar"),
        Binding("D", "compare_with", "Compare", show=False,
                tooltip="Compare this trace with another trace directory (the Compare pane)"),
        Binding("B", "next_branch", "Branch", show=False,
                tooltip="Switch to the next run: the original, then each branch"),
        Binding("R", "list_runs", "Runs", show=False,
                tooltip="Runs: the original and its branches in a list (Enter or a click opens one)"),
        Binding("I", "intervene", "Intervene", show=False,
                tooltip="Live: branch here with an intervention (head zero / mean / scale, MLP neuron, steering vector, patch from a trace)"),
        Binding("F", "force_token", "Force", show=False,
                tooltip="Live: branch here, forcing another token at this step (#id or text), and continue"),
        Binding("b", "app.breakpoints", "Breaks", tooltip="Breakpoints: add, list, remove"),
        Binding("slash", "filter_tensors", "Filter", show=False,
                tooltip="Filter the tensor list by name (shows the Tensors pane); then n / N: next / previous match"),
        Binding("equals_sign", "app.add_watch", "Watch", show=False,
                tooltip="Watch an expression at every step (value + sparkline in the sidebar)"),
        Binding("o", "app.live_settings", "Settings", show=False,
                tooltip="Live: change the sampler settings and the token limit from the next step"),
        Binding("w", "app.write", "Write", tooltip="Write the live session to a trace directory"),
        Binding("question_mark", "app.help", "Help", tooltip="Help: every key"),
        Binding("q", "app.quit", "Quit", tooltip="Quit"),
    ]

    @property
    def debugger(self) -> DebuggerApp:
        """The app, typed as the state this screen reads (changes go through `move` and messages)."""
        return cast(DebuggerApp, self.app)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._panes: dict[str, Pane] = {}
        self._compare = None  # trace B of the Compare pane, until it is mounted
        self._initial_pane = "candidates"
        self._configure = None  # open_pane(): a setup for the initial pane, run once mounted

    async def _dispatch_message(self, message) -> None:
        try:
            await super()._dispatch_message(message)
        except Exception as exc:  # noqa: BLE001 - e.g. a view failing in show(): the dialog, not a crash
            report_view_error(self, exc)

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield TokenStrip(id="strip")
        tabs = [Tab(Text(f"{pane_key(i)} {label}"), id=f"tab-{pid}") for i, (pid, label, _) in enumerate(PANES)]
        yield PaneTabs(*tabs, id="tabs")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield LayersList(id="layers")
                yield HeadsList(id="heads")
                yield WatchPane(id="watches")
            with ContentSwitcher(initial="pane-candidates", id="panes"):
                for pid, _, cls in PANES:
                    pane = self._panes[pid] = cls(id=f"pane-{pid}-widget")
                    if pid == "compare":
                        cast(DiffPane, pane).set_other(self._compare)
                    with Container(id=f"pane-{pid}", classes="pane-box"):
                        yield pane
        yield LoadingPanel(id="loading")
        yield Footer(show_command_palette=False)  # Ctrl+P is in `?` and the README: at 80×24 it would cut `q Quit`

    def on_mount(self) -> None:
        self.query_one("#layers").border_title = "layers"
        self.query_one("#heads").border_title = "heads"
        self.set_class(self.debugger.size.width < NARROW_WIDTH, "-narrow")
        state = getattr(self.debugger, "state", None)
        if state is not None:
            self.set_state(state.note, state.busy)
        progress = getattr(self.debugger, "load_progress", None)
        if progress is not None:
            self.set_progress(*progress)
        if self._configure is not None:
            self._configure(self._panes[self._initial_pane])
        self.sync()
        if self._initial_pane != "candidates":
            self.action_show_pane(self._initial_pane)

    def on_resize(self, event) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    # -- state down ---------------------------------------------------------------------------
    @property
    def active_pane_id(self) -> str:
        current = self.query_one(ContentSwitcher).current or "pane-candidates"
        return current.removeprefix("pane-")

    @property
    def active_pane(self) -> Pane:
        return self._panes[self.active_pane_id]

    def pane(self, pane_id: str) -> Pane:
        return self._panes[pane_id]

    def views(self) -> list[Pane]:
        """The views that follow the cursor now: status bar, strip, sidebar and the visible pane."""
        return [self.query_one(StatusBar), self.query_one(TokenStrip), self.query_one(LayersList),
                self.query_one(HeadsList), self.query_one(WatchPane), self.active_pane]

    def sync(self) -> None:
        """Give the app's trace and cursor to the visible views (a hidden pane reads nothing)."""
        trace = getattr(self.debugger, "trace", None)
        cursor = getattr(self.debugger, "cursor", Cursor())
        self.set_class(trace is None or not len(trace.steps), "-loading")  # until the prefill is there
        self.query_one(StatusBar).mode = self.debugger.state.source
        for view in self.views():
            view.show(trace, cursor)

    def prefetch_jobs(self, step_index: int) -> list:
        """Callables that warm the caches of the visible widgets for `step_index` (each cheap)."""
        trace = getattr(self.debugger, "trace", None)
        if trace is None or not 0 <= step_index < len(trace.steps):
            return []
        jobs = [lambda: "logits" in trace.steps[step_index]]  # reads the step file's header once
        for view in (self.query_one(LayersList), self.query_one(HeadsList), self.active_pane):
            if view.display:
                jobs.append(lambda view=view: view.prefetch(step_index))  # type: ignore[misc]  # (a default-bound loop variable)
        return jobs

    def hidden_pane_jobs(self, step_index: int) -> list:
        """Warm-up callables, for the current step, of hidden panes cheap enough to prepare."""
        jobs = []
        active = self.active_pane
        for pane in self._panes.values():
            if pane is not active and pane.PREFETCH_WHEN_HIDDEN:
                jobs.append(lambda pane=pane: pane.prefetch(step_index))
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
        self.query_one(PaneTabs).fit_labels()
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != f"pane-{pane_id}":
            focused_in_old = self.focused is not None and self.focused in switcher.walk_children()
            switcher.current = f"pane-{pane_id}"
            if focused_in_old:
                self.set_focus(None)
        self._panes[pane_id].show(getattr(self.debugger, "trace", None), getattr(self.debugger, "cursor", Cursor()))

    def show_tensor(self, name: str) -> None:
        """Show the Tensors pane with `name` selected and focused (after the next refresh)."""
        self.action_show_pane("tensors")

        def select() -> None:
            tensors = self._panes["tensors"].query_one(TensorList)
            tensors.select_name(name)
            tensors.focus()

        self.debugger.call_after_refresh(select)

    def add_watch(self, text: str) -> str | None:
        """Watch an expression in the sidebar; the reason it cannot be, or None."""
        return self.query_one(WatchPane).add_watch(text)

    def action_filter_tensors(self) -> None:
        self.action_show_pane("tensors")
        tensors = self._panes["tensors"].query_one(TensorList)

        def open_filter() -> None:
            tensors.focus()
            tensors.action_filter()

        self.call_after_refresh(open_filter)

    def compare_with(self, other, show: bool = True) -> None:
        """Compare the app's trace with `other` (a loaded trace B) in the Compare pane (before or after mounting)."""
        self._compare = other
        if "compare" in self._panes:
            cast(DiffPane, self._panes["compare"]).set_other(other)
        if show:
            if self.is_mounted:
                self.action_show_pane("compare")
            else:
                self._initial_pane = "compare"

    def on_patching_pane_snippet_asked(self, message: PatchingPane.SnippetAsked) -> None:
        """The Patching pane's `t`: the selected cell as TransformerLens / nnsight code."""
        message.stop()
        self.debugger.push_screen(SnippetScreen(message.title, message.snippets))

    def on_patching_pane_corrupt_asked(self, message: PatchingPane.CorruptAsked) -> None:
        """The Patching pane's `o`: ask for the corrupted trace; the pane loads and checks it."""
        message.stop()
        self.debugger.push_screen(PromptScreen(
            "Patch from this (clean) trace into a corrupted trace (same model, same prompt length)",
            placeholder="path/to/corrupted/trace", hint="Enter opens · Esc cancels", check=message.check), message.done)

    def on_tensor_list_filter_asked(self, message: TensorList.FilterAsked) -> None:
        """The tensor list's `/`: ask for the filter; the list applies it."""
        message.stop()
        tensors = message.tensor_list

        def done(value: str | None) -> None:
            if value is not None:
                tensors.set_filter(value)
                tensors.focus()

        self.debugger.push_screen(PromptScreen(
            "Filter the tensors", value=tensors.name_filter, placeholder="resid_post · attn 5 · blocks.*.hook_z",
            hint="words (all must appear; a number is a layer) or a glob · empty shows all · "
                 "then n / N: next / previous match · Esc clears", check=tensors.filter_problem), done)

    def open_pane(self, pane_id: str, configure=None) -> None:
        """Show `pane_id`, after `configure(pane)` when given (before mounting: once mounted, shown first)."""
        if not self.is_mounted:
            self._initial_pane, self._configure = pane_id, configure
            return
        if configure is not None:
            configure(self._panes[pane_id])
        self.action_show_pane(pane_id)

    def action_compare_with(self) -> None:
        """Ask for a trace directory to compare with (read here: a manifest only; the comparison runs in a worker)."""
        loaded: dict = {}

        def check(text: str) -> str | None:
            try:
                loaded[text] = load_trace(text.strip())
            except Exception as exc:  # noqa: BLE001 - any unreadable directory: its one line under the field
                return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None

        def done(value: str | None) -> None:
            if value is not None and value in loaded:
                self.compare_with(loaded[value])

        self.debugger.push_screen(PromptScreen("Compare with a trace directory (same model)", placeholder="path/to/trace",
                                          hint="Enter compares (the Compare pane) · Esc cancels", check=check), done)

    def action_next_branch(self) -> None:
        """Open the next run of this trace (the original, then each branch); the Compare pane then
        compares a branch with the run it left."""
        app = self.debugger
        if app.session is not None:
            keys = self._live_keys()
            if keys is not None:
                self._open_live_run(keys, (keys.index(app.current_run) + 1) % len(keys))
            return
        if app.trace is None:
            return
        items = runs(app.trace)
        if len(items) < 2:
            app.notify("this trace has no branches", timeout=3)
            return
        self._open_replay_run(items, (current_index(app.trace, items) + 1) % len(items))

    def action_list_runs(self) -> None:
        """The runs (original + branches) in a list; Enter or a click opens one (as `B` does)."""
        app = self.debugger
        if app.session is not None:
            keys = self._live_keys(need_branches=False)
            if keys is None:
                return
            items = []
            for key in keys:  # the UI's own Trace of each run
                trace = app.run_traces.get(key, app.trace)
                assert trace is not None  # a live app has the current run's trace
                b = trace.manifest.get("branch") or {}
                items.append({"name": key, "step": b.get("step"), "reason": b.get("reason"),
                              "interventions": b.get("interventions") or [], "steps": len(trace.steps)})
            current = keys.index(app.current_run)
            def opened(index):
                return None if index is None or index == current else self._open_live_run(keys, index)
        elif app.trace is not None:
            items = runs(app.trace)
            for item in items:
                try:
                    item["steps"] = len(load_trace(item["path"]).steps)
                except Exception:  # noqa: BLE001 - a damaged branch still gets its row
                    item["steps"] = None
            current = current_index(app.trace, items)
            def opened(index):
                return None if index is None or index == current else self._open_replay_run(items, index)
        else:
            return
        app.push_screen(RunsScreen(items, current), opened)

    def _open_replay_run(self, items: list[dict], index: int) -> None:
        item = items[index]
        trace = load_trace(item["path"])
        self.post_message(self.OpenTrace(trace))
        parent = parent_dir(trace)
        if parent is not None:
            self.compare_with(load_trace(parent), show=False)
        self.app.notify(f"run {item['name'] or '(original)'} ({index + 1} of {len(items)}): {run_label(item)}",
                        timeout=4)

    def _live_keys(self, need_branches: bool = True) -> list[str] | None:
        """The live runs' keys, or None (with a notice) when there is nothing to switch to or a step runs."""
        app = self.debugger
        keys = app.run_keys
        if app.branches is None or (need_branches and len(keys) < 2):
            app.notify("no branches yet: F forces another token at this step", timeout=3)
            return None
        if app.busy or app.continuing:
            app.notify("busy: wait for the current step", timeout=2)
            return None
        return keys

    def _open_live_run(self, keys: list[str], index: int) -> None:
        key = keys[index]
        self.post_message(self.SwitchRun(
            key, f"run {key or '(original)'} ({index + 1} of {len(keys)}: {', '.join(k or 'original' for k in keys)})"))

    def action_force_token(self) -> None:
        """Live: a branch at the cursor's step with another token forced there, computed in a worker."""
        rival = cast(AttributionPane, self._panes["why"]).other() if "why" in self._panes else None
        self._branch_dialog("Force a token at step {step} (a branch; the original run is kept)",
                            lambda step: default_choice(self.debugger.trace, step, rival), parse_choice,
                            "#id forces that token · other text forces its tokens · Enter branches · Esc cancels")

    def action_intervene(self) -> None:
        """Live: a branch at the cursor's step with an intervention, computed in a worker."""
        app = self.debugger
        sources: dict = {}  # other traces a patch reads, loaded once per dialog

        def parse(text: str) -> dict:
            choice = parse_intervention(text)
            check_intervention(app.trace, app.step, choice["intervene"], sources)
            return choice

        def snippet(text: str) -> dict:
            return intervention_snippets(app.trace, app.step, parse(text)["intervene"], sources)

        self._branch_dialog("Intervene from step {step} (a branch; the original run is kept)",
                            lambda step: f"zero head {app.layer}.{app.head}", parse, INTERVENTION_HELP + " · Ctrl+T snippet",
                            choices=lambda step: intervention_templates(app.trace, step, app.layer, app.head), snippet=snippet)

    def _branch_dialog(self, title: str, default, parse, hint: str, choices=None, snippet=None) -> None:
        app = self.debugger
        if app.session is None or app.branches is None:
            app.notify("branches need a live session (stepscope run)", timeout=3)
            return
        if app.busy or app.continuing or not app.n_steps:
            app.notify("busy: wait for the current step", timeout=2)
            return
        step = app.step

        def check(text: str) -> str | None:
            try:
                parse(text)
            except ValueError as exc:
                return str(exc)
            return None

        def done(value: str | None) -> None:
            if value is not None:
                self.post_message(self.MakeBranch(step, parse(value)))

        app.push_screen(PromptScreen(title.format(step=step), value=default(step), hint=hint, check=check,
                                     choices=choices(step) if choices else (), snippet=snippet), done)

    def action_toggle_sidebar(self) -> None:
        self.toggle_class("-no-sidebar")

    def action_pause_or_blur(self) -> None:
        if self.debugger.continuing:
            self.post_message(self.PauseRequested())
        else:
            self.set_focus(None)

    # -- messages up --------------------------------------------------------------------------
    def on_pane_moved(self, message: Pane.Moved) -> None:
        message.stop()
        self.debugger.move(**message.changes)

    def on_candidates_pane_picked(self, message: CandidatesPane.Picked) -> None:
        """A clicked candidate: the Why pane explains the chosen token against it; F would force it."""
        message.stop()
        app = self.debugger
        trace = getattr(app, "trace", None)
        if trace is None or not app.n_steps:
            return
        chosen = int(trace.steps[app.step].token["id"])
        if message.token_id == chosen:
            cast(AttributionPane, self._panes["why"]).pick(None)
            return
        cast(AttributionPane, self._panes["why"]).pick(message.token_id)
        live = " · F forces it here (a branch)" if app.session is not None else ""
        app.notify(f"picked {token(trace, message.token_id).plain}: 8 explains why not it{live}", timeout=3)

    def on_attribution_pane_open_heatmap(self, message: AttributionPane.OpenHeatmap) -> None:
        message.stop()
        self.debugger.move(layer=message.layer, head=message.head)
        self.action_show_pane("heatmap")
