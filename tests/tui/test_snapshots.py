"""Snapshots of the main screen at 80×24 and 120×40 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

from typing import Any

import pytest

from mio_agent.config import load_config
from mio_agent.runtime.hub import SessionHub
from mio_agent.runtime.resources import Resources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend, LocalBackend


@pytest.fixture(scope="module")
def res() -> Resources:
    return Resources.load(load_config(None, overrides={"router.transcribe": "never"}))


def make_app(res: Resources) -> MioApp:
    hub = SessionHub(res)

    async def make() -> Backend:
        # a fixed id: the header shows it
        return LocalBackend(
            await hub.open("snapshot-session"), "embedded tiny model (replies are noise) on cpu"
        )

    return MioApp(make)


async def _ready(pilot: Any) -> None:
    while pilot.app.backend is None:
        await pilot.pause(0.05)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_main_screen(res: Resources, snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(res), terminal_size=size, run_before=_ready)
