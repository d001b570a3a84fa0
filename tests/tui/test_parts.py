"""The TUI's pieces without an app: slash commands, completion, the level meter, images, session listing."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mio_agent.tui
from mio_agent.cli.main import main
from mio_agent.events import Event, TextDelta, TurnEnded, TurnStarted, UserTurn, event_to_dict
from mio_agent.exceptions import StoreError
from mio_agent.tui import app, backend, cli, export, images, launch, panels, sessions, slash, turns
from mio_agent.tui.images import ImageView, half_blocks, image_widget
from mio_agent.tui.panels import LatencyPanel, level_bar
from mio_agent.tui.sessions import export_session, list_sessions, past_events
from mio_agent.tui.slash import SlashCommand, SlashSuggester, aliases_for, parse_slash

CAPS = ["image_editing", "generate_image", "text_generation"]


def test_slash_commands_resolve_aliases_of_loaded_capabilities_only() -> None:
    assert aliases_for(CAPS) == {"edit": "image_editing", "draw": "generate_image"}
    assert parse_slash("/edit make it blue", CAPS) == SlashCommand("image_editing", "make it blue", True)
    assert parse_slash("/story once", CAPS) == SlashCommand("story", "once", False)
    assert parse_slash("/export  out ", CAPS) == SlashCommand("export", "out", False)
    assert parse_slash("hello", CAPS) is None
    assert parse_slash("//not a command", CAPS) is None


async def test_completion_of_names_settings_and_paths(tmp_path: Path) -> None:
    s = SlashSuggester(CAPS, lambda: ["nord", "textual-dark"])
    assert await s.get_suggestion("/ima") == "/image_editing"
    assert await s.get_suggestion("/ed") == "/edit"
    assert await s.get_suggestion("/mode p") == "/mode push-to-talk"
    assert await s.get_suggestion("/theme n") == "/theme nord"
    assert await s.get_suggestion("hello") is None
    (tmp_path / "photo.png").write_bytes(b"")
    assert await s.get_suggestion(f"/attach {tmp_path}/ph") == f"/attach {tmp_path}/photo.png"


def test_level_bar_and_latency_keep_the_last_turns() -> None:
    assert level_bar(-120) == "·" * 10 and level_bar(0) == "█" * 10 and level_bar(-30).count("█") == 5
    latency = LatencyPanel()
    for turn in range(1, 7):
        latency.add(turn, "first_token", 0.1 * turn)
    assert sorted(latency.turns) == [3, 4, 5, 6]


def test_half_blocks_draw_two_pixel_rows_per_line() -> None:
    png = io.BytesIO()
    Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(png, format="PNG")
    text = half_blocks(png.getvalue(), width=10)
    lines = text.plain.split("\n")
    assert len(lines) == 10 and all(len(line) == 10 for line in lines)


def test_image_widget_uses_the_terminal_graphics_protocol_when_there_is_one() -> None:
    graphics = pytest.importorskip(
        "textual_image.widget", reason="the optional textual-image is not installed"
    )
    GraphicsImage = graphics.Image

    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    assert isinstance(image_widget(png.getvalue(), width=12, graphics="tgp"), GraphicsImage)
    fallback = image_widget(png.getvalue(), width=12, graphics=None)
    assert isinstance(fallback, ImageView) and "▀" in str(fallback.content)


def _log(root: Path, sid: str, created: float, events: Sequence[Event]) -> None:
    folder = root / sid
    folder.mkdir(parents=True)
    (folder / "session.json").write_text(json.dumps({"id": sid, "mode": "voice", "created": created}))
    (folder / "events.jsonl").write_text("".join(json.dumps(event_to_dict(e)) + "\n" for e in events))


def test_sessions_list_newest_first_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "sessions"
    turn = [
        UserTurn(session="a", turn=1, text="hi"),
        TurnStarted(session="a", turn=1, mode="voice"),
        TextDelta(session="a", turn=1, text="hello"),
        TurnEnded(session="a", turn=1, reason="completed"),
    ]
    _log(root, "old", 1000.0, turn)
    _log(root, "new", 2000.0, turn + turn)
    assert [(s.id, s.turns) for s in list_sessions(root)] == [("new", 2), ("old", 1)]
    assert len(past_events(root, "old")) == 4
    with pytest.raises(StoreError, match="--sessions"):
        past_events(root, "missing")
    md = export_session(root, "old", tmp_path / "md").read_text()
    assert "**You**: hi" in md and "**MIO**: hello" in md
    # the same through the command line
    assert main(["tui", "--session-dir", str(root), "--sessions"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("new ")
    assert (
        main(["tui", "--session-dir", str(root), "--export", "new", "--export-dir", str(tmp_path / "cli")])
        == 0
    )
    assert (tmp_path / "cli" / "new.md").is_file()


def test_every_module_has_a_complete_all() -> None:
    assert mio_agent.tui.__all__ == []
    for module in (app, backend, cli, export, images, launch, panels, sessions, slash, turns):
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
