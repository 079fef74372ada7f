"""`torchrun ... tests/support/tp_run_rank.py REPORT [--fail-at N] ARGS`: `stepscope run --tensor-parallel ARGS`
with rank 0's debugger driven headless by a Pilot script, every rank writing what it did to REPORT.rankN
(JSON); with `--fail-at N` the last rank's session fails when it starts step N, and a collective
waits 5 s for a missing rank instead of a minute (tests/tracer/test_tensor_parallel_run.py checks both).

Rank 0's script: the prefill, two steps; seed 7 from the next step; back to step 1, a token id out
of range refused there, then token 65 forced (branch b1), one more step; zero head 1.3 from step 2 (branch b1/b2: that head lives on rank 1), one more step; quit.
The other ranks record each command they executed, its outcome, and the candidate logits of the
step it computed (from their own forward)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import numpy as np

from stepscope.cli.main import main, parse_args
from stepscope.cli.run import finish, live_app
from stepscope.seam import tensor_parallel_leader
from stepscope.tracer import tp_follow
from stepscope.tracer.session import LiveSession

RANK, SIZE = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


async def wait_idle(app, pilot, failed=lambda: False, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        if failed():
            return
        if app.trace is not None and app.n_steps and not app.busy and not app.continuing:
            return
    raise AssertionError("the app stayed busy")


async def drive(app, leader, fail_at: int | None) -> list[str]:
    """The Pilot script; the notes of what the app showed."""
    notes = []
    async with app.run_test(size=(120, 40)) as pilot:
        failed = lambda: leader.failure is not None  # noqa: E731
        await wait_idle(app, pilot)
        for _ in range(2):
            await pilot.press("n")
            await wait_idle(app, pilot, failed)
            if failed():  # the debugger ends itself: the Pilot's app has exited
                return notes
        assert fail_at is None, "the injected failure did not end the debugger"
        await pilot.press("o")  # a new seed from the next step
        await pilot.pause()
        app.screen.query_one("Input").value = "seed=7"
        await pilot.press("enter")
        deadline = time.monotonic() + 20
        while app.live_settings.get("seed") != 7 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.press("p", "F")  # step 1: a token id out of range, refused on every rank
        await pilot.pause()
        app.screen.query_one("Input").value = "#999 x"
        await pilot.press("enter")
        deadline = time.monotonic() + 20
        while app.last_error is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        notes.append(f"refused: {app.last_error}")
        await pilot.press("escape")  # the dialog closes; the session goes on
        await wait_idle(app, pilot)
        await pilot.press("F")  # step 1: force token 65
        await pilot.pause()
        app.screen.query_one("Input").value = "#65 A"
        await pilot.press("enter")
        await wait_idle(app, pilot)
        notes.append(app.current_run)
        await pilot.press("n")
        await wait_idle(app, pilot)
        await pilot.press("I")  # step 2 of b1: zero head 3 of layer 1 from here on
        await pilot.pause()
        app.screen.query_one("Input").value = "zero head 1.3"
        await pilot.press("enter")
        await wait_idle(app, pilot)
        notes.append(app.current_run)
        await pilot.press("n")
        await wait_idle(app, pilot)
        notes.append(f"last error: {app.last_error}")
        await pilot.press("q")
    return notes


def lead(argv: list[str], fail_at: int | None) -> dict:
    args = parse_args(argv)
    leader = tensor_parallel_leader()
    app = live_app(args, leader)
    notes = asyncio.run(drive(app, leader, fail_at))
    return {"code": finish(app, leader), "notes": notes, "failure": leader.failure}


def follow(argv: list[str], fail_at: int | None) -> dict:
    executed: list[dict] = []
    real_execute = tp_follow.Runs.execute

    def execute(self, command):
        entry = {"command": type(command).__name__, "fields": repr(command)[:200]}
        try:
            value, result = real_execute(self, command)
        except Exception as exc:
            executed.append({**entry, "error": tp_follow.one_line(exc)})
            raise
        entry["result"] = repr(result)
        if isinstance(command, tp_follow.Step):
            step = self.run(command.run).trace.steps[-1]
            entry.update(run=command.run, step=step.index, token=step.token["id"],
                         candidate_logits=np.asarray(step["sample.candidate_logits"]).tolist(),
                         candidate_ids=np.asarray(step["sample.candidate_ids"]).tolist())
        executed.append(entry)
        return value, result

    tp_follow.Runs.execute = execute
    if fail_at is not None and RANK == SIZE - 1:
        real_step = LiveSession.step

        def failing_step(self):
            if self.steps_started == fail_at:
                raise RuntimeError(f"injected failure on rank {RANK}")
            return real_step(self)

        LiveSession.step = failing_step
    try:
        code = main(argv)
    except SystemExit as stop:  # torchrun's SIGTERM once rank 0 has exited non-zero
        code = int(stop.code or 0)
    return {"code": code, "executed": executed}


if __name__ == "__main__":
    report, rest = sys.argv[1], sys.argv[2:]
    fail = None
    if rest[:1] == ["--fail-at"]:
        fail, rest = int(rest[1]), rest[2:]
        tp_follow.COLLECTIVE_S = 5.0
    out = lead(rest, fail) if RANK == 0 else follow(rest, fail)
    with open(f"{report}.rank{RANK}", "w") as f:
        json.dump(out, f)
    sys.exit(out["code"])
