"""The first screen of a 200,000-step trace: drawn at once, by work on what is shown only.

Time is the process' CPU time from the app's start to its first full screen (a loaded CI machine
stretches wall time, not CPU time); the work is counted too: token texts made (each one a token
looked at), which must not grow with the trace.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import stepscope.tui.views.vocab as vocab
import stepscope.tui.widgets.token_strip as token_strip
from stepscope.tracer import load_trace
from stepscope.tui.app import StepscopeApp
from tests.support.app_harness import screen
from tests.support.large_trace import build_large_trace

N_STEPS = 200_000


@pytest.fixture(scope="module")
def large_trace(tmp_path_factory):
    return load_trace(build_large_trace(str(tmp_path_factory.mktemp("large") / "t"), N_STEPS))


def test_the_first_screen_of_a_200000_step_trace_is_quick(large_trace, monkeypatch):
    made = []

    def counted(token):
        made.append(1)
        return vocab.tok_text(token)

    monkeypatch.setattr(token_strip, "tok_text", counted)
    app = StepscopeApp(trace=large_trace)
    seen = {}

    async def main():
        c0 = time.process_time()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            seen["cpu"] = time.process_time() - c0
            seen["screen"] = screen(app)
            seen["strip"] = len(made)
            await pilot.press("right")  # the next step: the strip moves, still by what it shows
            await pilot.pause()
            seen["after"] = len(made)

    asyncio.run(main())
    assert app.last_error is None, app.last_error
    assert seen["cpu"] < 1.3, seen["cpu"]  # (about 0.8 s here; walking every token: 1.7 s)
    assert "capital" in seen["screen"] and "Paris" in seen["screen"], seen["screen"]  # the prompt and step 0's token
    assert 0 < seen["strip"] < 2_000 and seen["after"] < 4_000, seen  # tokens around the cursor, not 200,000
