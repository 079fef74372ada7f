"""Replay `c` with breakpoints that read step files (`rank(" London")<3`, `norm(...)>40`): the scan
runs in a thread worker over a private Trace of the same directory (the app's Trace stays the UI
thread's); the first hit comes back as a `BreakpointScanDone` message. Any key stops it."""

from __future__ import annotations

import threading

from textual.message import Message
from textual.worker import get_current_worker

from stepscope.tui.breakpoints import BreakpointSet
from stepscope.tui.watch import fresh_step, private_trace


class BreakpointScanDone(Message):
    """The scan ended: `index` of the first step where a breakpoint fires (None: none ahead),
    `text` its explanation; `stopped` when a key stopped it."""

    def __init__(self, index: int | None, text: str, stopped: bool = False) -> None:
        super().__init__()
        self.index, self.text, self.stopped = index, text, stopped


def start_scan(app, breakpoints: BreakpointSet, start: int, stop_event: threading.Event):
    """Scan steps start.. of `app.trace` for `breakpoints` in a worker; returns the worker."""
    private = private_trace(app.trace)
    entries = list(private.manifest["steps"])

    def job() -> None:
        worker = get_current_worker()
        for index in range(start, len(entries)):
            if worker.is_cancelled or stop_event.is_set():
                app.post_message(BreakpointScanDone(None, "", stopped=True))
                return
            step = fresh_step(private, entries[index])
            try:
                hit = breakpoints.first_hit(step, private)
                if hit is not None:
                    app.post_message(BreakpointScanDone(index, hit.explain(step, private)))
                    return
            finally:
                step.release()
        app.post_message(BreakpointScanDone(None, ""))

    return app.run_worker(job, thread=True, exclusive=True, group="scan", name="scan", exit_on_error=False)
