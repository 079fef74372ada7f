"""Compare view: the cursor's trace (A) against a second trace of the same model (B)."""

from __future__ import annotations

import os
from typing import cast

from rich.text import Text
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from stepscope.tracer import load_trace
from stepscope.tracer.diff import compare
from stepscope.tui.render.branches import effect_lines
from stepscope.tui.render.diff import diff_lines
from stepscope.tui.views.branches import parent_dir
from stepscope.tui.widgets.attribution import reveal_selected
from stepscope.tui.widgets.lines_pane import LinesPane


def _compare_paths(path_a: str, path_b: str):
    """compare() on private copies of both traces (a worker thread never touches the UI's Trace)."""
    return compare(load_trace(path_a), load_trace(path_b))


class DiffPane(LinesPane):
    """Tokens aligned, first differences, residual divergence per layer at the step, and one tensor
    (default: the selected layer's resid_post) side by side and as b − a. The comparison of every
    step runs once, in a thread worker."""

    WATCHES = frozenset({"step", "layer"})
    BINDINGS = [
        *LinesPane.BINDINGS,
        Binding("full_stop", "tensor(1)", "Next tensor", tooltip="Drill down into the next tensor of the step"),
        Binding("comma", "tensor(-1)", "Previous tensor", tooltip="Drill down into the previous tensor of the step"),
        Binding("r", "tensor(0)", "Residual", tooltip="Back to the selected layer's residual stream (resid_post)"),
    ]

    def __init__(self, trace=None, other=None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.other = other  # trace B
        self.tensor: str | None = None  # the tensor drilled into (None: the selected layer's resid_post)
        self._result: tuple | None = None  # (trace A, trace B, TraceDiff | str error)
        self._computing = None

    def set_other(self, other) -> None:
        """Compare with another trace B."""
        if other is not self.other:
            self.other = other
            self.tensor = None
            self.invalidate()

    def on_trace(self) -> None:
        self._result = None  # another trace A, or a live one that grew: compare again

    def on_cursor(self, old, new) -> None:
        if new.layer != old.layer:
            self.tensor = None
        super().on_cursor(old, new)
        if new.layer != old.layer:
            self.call_after_refresh(reveal_selected, self, 1)

    def lines(self) -> list[Text]:
        if self.trace is None or self.other is None:
            return [Text("no second trace: `stepscope diff A B`, or D to compare with a trace directory", style="dim")]
        pair = (self.trace, self.other)
        if self._result is None or self._result[:2] != pair:
            self._start(pair)
            return [Text("comparing the two traces, step by step…", style="dim")]
        result = self._result[2]
        if isinstance(result, str):
            return [Text(f"diff unavailable: {result}", style="yellow")]
        lines = diff_lines(self.trace, self.other, self.step_index, self.cursor.layer, self.tensor, result=result)
        return self._effects() + lines

    def _effects(self) -> list[Text]:
        """When A is a branch of B: the effect on the chosen token's probability at the step."""
        parent = parent_dir(self.trace)
        if parent is None or os.path.realpath(parent) != os.path.realpath(self.other.path):
            return []
        return effect_lines(self.trace, self.other, self.step_index)

    def _start(self, pair) -> None:
        if self._computing == pair:
            return
        self._computing = pair
        paths = (pair[0].path, pair[1].path)
        self.run_worker(lambda: (pair, _compare_paths(*paths)), thread=True, exclusive=True, group="diff",
                        name="diff-compare", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "diff-compare":
            return
        event.stop()
        if event.state == WorkerState.SUCCESS:
            pair, result = cast(tuple, event.worker.result)  # the worker's return value (SUCCESS)
        elif event.state == WorkerState.ERROR:
            pair, result = self._computing, str(event.worker.error)
        else:
            return
        self._computing = None
        self._result = (*pair, result)
        self.invalidate()

    # -- keys and clicks ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Tensors of the step recorded in both traces, in A's order."""
        step = self.step_index
        if self.other is None or step >= len(self.other.steps):
            return []
        theirs = set(self.other.steps[step].names)
        return [n for n in self.trace.steps[step].names if n in theirs]

    def action_tensor(self, delta: int) -> None:
        names = self.names()
        if not delta or not names:
            self.tensor = None
        else:
            current = self.tensor or f"blocks.{self.cursor.layer}.hook_resid_post"
            i = names.index(current) if current in names else -1
            self.tensor = names[(i + delta) % len(names)]
        self.invalidate()

    def action_select_layer(self, layer: int) -> None:
        self.move(layer=layer)

    def action_go_step(self, step: int) -> None:
        self.move(step=step)
