"""`/` filters the tensor list, `n` / `N` jump between the matches (wrapping), Esc clears; without
a filter `n` still steps."""

from __future__ import annotations

import pytest

from stepscope.tui.app import StepscopeApp
from stepscope.tui.screens.main import MainScreen
from stepscope.tui.screens.prompt import PromptScreen
from stepscope.tui.views.name_filter import name_matches
from stepscope.tui.widgets.tensor_list import TensorList

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


def test_name_matches():
    assert name_matches("blocks.10.hook_resid_post", "resid post 10")
    assert not name_matches("blocks.1.hook_resid_post", "resid 10")  # a number is a whole part
    assert name_matches("blocks.3.attn.hook_pattern", "blocks.*.attn.hook_p*")
    assert not name_matches("blocks.3.attn.hook_z", "blocks.*.attn.hook_p*")
    assert name_matches("logits", "") and name_matches("Logits", "LOG")


async def test_slash_filters_and_n_N_jump(fixture_trace):
    app = StepscopeApp(trace=fixture_trace)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "nothing_like_this"
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen)  # one line, the filter unchanged
        assert "no tensor" in str(app.screen.query_one("#prompt-error").render())
        app.screen.query_one("Input").value = "resid_post"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and app.main_screen.active_pane_id == "tensors"
        tensors = app.main_screen.pane("tensors").query_one(TensorList)
        assert tensors.has_focus
        names = [i.name for i in tensors.infos]
        assert names == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
        assert len(tensors.all_infos) > 20
        assert tensors.selected.name == names[0]
        await pilot.press("n")
        assert tensors.selected.name == names[1] and app.step == 0  # n: next match, not next step
        await pilot.press("n")
        assert tensors.selected.name == names[0]  # wraps
        await pilot.press("N")
        assert tensors.selected.name == names[1]
        await pilot.press("right")  # another step keeps the filter and the selection
        await pilot.pause()
        assert app.step == 1 and [i.name for i in tensors.infos] == names and tensors.selected.name == names[1]
        await pilot.press("escape")  # clears the filter, keeps the selected tensor
        assert tensors.name_filter == "" and len(tensors.infos) == len(tensors.all_infos)
        assert tensors.selected.name == names[1]
        await pilot.press("n")  # no filter: n steps again
        await pilot.pause()
        assert app.step == 2
