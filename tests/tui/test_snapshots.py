"""Snapshots of the main screens at 80×24 and 120×40 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mio_agent.runtime.resources import Resources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend
from mio_agent.tui.launch import open_local

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def make_app(res: Resources) -> MioApp:
    async def make() -> Backend:
        # a fixed id (the header shows it), no log, no audio devices: nothing differs between runs
        return await open_local(res, log_root=None, resume="snapshot-session")

    return MioApp(make, session_root=Path("/nonexistent"))


async def _ready(pilot: Any) -> None:
    while pilot.app.backend is None:
        await pilot.pause(0.05)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(res: Resources, snap_compare: Any, size: tuple[int, int]) -> None:
    """Before any turn: the prompt, the notice, the side panels."""
    assert snap_compare(make_app(res), terminal_size=size, run_before=_ready)


@pytest.mark.parametrize("size", SIZES)
def test_completion_and_help(res: Resources, snap_compare: Any, size: tuple[int, int]) -> None:
    """/help listed, and a half-typed command with its completion shown."""

    async def typed(pilot: Any) -> None:
        await _ready(pilot)
        await pilot.press(*"/help", "enter", *"/ima")
        await pilot.pause(0.3)

    assert snap_compare(make_app(res), terminal_size=size, run_before=typed)


def test_sessions_screen(res: Resources, snap_compare: Any) -> None:
    """The past-sessions screen over the main one (no session folder: none listed)."""

    async def opened(pilot: Any) -> None:
        await _ready(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause(0.3)

    assert snap_compare(make_app(res), terminal_size=(80, 24), run_before=opened)
