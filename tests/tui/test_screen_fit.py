"""Every click, key and size behaves: candidate clicks (replay and live), the exact logit lens in the
pane and in watches, the header at every size, the heads pane's last layer, fixed-width numbers,
nothing clipped mid-word, a label or unit on every number."""

from __future__ import annotations

import numpy as np
import pytest

from stepscope.tracer.reader import load_trace
from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.main import MainScreen
from tests.support.app_harness import make_factory, wait_idle
from tests.support.paths import FIXTURE
from tests.support.synthetic_trace import build_trace

pytestmark = pytest.mark.anyio

SIZES = [(80, 24), (120, 40), (200, 60)]


def screen_text(app) -> str:
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def region_lines(app, widget) -> list[str]:
    region = widget.region
    strips = app.screen._compositor.render_strips()[region.y : region.bottom]
    return [line.text[region.x : region.right] for line in strips]




# -- 1. a click on a candidate row (replay and live) ------------------------------------------------

def candidate_rows(app):
    pane = app.main_screen.pane("candidates")
    return pane, [(y, line) for y, line in enumerate(region_lines(app, pane)) if line[2:5].strip().isdigit()]


@pytest.mark.parametrize("size", SIZES)
async def test_clicking_any_candidate_row_picks_it(size):
    app = StepscopeApp(trace=load_trace(FIXTURE))
    async with app.run_test(size=size, notifications=True) as pilot:
        await pilot.press("1")
        await pilot.pause()
        pane, rows = candidate_rows(app)
        assert len(rows) >= 2
        for y, _line in rows[:3]:
            await pilot.click(pane, offset=(4, y))
            await pilot.pause()
            assert isinstance(app.screen, MainScreen) and app.last_error is None
        chosen = int(app.trace.steps[app.step].token["id"])
        picked = app.main_screen.pane("why").other()
        assert picked is not None and picked != chosen  # the last click (a rival) is what 8 explains
        assert any("explains why not it" in str(n.message) for n in app._notifications)
        assert all(isinstance(n.message, str) for n in app._notifications)


async def test_clicking_a_candidate_live_picks_it(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=2))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_idle(app, pilot)
        await pilot.press("1")
        await pilot.pause()
        pane, rows = candidate_rows(app)
        for y, _line in rows[:2]:
            await pilot.click(pane, offset=(4, y))
            await pilot.pause()
        assert isinstance(app.screen, MainScreen) and app.last_error is None
        assert any("F forces it here" in str(n.message) for n in app._notifications)


async def test_notifications_take_plain_inert_strings(fixture_trace):
    from rich.text import Text
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        app.notify(Text("a [b]rich[/b] text\x1b[31m"))
        app.main_screen.notify("[@click=app.quit]x[/]\u202e")
        await pilot.pause(0.5)
        messages = [n.message for n in app._notifications]
        assert all(isinstance(m, str) for m in messages) and len(messages) == 2
        assert "\x1b" not in messages[0] and "\u202e" not in messages[1] and "[@click=app.quit]" in messages[1]
        assert all(not n.markup for n in app._notifications)
        assert "[@click=app.quit]x[/]" in screen_text(app)  # shown as text, not taken as markup


# -- 9. candidates: fixed-width numbers under their headers, rows are not links -----------------------

def test_probabilities_have_one_width():
    from stepscope.tui.widgets.common import fmt_prob
    for p in (0.0, 1.0, 0.7734, 0.001, 0.00099, 0.00096, 9.9e-4, 1.2e-5, 3e-30, 1e-120, float("nan"), None):
        assert len(fmt_prob(p)) == 5, (p, fmt_prob(p))
    assert fmt_prob(9.9e-4) == "1e-03" and fmt_prob(1.2e-5) == "1e-05" and fmt_prob(0.7734) == "0.773"


@pytest.mark.parametrize("size", SIZES)
async def test_candidate_columns_align_at_any_value_and_rows_are_not_links(size, tmp_path):
    app = StepscopeApp(trace=load_trace(build_trace(tmp_path / "greedy", n_decode=1, do_sample=False)))
    async with app.run_test(size=size) as pilot:
        await pilot.press("1")
        pane = app.main_screen.pane("candidates")
        pane.focus()
        seen_small = False
        for _ in range(40):
            await pilot.pause()
            lines = region_lines(app, pane)
            header = next(line for line in lines if line.lstrip().startswith("#"))
            ends = [header.index(name) + len(name) for name in (" raw p", " p/T", " p ", " cum") if name in header]
            ends = [e - 1 if header[e - 1] == " " else e for e in ends]
            for line in lines:
                if line[2:5].strip().isdigit():
                    for end in ends:
                        field = line[end - 5 : end]
                        assert field == field.strip() or field.startswith(" "), (line, header)
                        float(field.strip().replace("<e", "1e"))  # a number exactly under its header
                        seen_small |= "e-" in field
            await pilot.press("pagedown")
        assert seen_small  # the tail of the table has probabilities below 0.001
        region = pane.region
        for strip in app.screen._compositor.render_strips()[region.y : region.bottom]:
            for segment in strip.crop(region.x, region.right):
                if segment.style is not None and segment.text.strip():
                    assert not segment.style.underline, segment


# -- 3. the logit lens is exact at every layer, from the stored W_U -----------------------------------

def independent_lens(path: str, step, token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(p [n_layers], rank [n_layers]) of a token: final RMSNorm of each layer's recorded resid_post at
    the last position, times the stored W_U, softmax over the whole vocabulary (float64 numpy)."""
    import json
    import os

    from safetensors.numpy import load_file

    facts = json.load(open(os.path.join(path, "manifest.json")))["model"]["lens"]
    arrays = load_file(os.path.join(path, "lens.safetensors"))
    w_u = arrays["unembed.W_U"] if "unembed.W_U" in arrays else arrays["unembed.W_U_T"].T
    probs, ranks = [], []
    for layer in range(facts["n_layers"]):
        x = np.asarray(step[f"blocks.{layer}.hook_resid_post"][-1], dtype=np.float64)
        x = x / np.sqrt((x * x).mean() + facts["eps"]) * arrays["ln_final.w"]
        logits = x @ w_u.astype(np.float64)
        e = np.exp(logits - logits.max())
        probs.append(e[token_id] / e.sum())
        ranks.append(1 + int((logits > logits[token_id]).sum()))
    return np.array(probs), np.array(ranks)


def test_lens_view_is_exact_for_the_chosen_and_any_token(fixture_trace):
    from stepscope.tui.views.logit_lens import logit_lens

    trace = fixture_trace
    for index in (0, 3):
        step = trace.steps[index]
        chosen = int(step.token["id"])
        for token_id in (None, 7, 200):
            lens = logit_lens(trace, index, token_id)
            p, rank = independent_lens(FIXTURE, step, chosen if token_id is None else token_id)
            assert lens.exact
            assert [row.chosen_rank for row in lens.rows] == rank.tolist()
            assert np.allclose([row.chosen_prob for row in lens.rows], p, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("size", SIZES)
async def test_lens_pane_shows_rank_and_p_of_the_chosen_token_at_every_layer(fixture_trace, size):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=size) as pilot:
        await pilot.press("4")
        await pilot.pause()
        step = fixture_trace.steps[0]
        p, rank = independent_lens(FIXTURE, step, int(step.token["id"]))
        lines = region_lines(app, app.main_screen.pane("lens"))
        header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["L"])
        for layer in range(len(p)):
            cells = lines[header + 1 + layer].split()
            assert cells[0] == str(layer)
            assert str(rank[layer]) in cells and f"{p[layer]:.3f}" in cells, lines[header + 1 + layer]
        assert "exact" in "\n".join(lines)


def test_lens_in_watches_and_breakpoints_is_exact(fixture_trace):
    from stepscope.tui.breakpoints import Breakpoint
    from stepscope.tui.watch import Watch

    trace = fixture_trace
    step = trace.steps[2]
    for token_id in (7, 200, int(step["logit_lens.ids"][1, 0])):
        p, rank = independent_lens(FIXTURE, step, token_id)
        for layer in (0, 1):
            assert Watch.compile(f"lens({layer}, {token_id})", trace).at(trace, 2) == pytest.approx(p[layer], rel=1e-4)
            assert Watch.compile(f"lensrank({layer}, {token_id})", trace).at(trace, 2) == rank[layer]
    p, _ = independent_lens(FIXTURE, step, 200)
    assert Breakpoint.parse(f"lens(1, 200) > {p[1] * 0.99}").matches(trace.steps[2], trace)
    assert not Breakpoint.parse(f"lens(1, 200) > {p[1] * 1.01}").matches(trace.steps[2], trace)


# -- 5. the heads pane reaches the last layer of a deep model ---------------------------------------

@pytest.fixture(scope="module")
def deep_trace(tmp_path_factory):
    """A synthetic trace of a 30-layer model."""
    from tests.support import synthetic_trace

    saved = synthetic_trace.N_LAYERS
    synthetic_trace.N_LAYERS = 30
    try:
        return build_trace(tmp_path_factory.mktemp("deep") / "trace", n_decode=1)
    finally:
        synthetic_trace.N_LAYERS = saved


def heads_rows(app) -> dict[int, int]:
    """{layer: y} of the layer rows the Heads pane shows."""
    rows = {}
    for y, line in enumerate(region_lines(app, app.main_screen.pane("heads"))):
        cells = line.split()
        if len(cells) == 5 and cells[0].isdigit() and all(len(c) == 2 for c in cells[1:]):
            rows[int(cells[0])] = y
    return rows


async def test_heads_pane_shows_every_layer_when_they_fit(deep_trace):
    app = StepscopeApp(trace=load_trace(deep_trace))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        assert sorted(heads_rows(app)) == list(range(30))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("keys", [["down"] * 29, ["tab", "pagedown", "pagedown", "pagedown", "pagedown"]])
async def test_heads_pane_reaches_the_last_layer(deep_trace, size, keys):
    app = StepscopeApp(trace=load_trace(deep_trace))
    async with app.run_test(size=size) as pilot:
        await pilot.press("6")
        if keys[0] == "tab":
            app.main_screen.pane("heads").focus()
            keys = keys[1:]
        await pilot.press(*keys)
        await pilot.pause()
        assert app.layer == 29
        rows = heads_rows(app)
        assert 29 in rows
        await pilot.press("pageup" if "pagedown" in keys else "k")
        await pilot.pause()
        rows = heads_rows(app)
        assert app.layer < 29
        if 29 in rows:
            await pilot.click(app.main_screen.pane("heads"), offset=(5 + 3 * 2 + 1, rows[29]))
            assert (app.layer, app.head) == (29, 2)


# -- 4. the header always shows the mode, the step, the layer and the head -----------------------------

def header(app) -> str:
    return app.main_screen._compositor.render_strips()[0].text.rstrip()


EFFECT = ("effect step 1: original chose ·Paris p 0.773 → here 0.141 · n / c continue · B switches runs · "
          "0 compares")


@pytest.mark.parametrize("size", SIZES)
async def test_header_keeps_step_layer_and_head_with_a_long_note(fixture_trace, size):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=size) as pilot:
        await pilot.press("n", "j", "l")
        for note in (EFFECT, "breakpoint at step 1: p(chosen) < 0.3 (0.025) · c continues", ""):
            app.main_screen.set_state(note, False)
            await pilot.pause()
            line = header(app)
            assert len(line) <= size[0]
            assert "replay" in line and "step 1/7 decode" in line and "L 1" in line and "H 1" in line, line
            if note and size[0] >= 80:
                assert note[:20] in line, line  # the note degrades, it is not dropped
            if size[0] >= 200:
                assert "tiny-llama-gqa" in line and "chose" in line and "(0–3)" in line, line
            if size[0] >= 120 and note == EFFECT:
                assert "original chose ·Paris p 0.773 → here 0.141" in line, line  # hints go before the effect


def test_header_degrades_in_its_stated_order():
    from rich.text import Text

    from stepscope.tui.widgets.status_bar import layout

    pieces = {"title": Text("stepscope"), "model": Text("a-model-with-a-long-name-7b"), "mode": Text("live"),
              "step": Text("step 3/15 decode"), "chosen": Text("chose ·Paris · rank 1 · p 0.420 (raw 0.300)"),
              "where": Text("L 5 (0–29) H 2 (0–8) kv 0"), "state": Text(EFFECT)}
    widths = [300, 200, 160, 120, 100, 80, 60, 50]
    lines = [layout(pieces, w).plain for w in widths]
    for w, line in zip(widths, lines):
        assert len(line) <= w and "live" in line and "step 3/15 decode" in line and "L 5" in line and "H 2" in line
    assert "(raw 0.300)" in lines[0] and "(raw" not in lines[2]
    assert "stepscope" in lines[1] and "stepscope" not in lines[4]
    assert "chose ·Paris" in lines[3] and "here 0.141" in lines[3]


async def test_live_branch_header_at_120x40(tiny):
    app = StepscopeApp(session_factory=make_factory(tiny, max_new_tokens=3))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_idle(app, pilot)
        await pilot.press("n")
        await wait_idle(app, pilot)
        await pilot.press("F")
        await pilot.pause()
        await pilot.press("enter")
        await wait_idle(app, pilot)
        assert app.current_run
        line = header(app)
        assert "live" in line and f"step {app.step}/" in line and "L 0" in line and "H 0" in line, line
        assert "original chose" in line, line
        await pilot.press("B")
        await pilot.pause()
        line = header(app)
        assert "live" in line and "step" in line and "L 0" in line and "H 0" in line, line


# -- 10. nothing clipped mid-word at 120x40; tabs and titles degrade at 80x24 ----------------------------

def pane_lines(app) -> list[str]:
    return [line.rstrip() for line in region_lines(app, app.main_screen.query_one("#panes"))]


@pytest.mark.parametrize("sidebar", [True, False])
async def test_nothing_is_clipped_at_120x40(tmp_path, sidebar):
    for path in (FIXTURE, build_trace(tmp_path / "syn", n_decode=2)):
        app = StepscopeApp(trace=load_trace(path))
        async with app.run_test(size=(120, 40)) as pilot:
            if not sidebar:
                await pilot.press("f")
            for key in "1234567890":
                await pilot.press(key)
                await pilot.pause(0.3)
                for line in pane_lines(app):
                    assert not line.endswith("…") and not line.endswith(" ·"), (key, line)
            tabs = region_lines(app, app.main_screen.query_one("#tabs"))[0]
            assert all(f"{k} " in tabs for k in "1234567890") and "0 Compare" in tabs
            footer = screen_text(app).splitlines()[-1]
            assert footer.rstrip().endswith("q Quit"), footer


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_tabs_and_titles_degrade_at_80x24(fixture_trace, size):
    from stepscope.tui.screens.main import tab_labels

    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=size) as pilot:
        await pilot.press("8")
        await pilot.pause(0.5)
        tabs = region_lines(app, app.main_screen.query_one("#tabs"))[0]
        assert all(f"{k} " in tabs + " " for k in "1234567890"), tabs  # every tab and its key
        assert "8 Why" in tabs
        text = "\n".join(pane_lines(app))
        from stepscope.tracer.attribution import attribute

        actual = attribute(fixture_trace, 0).actual
        assert f"logit difference {actual:+.3f}" in text, text  # the number the title explains, whole
    assert tab_labels(200, "lens")[0] == "1 Candidates"
    assert tab_labels(100, "lens")[0] == "1 Cand" and tab_labels(80, "lens")[:4] == ["1", "2", "3", "4 Lens"]
    assert tab_labels(40, "lens")[0] == "1" and tab_labels(20, "lens") == list("1234567890P")
