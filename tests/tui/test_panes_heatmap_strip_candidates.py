"""The heatmap, candidates, token strip and tensor browser panes mounted alone, driven with
Pilot keys and clicks; the test App plays the app's part of moving the cursor (Pane.Moved)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from rich.cells import cell_len

from stepscope.tracer import load_trace
from stepscope.tui.render.palette import MASKED_RGB, PALETTE_RGB
from stepscope.tui.state import Cursor
from stepscope.tui.views.heatmap import ZOOMS
from stepscope.tui.widgets.heatmap import HeatmapPane
from tests.support import pane_harness as harness
from tests.support import synthetic_trace as syn


def drive(pane, script, size=(100, 30)):
    """The harness with the app's part played: a Pane.Moved moves the pane's cursor."""
    return harness.drive(pane, script, size, follow_moves=True)


lines = harness.screen_lines


def colours(app, y: int) -> list[tuple[str, tuple | None, tuple | None]]:
    out = []
    for seg in app.screen._compositor.render_strips()[y]:
        style = seg.style
        fg = tuple(style.color.triplet) if style and style.color and style.color.triplet else None
        bg = tuple(style.bgcolor.triplet) if style and style.bgcolor and style.bgcolor.triplet else None
        out += [(ch, fg, bg) for ch in seg.text]
    return out


def grid(app, y: int) -> list[tuple | None]:
    """Colour of each drawn key cell of screen line y (the cursor cell `◆` carries its colour as bg)."""
    return [fg if ch == "▀" else bg for ch, fg, bg in colours(app, y) if ch in "▀◆"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return load_trace(syn.build_trace(tmp_path_factory.mktemp("syn") / "trace", n_decode=4))


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory):
    """A 1-row decode step over 260 keys (prompt of 258): wider than any terminal."""
    ids = [1] + [3 + i % 40 for i in range(257)]
    return load_trace(syn.build_trace(tmp_path_factory.mktemp("long") / "trace", n_decode=2, prompt_ids=ids))


GRID_Y = 4  # header, readout, ruler, cursor label, then one line per row


# -- heatmap -------------------------------------------------------------------------------------------


def test_heatmap_prefill_one_line_per_query_in_colour(trace):
    pane = HeatmapPane(trace)
    pane.level = ZOOMS.index((1, 1))

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(layer=1, head=3)
        await pilot.pause()
        pattern = trace.steps[0]["blocks.1.attn.hook_pattern"][3]  # [T, S]
        np.testing.assert_array_equal(pane.last_map.values, pattern)
        screen = lines(app)
        assert screen[0].strip().startswith("L1 H3 (KV 1) · zoom ×1 · step 0 prefill · q 0–5 · k 0–5 of 6")
        row0 = grid(app, GRID_Y)
        assert row0[0] == PALETTE_RGB[-1] and all(c == MASKED_RGB for c in row0[1:])  # row 0: key 0 only
        row1 = grid(app, GRID_Y + 1)
        assert row1[1] != MASKED_RGB and row1[2] == MASKED_RGB
        labels = [screen[GRID_Y + r].split("▀")[0].split("◆")[0].strip() for r in range(6)]
        assert labels == ["0 <|im_star…", "1 The", "2 ·capital", "3 ·of", "4 [red]x[/r…", "5 ↵"]  # one query each
        assert "per map" in screen[GRID_Y + 6] and "masked" in screen[GRID_Y + 6]

    drive(pane, script, size=(80, 24))


def test_every_zoom_level_reachable_with_plus_and_minus(trace):
    """+ and - step through the zoom levels one at a time, none skipped; pooled rows are labelled by position range."""
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        pane.focus()
        await pilot.pause()
        seen = []
        for _ in range(len(ZOOMS) + 1):
            await pilot.press("plus")
        for i in range(6):
            if i:
                await pilot.press("minus")
            seen.append(lines(app)[0].split("zoom ")[1].split(" ")[0])
        assert seen == ["×4", "×3", "×2", "×1", "1/2", "1/4"]
        labels = [line.split("▀")[0].split("◆")[0].strip() for line in lines(app)[GRID_Y:GRID_Y + 3]
                  if "▀" in line or "◆" in line]
        assert labels == ["0–3", "4–5"]  # pooled rows labelled by position range (1/4)
        assert pane.pool == 4 and pane.cell == 4  # a pooled map spreads over the width (≤ 4 per cell)

    drive(pane, script, size=(80, 24))


def test_wide_characters_never_shift_a_row(tmp_path, monkeypatch):
    """Rows with `中`, `🙂` start in the same cell as the others."""
    for i, text in zip(range(40, 46), ["中", "🙂", "a", "文字", "x", "b"]):
        monkeypatch.setitem(syn.TEXTS, i, text)
    tr = load_trace(syn.build_trace(tmp_path / "wide", n_decode=1, prompt_ids=list(range(40, 46))))
    pane = HeatmapPane(tr)

    async def script(app, pilot):
        await pilot.pause()
        starts = []
        for line in lines(app)[GRID_Y:GRID_Y + 6]:
            cut = min(i for i in (line.find("▀"), line.find("◆")) if i >= 0)
            starts.append(cell_len(line[:cut]))
        assert len(set(starts)) == 1, starts

    drive(pane, script, size=(80, 24))


def test_decode_step_shows_all_keys_wrapped_with_positions(long_trace):
    """A decode step over 260 keys shows every key, wrapped, with their positions."""
    pane = HeatmapPane(long_trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=2)
        await pilot.pause()
        n = long_trace.steps[2].positions[1]
        assert n == 260 and pane.last_map.values.shape == (1, 260)
        screen = lines(app)
        drawn = [line for line in screen if "▀" in line or "◆" in line]
        assert sum(line.count("▀") + line.count("◆") for line in drawn) == 260 * pane.cell
        assert drawn[0].split("▀")[0].strip().startswith("k 0–") and "259" in drawn[-1].split("▀")[0]
        assert "k 0–259 of 260" in screen[0]

    drive(pane, script, size=(80, 24))


def test_cell_cursor_keys_and_readout(trace):
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        pane.focus()
        pane.cursor = pane.cursor.moved(layer=1, head=2)
        await pilot.pause()
        pattern = trace.steps[0]["blocks.1.attn.hook_pattern"][2]  # [6, 6]
        await pilot.press("up", "left")  # from (5, argmax) one query up, one key left
        q, k = pane.cursor.query, pane.cursor.key
        assert q == 4 and k == max(0, int(np.argmax(pattern[5])) - 1)
        readout = lines(app)[1]
        rank = 1 + int(np.sum(pattern[4, :5] > pattern[4, k]))  # independent: sort the row
        assert f"q 4 [red]x[/red] → k {k} " in readout and f"p {pattern[4, k]:.4f}" in readout
        assert f"rank {rank}/5" in readout
        label = lines(app)[3]  # the cursor column labelled in full, horizontally
        assert f"k {k} " in label
        await pilot.press("left", "left", "left", "left", "left", "left")
        assert pane.cursor.key == 0  # clamped at the first key
        await pilot.press("v")
        assert pane.scale == "fixed" and "fixed 0" in "\n".join(lines(app))
        await pilot.press("v")
        assert "log 0.0001" in "\n".join(lines(app))

    drive(pane, script, size=(80, 24))


def test_click_selects_a_cell(trace):
    pane = HeatmapPane(trace)
    pane.level = ZOOMS.index((2, 1))

    async def script(app, pilot):
        await pilot.pause()
        x = 1 + 12 + 1 + 2 * 3  # padding, label, space, key 3 at 2 characters a key
        await pilot.click(HeatmapPane, offset=(x, GRID_Y + 4))
        await pilot.pause()
        assert app.moves[-1] == {"query": 4, "key": 3}
        assert (pane.cursor.query, pane.cursor.key) == (4, 3)
        assert "q 4 " in lines(app)[1] and "k 3 ·of" in lines(app)[1]

    drive(pane, script, size=(80, 24))


def test_stack_zoom_pan_and_reset(trace):
    pane = HeatmapPane(trace)
    pane.level = ZOOMS.index((4, 1))

    async def script(app, pilot):
        pane.focus()
        pane.cursor = pane.cursor.moved(step=3)
        await pilot.pause()
        assert pane.last_map.values.shape == (1, 9) and not pane.last_map.stacked
        assert "step 3 decode · q 8 · k 0–8 of 9" in pane._header(pane.last_map).plain
        await pilot.press("s")
        assert pane.stacked and pane.last_map.stacked and pane.last_map.n_rows == 9
        vp = pane.last_map.viewport
        assert (vp.row0, vp.col0, vp.rows, vp.cols) == (2, 6, 7, 3)  # 12 - 5 lines, (28 - 13) // 4 keys, the end
        await pilot.press("H", "K")
        vp = pane.last_map.viewport
        assert (vp.row0, vp.col0) == (1, 5) and not pane.follow
        await pilot.press("0")
        assert pane.follow and pane.level is None

    drive(pane, script, size=(30, 12))


def test_heatmap_validates_and_reports_missing(tmp_path, trace):
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        pane.cursor = Cursor(step=99, layer=7, head=-3).clamped(trace)
        assert pane.cursor == Cursor(step=4, layer=1, head=0)
        pane.trace = load_trace(syn.build_trace(tmp_path / "sub", n_decode=1, record=["logits"]))
        pane.cursor = pane.cursor.moved(step=0)
        await pilot.pause()
        assert "blocks.1.attn.hook_pattern was not recorded at step 0" in "\n".join(lines(app))

    drive(pane, script)


# -- tensor browser ------------------------------------------------------------------------------------

from stepscope.tui.views.tensors import format_number  # noqa: E402
from stepscope.tui.widgets.tensor_browser import TensorBrowser  # noqa: E402
from stepscope.tui.widgets.tensor_inspector import TensorInspector  # noqa: E402
from stepscope.tui.widgets.tensor_list import TensorList  # noqa: E402


def text_of(app) -> str:
    return "\n".join(line.rstrip() for line in lines(app))


def _browse(app, pilot, pane, name):
    app.query_one(TensorList).focus()
    app.query_one(TensorList).select_name(name)
    return pilot.press("enter")


def test_browser_axes_switch_and_heads_open_on_the_selected_head(trace):
    """`,` `.` did nothing; hook_q [T, n_heads, d_head] always sliced along positions."""
    pane = TensorInspector(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(head=3)
        await _browse(app, pilot, pane, "blocks.0.attn.hook_q")
        browser = app.query_one(TensorBrowser)
        q = trace.steps[0]["blocks.0.attn.hook_q"]  # [T, n_heads, d_head]
        np.testing.assert_array_equal(browser.current_slice(), q[:, 3, :])  # one head's [T, d_head]
        text = text_of(app)
        assert "[position :, head 3, d_head :]" in text and "position × d_head" in text
        assert "0 <|im_st…" in text and "3 ·of" in text  # rows: positions with their tokens
        await pilot.press("full_stop")
        np.testing.assert_array_equal(browser.current_slice(), q[:, :, 0])  # position × head
        assert "position × head" in text_of(app)
        await pilot.press("full_stop")
        np.testing.assert_array_equal(browser.current_slice(), q[0])  # head × d_head at position 0
        await pilot.press("right_square_bracket", "right_square_bracket")
        np.testing.assert_array_equal(browser.current_slice(), q[2])
        assert "[position 2, head :, d_head :]" in text_of(app)
        await pilot.press("comma", "comma")
        np.testing.assert_array_equal(browser.current_slice(), q[:, 3, :])  # back, same head

    drive(pane, script, size=(110, 32))


def test_browser_vocab_axis_labels_and_jump(trace):
    pane = TensorInspector(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        await _browse(app, pilot, pane, "logits")
        browser = app.query_one(TensorBrowser)
        chosen = trace.steps[1].token["id"]  # 9, "\x1b[31m"
        await pilot.press("t")
        assert browser.col0 == chosen
        header = next(line for line in lines(app) if f"{chosen} \\x1b[" in line)  # id and escaped text
        assert "\x1b" not in header
        row = trace.steps[1]["logits"][0]  # [vocab]
        await pilot.press("m")
        assert browser.col0 == int(np.argmax(row))
        assert format_number(float(row.max()), 10).strip() in text_of(app)

    drive(pane, script, size=(110, 32))


def test_browser_export_beside_the_trace_with_feedback(trace, tmp_path_factory):
    """`e` gave no feedback; the note stayed after Esc; files landed in the current directory."""
    pane = TensorInspector(trace)
    exports = os.path.abspath(trace.path).rstrip(os.sep) + "-exports"

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(head=1)
        await _browse(app, pilot, pane, "blocks.1.attn.hook_q")
        await pilot.press("E")
        q = trace.steps[0]["blocks.1.attn.hook_q"]
        path = os.path.join(exports, "step00000_blocks.1.attn.hook_q_head1.npy")
        np.testing.assert_array_equal(np.load(path, allow_pickle=False), q[:, 1, :])
        assert "exported slice →" in text_of(app) and "hook_q_head1.npy" in text_of(app)
        await pilot.press("e")
        whole = os.path.join(exports, "step00000_blocks.1.attn.hook_q.npy")
        np.testing.assert_array_equal(np.load(whole, allow_pickle=False), q)
        assert "exported tensor →" in text_of(app)
        await pilot.press("escape")
        assert "exported" not in text_of(app)  # cleared on leaving
        await pilot.press("e")  # from the list: the detail shows the path
        assert "exported →" in text_of(app)
        await pilot.press("down")
        assert "exported" not in text_of(app)  # another tensor: cleared

    drive(pane, script, size=(110, 32))


# -- token strip ---------------------------------------------------------------------------------------

from stepscope.tui.widgets.token_strip import TokenStrip  # noqa: E402


def _bytes_trace(tmp_path, monkeypatch, texts_pieces):
    """A synthetic trace whose prompt tokens have the given (text, piece) pairs."""
    ids = list(range(30, 30 + len(texts_pieces)))  # within the vocabulary of 50
    for i, (text, _) in zip(ids, texts_pieces):
        monkeypatch.setitem(syn.TEXTS, i, text)
    tr = load_trace(syn.build_trace(tmp_path / "bytes", n_decode=1, prompt_ids=ids))
    for tok, (_, piece) in zip(tr.tokens, texts_pieces):
        tok["piece"] = piece  # what the session records from convert_ids_to_tokens
    return tr


def test_strip_wraps_between_tokens_never_inside(tmp_path, monkeypatch):
    """The strip wrapped inside tokens (`vi` / `llage`)."""
    words = [(" village", "Ġvillage"), (" of", "Ġof"), (" the", "Ġthe"), (" mountains", "Ġmountains")] * 3
    tr = _bytes_trace(tmp_path, monkeypatch, words)
    strip = TokenStrip(tr)

    async def script(app, pilot):
        await pilot.pause()
        text = [line.rstrip() for line in lines(app) if line.strip()]
        assert len(text) > 1  # it does wrap at this width
        for line in text:
            for word in line.replace("…", "").split("·"):
                assert word in ("", "village", "of", "the", "mountains", "Paris", "\\x1b[31m"), text  # whole tokens

    drive(strip, script, size=(23, 6))


def test_strip_shows_bytes_and_merges_completed_characters(tmp_path, monkeypatch):
    """Byte-fallback tokens all rendered `�`; `½` showed as `��`."""
    pieces = [("a", "a"), ("\ufffd", "<0xC2>"), ("\ufffd", "<0xBD>"), ("b", "b"), ("\ufffd", "<0xE4>"),
              ("\u00a0", "Âł")]
    tr = _bytes_trace(tmp_path, monkeypatch, pieces)
    strip = TokenStrip(tr)

    async def script(app, pilot):
        await pilot.pause()
        text = "".join(lines(app))
        assert "½" in text and "\ufffd" not in text
        assert "<0xE4>" in text  # an unfinished sequence shows its byte
        assert "\\u00a0" in text  # the no-break space is visible

    drive(strip, script, size=(60, 4))


def test_clicking_a_token_selects_its_query_row(trace):
    strip = TokenStrip(trace)

    async def script(app, pilot):
        await pilot.pause()
        line, x0, x1, token = next(box for box in strip.hit_boxes if box[3] == 2)  # "·capital"
        await pilot.click(TokenStrip, offset=(x0 + 1, line))
        await pilot.pause()
        assert app.moves[-1] == {"query": 2, "key": None} and strip.cursor.query == 2

    drive(strip, script, size=(60, 4))


def test_heatmap_follows_a_query_chosen_in_the_strip(trace):
    pane = HeatmapPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=3)
        await pilot.pause()
        pane.cursor = pane.cursor.moved(query=2)  # what a strip click does through the app
        await pilot.pause()
        assert pane.stacked and pane.selected()[0] == 2
        assert "q 2 ·capital" in lines(app)[1]

    drive(pane, script, size=(80, 24))


# -- candidates ------------------------------------------------------------------------------------

from stepscope.tui.views.candidates import candidates  # noqa: E402
from stepscope.tui.widgets.candidates import CandidatesPane  # noqa: E402


def test_candidates_final_p_column_one_based_ranks_and_greyed_tail(trace):
    """The header's p had no column; ranks were 0-based in the header; nothing below the cut-off."""
    pane = CandidatesPane(trace)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        screen = [line.rstrip() for line in lines(app)]
        sampling = trace.steps[1].sampling
        header = next(line for line in screen if " id " in line and "token" in line)
        assert header.split()[-4:] == ["raw", "p", "p/T", "p"] or header.split()[-5:] == ["raw", "p", "p/T", "p", "cum"]
        chosen_rank = sampling["chosen_rank"] + 1
        assert f"rank {chosen_rank} · p {sampling['chosen_prob']:.3f}" in screen[1]
        row = next(line for line in screen if line.lstrip().startswith("▶"))
        assert row.split()[1] == str(chosen_rank) and f"{sampling['chosen_prob']:.3f}" in row.split()
        cut = next(i for i, line in enumerate(screen) if "cut-off (top-p 0.9)" in line)
        data = candidates(trace, 1)
        n_kept = sum(r.kept for r in data.rows)
        below = [line for line in screen[cut + 1:] if line.strip()]
        assert len(below) == len(data.rows) - n_kept  # the removed tail is drawn under the line
        assert all(line.split()[-2] == "0.000" or "0.000" in line.split() for line in below)  # final p 0

    drive(pane, script, size=(110, 30))


def test_greedy_candidates_show_no_pipeline(tmp_path):
    tr = load_trace(syn.build_trace(tmp_path / "g", n_decode=1, do_sample=False))
    pane = CandidatesPane(tr)

    async def script(app, pilot):
        await pilot.pause()
        text = "\n".join(lines(app))
        assert "greedy (argmax)" in text and "pipeline" not in text and "→/T" not in text
        assert "cut-off" not in text

    drive(pane, script, size=(100, 24))


def test_candidate_rows_with_odd_spaces_keep_their_columns(tmp_path, monkeypatch):
    """Row 7 of screenshots/main-paris.svg: an odd-space token broke the table's columns."""
    odd = ["\u00a0x", "中文字", "🙂", "\u200b", "a\u0301", "\u3000", "\ufeff", "\U0010ffff"]
    for i in range(13, 50):
        monkeypatch.setitem(syn.TEXTS, i, odd[i % len(odd)])
    tr = load_trace(syn.build_trace(tmp_path / "odd", n_decode=1))
    pane = CandidatesPane(tr)

    async def script(app, pilot):
        await pilot.pause()
        ids = [int(i) for i in tr.steps[0]["sample.candidate_ids"]]
        rows = [line for line in lines(app) if line[:6].strip().lstrip("▶").strip().isdigit()]
        assert len(rows) >= 8
        ends = set()
        for line in rows:
            rank = int(line.split()[0].lstrip("▶") or line.split()[1])
            token_id = str(ids[rank - 1])
            ends.add(cell_len(line[: line.index(" " + token_id + " ") + len(token_id) + 1]))
        assert len(ends) == 1  # the id column ends in the same cell on every row

    drive(pane, script, size=(100, 30))


# -- in the app: the strip drives the attention cell -----------------------------------------------------


def test_app_strip_click_and_heatmap_arrows_move_one_cursor(trace):
    from stepscope.tui.app import StepscopeApp

    app = StepscopeApp(trace=trace)

    async def main():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("2")  # the Attention pane
            await pilot.pause()
            strip = app.screen.query_one(TokenStrip)
            line, x0, _, token = next(box for box in strip.hit_boxes if box[3] == 3)  # "·of"
            pad = strip.styles.padding
            await pilot.click(TokenStrip, offset=(x0 + pad.left, line + pad.top))
            await pilot.pause()
            assert app.cursor.query == 3
            heatmap = app.screen.query_one(HeatmapPane)
            readout = next(line for line in lines(app) if "▸ q " in line)
            assert "q 3 ·of → k" in readout
            heatmap.focus()
            await pilot.press("down", "right")
            await pilot.pause()
            q, k = heatmap.selected()
            assert app.cursor.query == q == 4 and app.cursor.key == k
            pattern = trace.steps[0]["blocks.0.attn.hook_pattern"][0]  # [T, S]
            assert f"p {pattern[4, k]:.4f}" in next(line for line in lines(app) if "▸ q " in line)

    asyncio.run(main())


# -- a real recorded trace: tiny Llama, byte-level tokenizer, sampling with top-k ---------------------------


@pytest.fixture(scope="module")
def sampled(tiny, tmp_path_factory):
    """Prompt `a½中🙂` (one token per byte: 10 tokens), 3 sampled tokens with top-k 5."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    model, tok = tiny
    out = tmp_path_factory.mktemp("sampled") / "trace"
    settings = GenerationSettings(do_sample=True, temperature=1.0, top_k=5, seed=0, max_new_tokens=3,
                                  logit_lens_k=5, stop_at_eos=False)
    session = LiveSession(model, tok, "a½中🙂", settings, out=str(out))
    while session.step() is not None:
        pass
    session.close()
    return load_trace(out)


def test_recorded_byte_tokens_merge_in_the_strip(sampled):
    assert sum(t["text"] == "\ufffd" for t in sampled.tokens[: sampled.prompt_len]) == 9  # what decode() gives
    strip = TokenStrip(sampled)

    async def script(app, pilot):
        await pilot.pause()
        text = "".join(lines(app))
        assert "a½中🙂" in text and "\ufffd" not in text

    drive(strip, script, size=(80, 4))


def test_sampled_step_shows_twenty_removed_candidates_greyed(sampled):
    pane = CandidatesPane(sampled)

    async def script(app, pilot):
        pane.cursor = pane.cursor.moved(step=1)
        await pilot.pause()
        screen = [line.rstrip() for line in lines(app)]
        cut = next(i for i, line in enumerate(screen) if "cut-off (top-k 5)" in line)
        kept = [line for line in screen[:cut] if line[:6].strip().lstrip("▶").strip().isdigit()]
        assert len(kept) == 5
        data = candidates(sampled, 1)
        assert len(data.rows) >= 25 and [r.kept for r in data.rows[:6]] == [True] * 5 + [False]
        removed = [r for r in data.rows if not r.kept]
        assert len(removed) >= 20 and all(r.prob == 0 and r.raw_prob > 0 for r in removed)
        first_removed = screen[cut + 1].split()
        assert first_removed[0] == "6" and first_removed[-2] == "0.000"  # final p 0, cum after it

    drive(pane, script, size=(100, 40))


def test_lens_shows_a_no_break_space_token_visibly(tmp_path, monkeypatch):
    """The no-break space (SmolLM2 id 15442) rendered blank in the Lens."""
    from stepscope.tui.widgets.logit_lens import LogitLensPane

    monkeypatch.setitem(syn.TEXTS, 8, "\u00a0")  # the token step 0 chooses
    tr = load_trace(syn.build_trace(tmp_path / "nbsp", n_decode=1))
    pane = LogitLensPane(tr)

    async def script(app, pilot):
        await pilot.pause()
        text = "\n".join(lines(app))
        assert "chose \\u00a0 (id 8)" in text

    drive(pane, script, size=(100, 12))


def test_browser_pages_across_a_wide_axis(trace):
    pane = TensorInspector(trace)

    async def script(app, pilot):
        await _browse(app, pilot, pane, "logits")
        browser = app.query_one(TensorBrowser)
        await pilot.press("shift+right", "shift+right", "right")
        assert browser.col0 == 21
        await pilot.press("shift+left")
        assert browser.col0 == 11

    drive(pane, script, size=(110, 32))


def test_strip_merges_bytes_as_a_live_trace_grows(tmp_path, monkeypatch):
    """Live: `<0xE4>` shows until the tokens completing `中` arrive, then one character."""
    pieces = [("a", "a"), ("\ufffd", "<0xE4>"), ("\ufffd", "<0xB8>"), ("\ufffd", "<0xAD>"), ("b", "b")]
    tr = _bytes_trace(tmp_path, monkeypatch, pieces)
    full = list(tr.tokens)
    strip = TokenStrip(tr)

    async def script(app, pilot):
        for n, expected in ((2, "a<0xE4>"), (3, "a<0xE4><0xB8>"), (4, "a中"), (5, "a中b")):
            tr.tokens[:] = full[:n]  # as a live trace grows token by token
            strip.refresh()
            await pilot.pause()
            assert "".join(lines(app)).replace(" ", "").startswith(expected)

    drive(strip, script, size=(60, 3))
