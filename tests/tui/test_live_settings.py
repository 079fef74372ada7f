"""Live sampler settings and token limit: parsing (pure) and, in a live session, a change applies
from the next step and is in that step's entry."""

from __future__ import annotations

import pytest

from stepscope.tui.live_settings import SettingsError, parse_settings, settings_text

CURRENT = {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 0,
           "max_new_tokens": 16}


def test_parse_settings():
    assert parse_settings(settings_text(CURRENT), CURRENT) == {}
    assert parse_settings("T=0.5 k=5", CURRENT) == {"temperature": 0.5, "top_k": 5, "do_sample": True}
    assert parse_settings("sample=off top_p=0.9", CURRENT) == {"top_p": 0.9}  # already greedy
    assert parse_settings("tokens=4 seed=3", CURRENT) == {"max_new_tokens": 4, "seed": 3}


@pytest.mark.parametrize("text, message", [
    ("temperature=0", "temperature must be > 0"), ("top_p=1.5", "top_p must be"), ("k=-1", "top_k must be"),
    ("min_p=1", "min_p must be"), ("tokens=0", "max_new_tokens must be"), ("foo=1", "unknown setting"),
    ("temperature", "key=value"), ("sample=maybe", "on or off"), ("T=abc", "takes a number"), ("T=nan", "finite"),
])
def test_bad_settings_are_one_line(text, message):
    with pytest.raises(SettingsError) as info:
        parse_settings(text, CURRENT)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.anyio
async def test_sampler_change_applies_from_the_next_step_and_is_in_its_entry(tiny):
    from stepscope.tracer.session import GenerationSettings, LiveSession
    from stepscope.tui.app import StepscopeApp
    from stepscope.tui.screens.main import MainScreen
    from stepscope.tui.screens.prompt import PromptScreen

    model, tokenizer = tiny

    def factory():
        return LiveSession(model, tokenizer, "Hi", GenerationSettings(max_new_tokens=8, stop_at_eos=False))

    app = StepscopeApp(session_factory=factory)
    async with app.run_test(size=(120, 40)) as pilot:
        async def settle():
            for _ in range(500):
                await pilot.pause(0.02)
                if app.n_steps and not app.busy and not any(
                        w.is_running for w in app.workers if w.name in ("settings", "step", "load")):
                    return
        await settle()
        await pilot.press("n")
        await settle()
        assert app.n_steps == 2
        await pilot.press("o")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "top_p=2"
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen)  # one line, nothing applied
        assert "top_p must be" in str(app.screen.query_one("#prompt-error").render())
        app.screen.query_one("Input").value = "temperature=0.5 top_k=3 seed=7 max_new_tokens=4"
        await pilot.press("enter")
        assert isinstance(app.screen, MainScreen)
        await settle()
        steps = app.trace.manifest["steps"]
        assert all(s["sampling"]["greedy"] for s in steps)  # the steps before the change are untouched
        await pilot.press("n")
        await settle()
        new = app.trace.manifest["steps"][2]["sampling"]
        assert (new["greedy"], new["temperature"], new["top_k"]) == (False, 0.5, 3)
        assert new["stages"][2] == {"name": "top_k", "kept": 3}
        assert app.trace.steps[2]["sample.candidate_probs"][3:].sum() == 0  # only 3 tokens can be drawn
        assert app.session.writer.manifest["generation"]["changes"] == [
            {"from_step": 2, "temperature": 0.5, "top_k": 3, "seed": 7, "max_new_tokens": 4, "do_sample": True}]
        await pilot.press("n")
        await settle()
        await pilot.press("n")
        await settle()
        assert app.n_steps == 4 and app.state.finished and app.state.stop_reason == "max_new_tokens"
        await pilot.press("o")  # a higher limit resumes generation
        app.screen.query_one("Input").value = "tokens=5"
        await pilot.press("enter")
        await settle()
        assert not app.state.finished
        await pilot.press("n")
        await settle()
        assert app.n_steps == 5 and app.state.finished


def test_session_update_settings_records_seed_and_limit_per_step(tiny, tmp_path):
    """tracer side: the session validates first (nothing changes on a bad value), applies from the
    next step, and each later step entry says what it ran with; raising the limit resumes."""
    from stepscope.tracer import load_trace
    from stepscope.tracer.session import GenerationSettings, LiveSession

    model, tokenizer = tiny
    s = LiveSession(model, tokenizer, "ab", GenerationSettings(max_new_tokens=2, stop_at_eos=False), out=str(tmp_path / "t"))
    s.step()
    with pytest.raises(ValueError, match="temperature"):
        s.update_settings(do_sample=True, temperature=-1.0)
    with pytest.raises(ValueError, match="cannot change"):
        s.update_settings(chat=True)
    assert s.settings.do_sample is False and "settings" not in s.writer.manifest.get("generation", {}).get("changes", [{}])[0]
    s.update_settings(do_sample=True, temperature=0.7, seed=5)
    s.step()
    assert s.finished and s.stop_reason == "max_new_tokens"
    s.update_settings(max_new_tokens=3)
    assert not s.finished
    s.step()
    s.close()
    entries = load_trace(str(tmp_path / "t")).manifest["steps"]
    assert "settings" not in entries[0]
    assert entries[1]["settings"] == {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 1.0,
                                      "min_p": 0.0, "seed": 5, "max_new_tokens": 2}
    assert entries[2]["settings"]["max_new_tokens"] == 3 and entries[1]["sampling"]["temperature"] == 0.7
