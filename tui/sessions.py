"""Past sessions: listing the session folder, reading a session back, exporting it, and the sessions screen."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from mio_agent.events import Event
from mio_agent.exceptions import StoreError
from mio_agent.session_log import EVENTS_FILE, SESSION_FILE
from mio_agent.tui.export import Conversation

__all__ = [
    "SHOWN_TYPES",
    "PastSession",
    "SessionChoice",
    "SessionsScreen",
    "export_session",
    "list_sessions",
    "past_events",
]

SHOWN_TYPES = frozenset(
    {
        "image.in",
        "user.turn",
        "user.transcript",
        "turn.started",
        "text.delta",
        "image.out",
        "audio.out",
        "capability.progress",
        "route.decided",
        "turn.ended",
        "error",
    }
)
"""The event types a past session is shown and exported from."""


@dataclass(frozen=True, slots=True)
class PastSession:
    """One past session of the session folder."""

    id: str
    mode: str
    turns: int
    created: float | None

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created)) if self.created else "?"
        return f"{self.id}  {when}  {self.mode:5}  {self.turns} turn(s)"


def list_sessions(root: Path) -> list[PastSession]:
    """The sessions logged under `root`, newest first."""
    if not root.is_dir():
        return []
    found = []
    for folder in (p for p in root.iterdir() if (p / EVENTS_FILE).is_file()):
        meta_file = folder / SESSION_FILE
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        except (OSError, ValueError):
            meta = {}  # a session cut off while its metadata was written still lists
        with open(folder / EVENTS_FILE, encoding="utf-8", errors="replace") as f:
            # a cheap count: the whole log is only parsed for the session that is opened
            turns = sum(1 for line in f if '"turn.ended"' in line)
        created = meta.get("created")
        found.append(
            PastSession(
                folder.name,
                str(meta.get("mode") or "?"),
                turns,
                float(created) if isinstance(created, int | float) else None,
            )
        )
    return sorted(found, key=lambda s: (s.created or (root / s.id / EVENTS_FILE).stat().st_mtime, s.id))[::-1]


def past_events(root: Path, session: str) -> list[Event]:
    """The displayable events of a past session, with their images and audio."""
    from mio_agent.session_log import read_events

    folder = root / session
    if not (folder / EVENTS_FILE).is_file():
        raise StoreError(f"no session {session!r} in {root}; `mio-agent tui --sessions` lists them")
    return [ev for ev in read_events(folder) if isinstance(ev, Event) and ev.type in SHOWN_TYPES]


def export_session(root: Path, session: str, folder: Path) -> Path:
    """Write a past session as Markdown (media beside it) into `folder`; the Markdown's path."""
    conversation = Conversation()
    for ev in past_events(root, session):
        conversation.add(ev)
    return conversation.export(folder, session)


@dataclass(frozen=True, slots=True)
class SessionChoice:
    """What was chosen on the sessions screen: `action` "export" or "resume", and the session."""

    action: str
    session: str


class SessionsScreen(ModalScreen[SessionChoice | None]):
    """The past sessions, newest first: Enter exports the highlighted one, R resumes it, Escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Back"),
        Binding("r", "resume", "Resume"),
    ]
    DEFAULT_CSS = """
    SessionsScreen { align: center middle; }
    SessionsScreen > OptionList { width: 90%; max-width: 80; height: auto; max-height: 80%; }
    SessionsScreen > Label { width: 90%; max-width: 80; }
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.sessions = list_sessions(root)

    def compose(self) -> ComposeResult:
        yield Label(f"Sessions in {self.root}: Enter exports, R resumes, Escape goes back")
        options = [Option(s.line(), id=s.id) for s in self.sessions] or [
            Option("no sessions yet", id="", disabled=True)
        ]
        yield OptionList(*options)

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        if message.option.id:
            self.dismiss(SessionChoice("export", message.option.id))

    def action_resume(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            chosen = options.get_option_at_index(options.highlighted).id
            if chosen:
                self.dismiss(SessionChoice("resume", chosen))
