"""The Textual TUI on the embedded model, driven by Textual's Pilot: type, invoke, interrupt, export, resume."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mio_agent.config import load_config
from mio_agent.engine import ReplyOptions
from mio_agent.runtime.hub import SessionHub
from mio_agent.runtime.resources import Resources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend, LocalBackend
from mio_agent.tui.launch import list_sessions, past_events
from mio_agent.tui.widgets import AssistantTurn, ErrorLine, ImageView, NoteLine, UserTurnView


@pytest.fixture(scope="module")
def res() -> Resources:
    return Resources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 900, "router.transcribe": "never", "engine.seed": 1}
        )
    )


def factory(
    hub: SessionHub, reply: ReplyOptions | None = None, session_id: str | None = None
) -> Callable[[], object]:
    async def make() -> Backend:
        session = await hub.open(session_id, reply_options=reply)
        return LocalBackend(session, "embedded tiny model (replies are noise) on cpu")

    return make


async def wait_until(pilot: object, cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the UI did not get there in time")
        await pilot.pause(0.05)  # type: ignore[attr-defined]


async def test_a_typed_turn_streams_into_the_conversation(res: Resources, tmp_path: Path) -> None:
    hub = SessionHub(res, log_root=tmp_path / "sessions")
    app = MioApp(factory(hub), export_dir=tmp_path)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        await pilot.click("#prompt")
        await pilot.press(*"hello there", "enter")
        await wait_until(pilot, lambda: any(w.status == "✓" for w in app.query(AssistantTurn)))
        users = list(app.query(UserTurnView))
        assert users and users[0].text == "hello there"
        reply = app.query(AssistantTurn).first()
        assert reply.audio_s > 0  # the playing indicator shows the reply's length
        assert "state: listening" in str(app.query_one("#state").render())
        # export writes Markdown with the reply audio beside it
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("exported to" in str(n.render()) for n in app.query(NoteLine)))
        md = next(tmp_path.glob("*.md")).read_text()
        assert "**You**: hello there" in md and "reply audio" in md
        assert list(tmp_path.glob("*-media/*.wav"))
    await hub.aclose()


async def test_a_slash_command_invokes_a_capability_and_shows_its_image(
    res: Resources, tmp_path: Path
) -> None:
    hub = SessionHub(res)
    app = MioApp(factory(hub), export_dir=tmp_path)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        await pilot.click("#prompt")
        await pilot.press(*"/generate_image a red boat", "enter")
        await wait_until(pilot, lambda: len(app.query(ImageView)) > 0, timeout=120)
        turn = app.query(AssistantTurn).first()
        assert turn.kind == "generate_image"
        await wait_until(pilot, lambda: turn.status == "✓", timeout=120)
        # an unknown command is an error line, not a crash
        await pilot.press(*"/nonsense", "enter")
        await wait_until(pilot, lambda: len(app.query(ErrorLine)) > 0)
        assert "unknown command /nonsense" in str(app.query(ErrorLine).first().render())
    await hub.aclose()


async def test_escape_interrupts_a_long_reply(res: Resources, tmp_path: Path) -> None:
    hub = SessionHub(res)
    long = ReplyOptions(min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False)
    app = MioApp(factory(hub, long), export_dir=tmp_path)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        await pilot.click("#prompt")
        await pilot.press(*"tell me everything", "enter")
        await wait_until(pilot, lambda: any(w.audio_s > 0 for w in app.query(AssistantTurn)))
        await pilot.press("escape")
        await wait_until(
            pilot, lambda: any("playback cleared" in str(n.render()) for n in app.query(NoteLine))
        )
        # the reply (still generating, or generated but still playing) keeps only what was heard
        backend = app.backend
        assert isinstance(backend, LocalBackend)
        await backend.session.idle(60)
        from mio_agent.conversation import SpeechPart

        reply = backend.session.engine.turns[-1]
        heard = sum(len(p.content) for p in reply.parts if isinstance(p, SpeechPart))
        assert reply.role == "assistant" and heard < 150
    await hub.aclose()


async def test_attach_and_resume_a_past_session(res: Resources, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    hub = SessionHub(res, log_root=root)
    app = MioApp(factory(hub), export_dir=tmp_path)  # type: ignore[arg-type]
    png = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(png, format="PNG")
    (tmp_path / "pic.png").write_bytes(png.getvalue())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        sid = app.backend.session_id  # type: ignore[union-attr]
        await pilot.click("#prompt")
        await pilot.press(*f"/attach {tmp_path / 'pic.png'}", "enter")
        await pilot.press(*"what is this", "enter")
        await wait_until(pilot, lambda: any(w.status == "✓" for w in app.query(AssistantTurn)))
        assert app.query(UserTurnView).first().images == 1
    await hub.aclose()
    assert any(line.startswith(sid) and "1 turn(s)" in line for line in list_sessions(root))
    past = past_events(root, sid)
    hub2 = SessionHub(res, log_root=root)
    app2 = MioApp(factory(hub2, session_id=sid), export_dir=tmp_path, past=past)  # type: ignore[arg-type]
    async with app2.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app2.backend is not None)
        await wait_until(pilot, lambda: len(app2.query(UserTurnView)) == 1)
        assert any("resumed session" in str(n.render()) for n in app2.query(NoteLine))
    await hub2.aclose()
