"""`stepscope trace`: record a trace to disk, with a progress bar, without a terminal UI."""

from __future__ import annotations

import os
import signal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stepscope import seam
from stepscope.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_model_options,
    generation_options,
    generation_settings,
    model_options,
    open_session,
    parallel_options,
    rank,
)
from stepscope.tracer import load_trace
from stepscope.tracer.budget import disk_bytes
from stepscope.tracer.inert import inert
from stepscope.tracer.trace_format import human_bytes


def add_parser(sub) -> None:
    t = sub.add_parser("trace", help="record a trace to disk")
    model_options(t)
    generation_options(t)
    parallel_options(t)
    t.add_argument("--out", required=True, help="trace directory to write (an existing trace there is replaced once the new one has its first step)")


class StopBetweenSteps:
    """Ctrl-C while recording: the first one stops the run once the step being recorded is written
    (a KeyboardInterrupt raised at a random point can land in library code that swallows it, and
    the run would go on); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> StopBetweenSteps:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Between steps: end the run here if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt


def say(console: Console, text: str) -> None:
    """One plain line: user text never becomes markup."""
    console.print(text, markup=False, highlight=False)


def run(args) -> int:
    leader = rank(args) == 0  # under --tensor-parallel only rank 0 shows progress and the summary
    console = Console(stderr=True, quiet=not leader)
    settings = generation_settings(args)
    seam.check_out_dir(args.out)
    check_model_options(args)  # a missing model or an unreachable hub id: one line at once
    seam.quiet_transformers()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        load = progress.add_task("loading model", total=100)

        def on_load(stage, fraction):  # stages name user paths: never markup
            progress.update(load, description=escape(inert(stage)), completed=int(100 * (fraction or 0)))

        session = open_session(args, settings, progress=on_load, background_writer="auto")  # refuses a trace over the budget
        progress.update(load, completed=100, description=escape(inert(f"loaded {session.name}")))
        plan = session.plan
        say(console, f"prompt {len(session.prompt_ids)} tokens; estimated {human_bytes(plan.prefill_bytes)} for the prefill step, "
                     f"about {human_bytes(plan.decode_bytes)} per decode step ({session.trace.manifest['dtype']['stored']})")
        say(console, plan.summary())
        gen = progress.add_task("generating", total=session.max_new_tokens)
        def on_step(n: int) -> None:
            progress.update(gen, completed=n)
            stop.check()

        try:
            with StopBetweenSteps() as stop:
                session.run(on_step=on_step)
        except KeyboardInterrupt:
            kept = session.writer.steps_written
            say(console, f"interrupted: {inert(args.out)} keeps its {kept} complete steps")
            return EXIT_INTERRUPTED
    if not leader:
        return EXIT_OK
    tr = load_trace(args.out)
    text = "".join(t["text"] for t in tr.tokens[tr.prompt_len :])
    out = Console()
    say(out, f"trace: {inert(os.path.abspath(args.out))}")
    say(out, f"steps: {len(tr.steps)}  size: {human_bytes(disk_bytes(tr.path))}  stop: {inert(tr.manifest['stop_reason'])}")
    say(out, f"generated: {inert(repr(text))}")
    return EXIT_OK
