"""Tensor inspector pane: every recorded tensor of the step with statistics, histogram and the
operation that produced it (the family's own data flow); on a mixture-of-experts model the MLP
names also show the layer's routing. Enter browses slices, `e` exports to `.npy`."""

from __future__ import annotations

import os

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message

from stepscope.tracer.geometry import kv_head_of
from stepscope.tui.views.mlp import is_moe, mlp_routing_for
from stepscope.tui.views.tensors import export_dir_for, export_npy, summarize
from stepscope.tui.widgets.legend import Legend
from stepscope.tui.widgets.pane import Pane
from stepscope.tui.widgets.tensor_browser import TensorBrowser
from stepscope.tui.widgets.tensor_detail import TensorDetail
from stepscope.tui.widgets.tensor_list import TensorList


class TensorInspector(Pane):
    """List of the step's tensors (forward order) over a detail panel for the selected one.

    | Key(s) | Description |
    | :- | :- |
    | `↑` `↓` `PgUp` `PgDn` `Home` `End` | Select a tensor (the list has focus). |
    | `Enter` | Browse the selected tensor's slices (`Esc` returns). |
    | `e` | Export the selected tensor to `.npy` (in `export_dir`, default `<trace>-exports` beside the trace). |

    Changing `layer` moves the selection to that layer's first tensor; `head` picks the head
    index when a browsed tensor has a heads axis.
    """

    BINDINGS = [Binding("e", "export", "Export .npy")]

    class Exported(Message):
        """A tensor was written to `path`."""

        def __init__(self, name: str, path: str) -> None:
            super().__init__()
            self.name, self.path = name, path

    class ExportFailed(Message):
        """Writing the tensor failed (unwritable directory, full disk): `error` says why."""

        def __init__(self, name: str, error: str) -> None:
            super().__init__()
            self.name, self.error = name, error

    def __init__(self, trace=None, export_dir: str | None = None, **kwargs) -> None:
        super().__init__(trace, **kwargs)
        self.export_dir = export_dir
        self.last_export: str | None = None

    LEGEND = ("min max mean std ‖x‖ (L2 norm) over every element of the tensor at this step",
              "histogram: its values", "Enter browses slices")

    def compose(self) -> ComposeResult:
        yield Legend(list(self.LEGEND), id="tensor-legend")
        yield TensorList(id="tensor-list")
        yield TensorDetail(id="tensor-detail")
        browser = TensorBrowser(id="tensor-browser")
        browser.display = False
        yield browser

    def on_mount(self) -> None:
        self._reload()

    # -- state ------------------------------------------------------------------------------------
    def on_trace(self) -> None:
        if self.is_mounted:
            self._reload()

    def refresh_view(self) -> None:
        pass  # on_trace / on_cursor reload what changed

    def on_cursor(self, old, new) -> None:
        if not self.is_mounted:
            return
        if new.step != old.step:
            self._reload()
        if new.layer != old.layer:
            self._select_layer(new.layer)

    def _select_layer(self, layer: int) -> None:
        tensors = self.query_one(TensorList)
        prefix = f"blocks.{layer}."
        first = next((i.name for i in tensors.infos if i.name.startswith(prefix)), None)
        if first is not None:
            tensors.select_name(first)

    @property
    def selected(self) -> str | None:
        info = self.query_one(TensorList).selected
        return info.name if info is not None else None

    @property
    def browsing(self) -> bool:
        return self.query_one(TensorBrowser).display

    def _reload(self) -> None:
        self.last_export = None  # another step: the export note is cleared
        moe = self._trace is not None and is_moe(self._trace.model)
        self.query_one(TensorDetail).set_class(moe, "-moe")  # taller: room for the routing
        tensors = self.query_one(TensorList)
        keep = tensors.selected.name if tensors.selected is not None else None
        tensors.show(self._trace, self.step_index, keep)
        browser = self.query_one(TensorBrowser)
        if browser.display and self._trace is not None and browser.tensor is not None and browser.tensor in self._trace.steps[self.step_index]:
            browser.open(self._trace.steps[self.step_index], browser.tensor, browser.lead)
        elif browser.display:
            self._close_browser()
        self._show_detail()

    # -- detail -----------------------------------------------------------------------------------
    def _show_detail(self) -> None:
        detail = self.query_one(TensorDetail)
        info = self.query_one(TensorList).selected
        if self._trace is None or info is None:
            detail.show(None, empty="no tensors recorded at this step" if self._trace is not None else "no trace")
            return
        note = f"exported → {self.last_export}" if self.last_export else ""
        omitted = (getattr(self._trace.steps[self.step_index], "omitted", None) or {}).get(info.name)
        if omitted and not note:  # the recording budget kept only some rows of this map
            r0, r1 = omitted["rows"]
            note = (f"budget: query rows {r0}–{r1 - 1} not stored (only the last {info.shape[-2]}); "
                    "the Attention pane recomputes them from hook_rot_q/hook_rot_k")
        detail.show(summarize(self._trace, self.step_index, info.name), note,
                    routing=mlp_routing_for(self._trace, self.step_index, info.name))

    def on_tensor_list_highlighted(self, message: TensorList.Highlighted) -> None:
        message.stop()
        self.last_export = None  # the export note belongs to the tensor it was made from
        self._show_detail()

    # -- browsing ---------------------------------------------------------------------------------
    def on_tensor_list_browse(self, message: TensorList.Browse) -> None:
        message.stop()
        if self._trace is None:
            return
        browser = self.query_one(TensorBrowser)
        browser.export_dir = self.export_dir
        browser.open(self._trace.steps[self.step_index], message.name, head=self.cursor.head,
                     kv_head=kv_head_of(self._trace.model, self.cursor.head), trace=self._trace)
        self.query_one(TensorList).display = False
        self.query_one("#tensor-detail").display = False
        self.query_one("#tensor-legend").display = False
        browser.display = True
        browser.focus()

    def _close_browser(self) -> None:
        self.query_one(TensorBrowser).display = False
        self.query_one(TensorList).display = True
        self.query_one("#tensor-detail").display = True
        self.query_one("#tensor-legend").display = True

    def on_tensor_browser_closed(self, message: TensorBrowser.Closed) -> None:
        message.stop()
        self._close_browser()
        self.query_one(TensorList).focus()

    # -- export -----------------------------------------------------------------------------------
    def action_export(self) -> None:
        name = self.selected
        if self._trace is None or name is None:
            return
        try:
            directory = os.path.join(self.export_dir or export_dir_for(self._trace), "")  # created if missing
            path = export_npy(self._trace.steps[self.step_index], name, directory)
        except (OSError, ValueError) as exc:
            self.post_message(self.ExportFailed(name, str(exc)))
            return
        self.last_export = path
        self._show_detail()
        self.post_message(self.Exported(name, path))
