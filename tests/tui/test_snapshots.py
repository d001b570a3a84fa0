"""Snapshots of the main screens at 80×24 and 120×40 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import OptionList

from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend
from mio_agent.tui.launch import open_local
from mio_agent.tui.sessions import SessionsScreen
from mio_agent.tui.slash import Prompt
from mio_agent.tui.turns import NoteLine
from tests.tui.conftest import shown, wait_until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def make_app(shared: SharedResources) -> MioApp:
    async def make() -> Backend:
        # a fixed id (the header shows it), no log, no audio devices: nothing differs between runs
        return await open_local(shared, log_root=None, resume="snapshot-session")

    return MioApp(make, session_root=Path("/nonexistent"))


# Each `run_before` waits for what its snapshot shows (with a deadline that fails, in wait_until),
# then for the app's animations; the snapshot plugin then lets pending messages settle as well.


async def _ready(pilot: Any) -> None:
    """Until the backend is attached: the panels filled in and its notice shown ("no audio")."""
    app = pilot.app
    await wait_until(pilot, lambda: app.backend is not None and len(app.query(NoteLine)) > 0)
    await pilot.wait_for_scheduled_animations()


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(shared: SharedResources, snap_compare: Any, size: tuple[int, int]) -> None:
    """Before any turn: the prompt, the notice, the side panels."""
    assert snap_compare(make_app(shared), terminal_size=size, run_before=_ready)


@pytest.mark.parametrize("size", SIZES)
def test_completion_and_help(shared: SharedResources, snap_compare: Any, size: tuple[int, int]) -> None:
    """/help listed, and a half-typed command with its completion shown."""

    async def typed(pilot: Any) -> None:
        await _ready(pilot)
        await pilot.press(*"/help", "enter", *"/ima")
        app = pilot.app
        prompt = app.query_one(Prompt)
        await wait_until(
            pilot,
            lambda: (
                any("aliases:" in t for t in shown(app.query(NoteLine)))
                and prompt.value == "/ima"
                and prompt._suggestion == "/image_editing"
            ),
        )
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(make_app(shared), terminal_size=size, run_before=typed)


def test_sessions_screen(shared: SharedResources, snap_compare: Any) -> None:
    """The past-sessions screen over the main one (no session folder: none listed)."""

    async def opened(pilot: Any) -> None:
        await _ready(pilot)
        await pilot.press("ctrl+o")
        app = pilot.app
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, SessionsScreen) and len(app.screen.query(OptionList)) == 1,
        )
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(make_app(shared), terminal_size=(80, 24), run_before=opened)
