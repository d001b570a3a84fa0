"""`mio-agent tui --connect`: the TUI attached to a running server over a real loopback socket."""

from __future__ import annotations

from pathlib import Path

from mio_agent.config import ServerConfig
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import RemoteBackend
from mio_agent.tui.launch import remote_backend_factory
from mio_agent.tui.turns import AssistantTurn, ErrorLine, NoteLine, UserTurnView
from tests.tui.conftest import shown, wait_until


async def test_a_turn_through_a_running_server(shared: SharedResources, tmp_path: Path) -> None:
    server = MioServer(SessionHub(shared), ServerConfig(port=0))
    port = await server.start()
    try:
        app = MioApp(remote_backend_factory(f"ws://127.0.0.1:{port}/ws", None), export_dir=tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app.backend is not None)
            assert isinstance(app.backend, RemoteBackend)
            assert any(c["name"] == "image_editing" for c in app.capability_info)
            await pilot.press(*"hello server", "enter")
            await wait_until(pilot, lambda: any(w.status == "✓" for w in app.query(AssistantTurn)))
            assert app.query_one(UserTurnView).text == "hello server"
            # no microphone here: the talk key says so instead of failing
            await pilot.press("ctrl+t")
            assert "no microphone here: type your turns" in shown(app.query(NoteLine))
            # the server going away is shown; the conversation stays on screen
            await server.close()
            await wait_until(
                pilot,
                lambda: (
                    "the session ended" in shown(app.query(NoteLine))
                    or any("lost the session" in t for t in shown(app.query(ErrorLine)))
                ),
            )
            assert len(app.query(AssistantTurn)) == 1
    finally:
        await server.close()
