"""The whole app driven with Pilot (shared by the app tests): a live session factory on a tiny model,
waiting for the workers, running a script against the app, the screen as text."""

from __future__ import annotations

import asyncio
import time


def make_factory(tiny, max_new_tokens=4, slow=0.0, fail_at=None, seen=None):
    """A session factory for `StepscopeApp(session_factory=...)`: a live session of the tiny model on
    "Hello"; each step optionally slowed, failing at call `fail_at`, the sessions collected in `seen`."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    def factory(progress=None):
        if progress is not None:
            progress("building the tiny model", 0.5)
        session = LiveSession(tiny[0], tiny[1], "Hello", GenerationSettings(max_new_tokens=max_new_tokens))
        real_step = session.step
        calls = {"n": 0}

        def step():
            calls["n"] += 1
            if fail_at is not None and calls["n"] == fail_at:
                raise RuntimeError("CUDA out of memory (simulated)")
            if slow:
                time.sleep(slow)
            return real_step()

        session.step = step
        if seen is not None:
            seen.append(session)
        return session

    return factory


async def wait_idle(app, pilot, timeout=20.0):
    """Let the app run until it has a trace and no worker or `continue` is busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        if app.trace is not None and app.n_steps and not app.busy and not app.continuing:
            return
    raise AssertionError("the app stayed busy")


def run(app, script, size=(120, 40)):
    """Run `await script(app, pilot)` in the app; no error may have reached the error dialog."""
    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(app, pilot)

    asyncio.run(main())
    assert app.last_error is None, app.last_error


def screen(app) -> str:
    """The screen as plain text, trailing spaces stripped."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())
