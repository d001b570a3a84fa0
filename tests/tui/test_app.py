"""The TUI on the embedded model, driven by Textual's Pilot: type, complete, invoke, interrupt, export, resume."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from PIL import Image
from textual.command import CommandList, CommandPalette
from textual.widgets import OptionList

from mio_agent.conversation import SpeechPart
from mio_agent.engine import ReplyOptions
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.tui.app import MioApp
from mio_agent.tui.backend import Backend, LocalBackend
from mio_agent.tui.images import ImageView
from mio_agent.tui.launch import open_local
from mio_agent.tui.panels import LatencyPanel, MicPanel
from mio_agent.tui.sessions import SessionsScreen, list_sessions, past_events
from mio_agent.tui.slash import Prompt
from mio_agent.tui.turns import AssistantTurn, ErrorLine, NoteLine, UserTurnView
from tests.tui.conftest import shown, wait_until


def _palette_settled_on(app: MioApp, name: str) -> bool:
    """The command palette has finished searching and highlights a command for `name` on top."""
    palette = app.screen
    if not isinstance(palette, CommandPalette):
        return False
    searching = any(
        w.node is palette and w.group == CommandPalette._GATHER_COMMANDS_GROUP and not w.is_finished
        for w in app.workers
    )
    results = palette.query_one(CommandList)
    return not searching and results.highlighted == 0 and name in str(results.get_option_at_index(0).prompt)


def local(
    shared: SharedResources,
    root: Path | None = None,
    reply: ReplyOptions | None = None,
    resume: str | None = None,
) -> Callable[[], Awaitable[Backend]]:
    async def make() -> Backend:
        return await open_local(shared, log_root=root, resume=resume, reply_options=reply)

    return make


async def test_a_typed_turn_streams_in_and_exports(shared: SharedResources, tmp_path: Path) -> None:
    app = MioApp(local(shared, tmp_path / "sessions"), export_dir=tmp_path / "out")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        assert "no audio" in " ".join(shown(app.query(NoteLine)))
        await pilot.press(*"hello there", "enter")
        await wait_until(pilot, lambda: any(w.status == "✓" for w in app.query(AssistantTurn)))
        assert app.query_one(UserTurnView).text == "hello there"
        reply = app.query_one(AssistantTurn)
        assert reply.audio_s > 0  # the playing indicator shows the reply's length
        assert app.query_one(MicPanel).state == "listening"
        assert app.query_one(LatencyPanel).turns  # latency by stage of the turn
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: any("exported to" in t for t in shown(app.query(NoteLine))))
        md = next((tmp_path / "out").glob("*.md")).read_text()
        assert "**You**: hello there" in md and "reply audio" in md
        assert list((tmp_path / "out").glob("*-media/*.wav"))


async def test_slash_commands_complete_invoke_and_show_the_image(
    shared: SharedResources, tmp_path: Path
) -> None:
    app = MioApp(local(shared), export_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        prompt = app.query_one(Prompt)
        await pilot.press(*"/generate_i")
        await wait_until(pilot, lambda: prompt._suggestion == "/generate_image")
        await pilot.press("tab")
        assert prompt.value == "/generate_image" and prompt.has_focus
        await pilot.press(*" a red boat", "enter")
        await wait_until(pilot, lambda: len(app.query(ImageView)) > 0, timeout=120)
        turn = app.query_one(AssistantTurn)
        assert turn.kind == "generate_image"
        await wait_until(pilot, lambda: turn.status == "✓", timeout=120)
        # an unknown command is an error line, not a crash; /help lists the aliases of loaded capabilities
        await pilot.press(*"/nonsense", "enter", *"/help", "enter")
        await wait_until(pilot, lambda: len(app.query(ErrorLine)) > 0)
        assert "unknown command /nonsense" in shown(app.query(ErrorLine))[0]
        assert "/edit = /image_editing" in shown(app.query(NoteLine))[-1]
        # settings are commands too
        await pilot.press(*"/theme nord", "enter")
        await wait_until(pilot, lambda: app.theme == "nord")


async def test_escape_interrupts_a_long_reply_but_closes_the_palette_first(
    shared: SharedResources, tmp_path: Path
) -> None:
    long = ReplyOptions(min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False)
    app = MioApp(local(shared, reply=long), export_dir=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        # the palette offers every capability: choosing one starts its command in the prompt
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: len(app.screen_stack) == 2)
        await pilot.press(*"image_edi")
        # the palette searches in a worker and fills its list in batches: Enter once it is done
        await wait_until(pilot, lambda: _palette_settled_on(app, "image_editing"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one(Prompt).value == "/image_editing ")
        app.query_one(Prompt).value = ""
        # Escape closes the palette; it does not interrupt
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: len(app.screen_stack) == 2)
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(app.screen_stack) == 1)
        assert not any("playback cleared" in t for t in shown(app.query(NoteLine)))
        await pilot.press(*"tell me everything", "enter")
        await wait_until(pilot, lambda: any(w.audio_s > 0 for w in app.query(AssistantTurn)))
        await pilot.press("escape")
        await wait_until(pilot, lambda: any("playback cleared" in t for t in shown(app.query(NoteLine))))
        # cut while generating, or generated and cut while playing
        await wait_until(pilot, lambda: app.query_one(AssistantTurn).status in ("✗ interrupted", "■ stopped"))
        assert not app.query_one(AssistantTurn).playing
        backend = app.backend
        assert isinstance(backend, LocalBackend)
        await backend.session.idle(60)
        # the model keeps only what was heard of its reply
        reply = backend.session.engine.turns[-1]
        heard = sum(len(p.content) for p in reply.parts if isinstance(p, SpeechPart))
        assert reply.role == "assistant" and heard < 150


async def test_attach_resume_and_export_a_past_session(shared: SharedResources, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    png = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(png, format="PNG")
    (tmp_path / "pic.png").write_bytes(png.getvalue())
    app = MioApp(local(shared, root), export_dir=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None)
        sid = app._sid()
        await pilot.press(*f"/attach {tmp_path / 'pic.png'}", "enter", *"what is this", "enter")
        await wait_until(pilot, lambda: any(w.status == "✓" for w in app.query(AssistantTurn)))
        assert app.query_one(UserTurnView).images == 1
        await pilot.press("ctrl+s")  # the attached picture is exported with the turn it joined
        await wait_until(pilot, lambda: any("exported to" in t for t in shown(app.query(NoteLine))))
        assert (tmp_path / f"{sid}-media" / "turn1-user-image1.png").read_bytes() == png.getvalue()
    # leaving the app closed its session: the log is complete
    [info] = list_sessions(root)
    assert info.id == sid and info.turns == 1
    app2 = MioApp(
        local(shared, root, resume=sid),
        export_dir=tmp_path / "exports",
        session_root=root,
        past=past_events(root, sid),
    )
    async with app2.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app2.backend is not None)
        assert len(app2.query(UserTurnView)) == 1 and app2._sid() == sid
        assert any("resumed session" in t for t in shown(app2.query(NoteLine)))
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app2.screen, SessionsScreen))
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("exported session" in t for t in shown(app2.query(NoteLine))))
        md = (tmp_path / "exports" / f"{sid}.md").read_text()
        assert "**You**: what is this" in md and "reply audio" in md
    # from a new session, R on the sessions screen asks `mio-agent tui` to reopen on the past one
    app3 = MioApp(local(shared, root), export_dir=tmp_path, session_root=root)
    async with app3.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app3.backend is not None)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app3.screen, SessionsScreen))
        screen = app3.screen
        assert isinstance(screen, SessionsScreen)
        assert [s.id for s in screen.sessions] == [app3._sid(), sid]  # newest first
        screen.query_one(OptionList).highlighted = 1
        await pilot.press("r")
    assert app3.return_value == sid
