"""The Textual terminal assistant: a conversation view, an input with slash commands, live panels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Header, Input, Static

from mio_agent.events import (
    AudioOut,
    CapabilityProgress,
    ErrorEvent,
    Event,
    ImageIn,
    ImageOut,
    InputLevel,
    Interrupt,
    InvokeCapability,
    Metrics,
    Mute,
    PlaybackClear,
    RouteDecided,
    SessionState,
    TextDelta,
    TextIn,
    Transcript,
    TurnEnded,
    TurnStarted,
    UserTurn,
)
from mio_agent.tui.backend import Backend
from mio_agent.tui.export import Conversation
from mio_agent.tui.widgets import AssistantTurn, ErrorLine, ImageView, NoteLine, UserTurnView, half_blocks

__all__ = ["ALIASES", "MioApp"]

ALIASES = {"edit": "image_editing", "story": "visual_storytelling", "think": "chain_of_visual_thought"}
"""Short slash commands for the capabilities people use most."""
BUILTIN_COMMANDS = ("/attach", "/interrupt", "/mute", "/unmute", "/export", "/help")


class CapabilityCommands(Provider):
    """The command palette: every capability, interrupting, muting and exporting."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, MioApp)
        matcher = self.matcher(query)
        entries: list[tuple[str, Callable[[], Any], str]] = [
            (f"Invoke /{c['name']}", app.action_prefill(c["name"]), c["description"])
            for c in app.capabilities
        ]
        entries += [
            ("Interrupt the agent", app.action_interrupt, "stop the reply and its sound now"),
            ("Toggle listening", app.action_toggle_mute, "mute or unmute the microphone"),
            ("Export the conversation", app.action_export, "Markdown with images and audio beside it"),
        ]
        for name, callback, help_text in entries:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class MioApp(App[None]):
    """The terminal assistant; it talks to the runtime only through events and commands."""

    CSS_PATH = "app.tcss"
    TITLE = "mio-agent"
    COMMANDS = App.COMMANDS | {CapabilityCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: they work while the prompt has the focus (ctrl+e would be its end-of-line)
        Binding("escape", "interrupt", "Interrupt", priority=True),
        Binding("ctrl+t", "toggle_mute", "Mic on/off", priority=True),
        Binding("ctrl+s", "export", "Export", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        make_backend: Callable[[], Awaitable[Backend]],
        *,
        export_dir: Path = Path("."),
        past: Iterable[Event] = (),
    ) -> None:
        super().__init__()
        self._make_backend = make_backend
        self.backend: Backend | None = None
        self.capabilities: list[dict[str, Any]] = []
        self.export_dir = export_dir
        self.conversation = Conversation()
        self._past = list(past)
        self._turns: dict[int, AssistantTurn] = {}
        self._users: dict[int, UserTurnView] = {}
        self._muted = False
        self._latency: dict[str, float] = {}
        self.events_seen = 0

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            yield VerticalScroll(id="conversation")
            with Vertical(id="side"):
                yield Static("state: starting", id="state")
                yield Static("mic: –", id="level")
                yield Static("latency: –", id="latency")
                yield Static("", id="model")
                yield Static("", id="plugins")
        yield Input(placeholder="Type a message, or / for commands (Tab completes)", id="prompt")
        yield Footer()

    async def on_mount(self) -> None:
        self.backend = await self._make_backend()
        self.capabilities = self.backend.capabilities
        self.sub_title = f"session {self.backend.session_id}"
        names = (
            [f"/{c['name']}" for c in self.capabilities] + [f"/{a}" for a in ALIASES] + list(BUILTIN_COMMANDS)
        )
        prompt = self.query_one("#prompt", Input)
        prompt.suggester = SuggestFromList(sorted(names), case_sensitive=False)
        prompt.focus()
        self.query_one("#model", Static).update(f"model: {self.backend.description}")
        plugins = "\n".join(f" /{c['name']}" for c in self.capabilities)
        self.query_one("#plugins", Static).update(f"capabilities:\n{plugins}")
        for ev in self._past:
            self.show_event(ev, live=False)
        if self._past:
            self._note(
                f"resumed session {self.backend.session_id}: {len(self.conversation.entries)} past turns"
            )
        self.pump()

    @work(exclusive=True, group="events")
    async def pump(self) -> None:
        """Read the runtime's events for as long as the app runs (a worker: the UI never waits on it)."""
        assert self.backend is not None
        async for ev in self.backend.events():
            self.show_event(ev)

    async def on_unmount(self) -> None:
        if self.backend is not None:
            await self.backend.close()

    # -- events from the runtime --------------------------------------------------------------
    def _conv(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    def _add(self, widget: Static) -> None:
        conv = self._conv()
        conv.mount(widget)
        conv.scroll_end(animate=False)

    def _note(self, text: str) -> None:
        self._add(NoteLine(text))

    def _assistant(self, turn: int, kind: str = "reply") -> AssistantTurn:
        widget = self._turns.get(turn)
        if widget is None:
            widget = self._turns[turn] = AssistantTurn(turn, kind)
            self._add(widget)
        return widget

    def show_event(self, ev: Event, *, live: bool = True) -> None:
        self.events_seen += 1
        self.conversation.add(ev)
        if isinstance(ev, UserTurn):
            view = UserTurnView(ev.text, ev.speech_s, ev.images)
            self._users[ev.turn] = view
            self._add(view)
        elif isinstance(ev, Transcript) and ev.turn in self._users:
            self._users[ev.turn].set_transcript(ev.text)
        elif isinstance(ev, RouteDecided) and ev.capability:
            self._note(f"→ /{ev.capability}: {ev.reason}")
        elif isinstance(ev, TurnStarted):
            self._assistant(ev.turn, ev.kind)
        elif isinstance(ev, TextDelta):
            w = self._assistant(ev.turn)
            w.text += ev.text
            w.refresh_text()
        elif isinstance(ev, AudioOut):
            w = self._assistant(ev.turn)
            w.audio_s += ev.duration_s
            w.status = "playing" if live else ""
            w.refresh_text()
        elif isinstance(ev, ImageOut) and ev.png is not None:
            self._add(ImageView(half_blocks(ev.png, width=min(48, max(16, self.size.width // 3)))))
        elif isinstance(ev, CapabilityProgress):
            w = self._assistant(ev.turn, ev.name)
            total = f"/{ev.total}" if ev.total else ""
            w.progress = f"{ev.step}{total} {ev.message}".strip()
            w.refresh_text()
        elif isinstance(ev, TurnEnded):
            w = self._assistant(ev.turn)
            w.status = {
                "completed": "✓",
                "interrupted": "✗ interrupted",
                "error": "✗ error",
                "length": "… (cut)",
            }[ev.reason]
            w.refresh_text()
        elif isinstance(ev, PlaybackClear):
            self._note(f"■ playback cleared (turn {ev.turn})")
        elif isinstance(ev, ErrorEvent):
            self._add(ErrorLine(f"error {ev.code}: {ev.message}"))
        elif isinstance(ev, SessionState):
            self.query_one("#state", Static).update(f"state: {ev.state}")
        elif isinstance(ev, InputLevel):
            bar = "█" * max(0, min(10, int((ev.dbfs + 60) / 6)))
            self.query_one("#level", Static).update(
                f"mic: {bar:<10} {ev.dbfs:4.0f} dB{' ◉' if ev.speech else ''}"
            )
        elif isinstance(ev, Metrics):
            self._latency[ev.stage] = ev.seconds
            shown = [
                f"{k} {v * 1000:.0f} ms"
                for k, v in self._latency.items()
                if k in ("vad", "first_token", "first_audio", "barge_in")
            ]
            self.query_one("#latency", Static).update("latency:\n " + "\n ".join(shown))

    # -- input --------------------------------------------------------------------------------
    def _send(self, ev: Event) -> None:
        if self.backend is not None:
            self.backend.submit(ev)

    def on_input_submitted(self, message: Input.Submitted) -> None:
        text = message.value.strip()
        message.input.value = ""
        if not text or self.backend is None:
            return
        sid = self.backend.session_id
        if not text.startswith("/"):
            self._send(TextIn(session=sid, turn=0, text=text))
            return
        name, _, rest = text[1:].partition(" ")
        name = ALIASES.get(name, name)
        rest = rest.strip()
        if name == "attach":
            self._attach_file(rest)
        elif name == "interrupt":
            self.action_interrupt()
        elif name in ("mute", "unmute"):
            self._muted = name == "mute"
            self._send(Mute(session=sid, turn=0, muted=self._muted))
        elif name == "export":
            self.action_export(rest or None)
        elif name == "help":
            names = ", ".join(f"/{c['name']}" for c in self.capabilities)
            self._note(f"commands: {' '.join(BUILTIN_COMMANDS)}; capabilities: {names}; aliases: "
                       + ", ".join(f"/{a} = /{n}" for a, n in ALIASES.items()))  # fmt: skip
        elif any(c["name"] == name for c in self.capabilities):
            self._send(InvokeCapability(session=sid, turn=0, name=name, text=rest))
        else:
            self._add(ErrorLine(f"unknown command /{name}; type /help"))

    def _attach_file(self, path: str) -> None:
        file = Path(path).expanduser()
        if not file.is_file():
            self._add(ErrorLine(f"/attach: no such file {path!r}"))
            return
        assert self.backend is not None
        self._send(ImageIn(session=self.backend.session_id, turn=0, data=file.read_bytes(), name=file.name))
        self._note(f"attached {file.name}: it joins your next turn")

    # -- actions ------------------------------------------------------------------------------
    def action_interrupt(self) -> None:
        if self.backend is not None:
            self._send(Interrupt(session=self.backend.session_id, turn=0, reason="key"))

    def action_toggle_mute(self) -> None:
        if self.backend is not None:
            self._muted = not self._muted
            self._send(Mute(session=self.backend.session_id, turn=0, muted=self._muted))

    def action_prefill(self, name: str) -> Callable[[], None]:
        def fill() -> None:
            prompt = self.query_one("#prompt", Input)
            prompt.value = f"/{name} "
            prompt.cursor_position = len(prompt.value)
            prompt.focus()

        return fill

    def action_export(self, target: str | None = None) -> None:
        folder = Path(target).expanduser() if target else self.export_dir
        sid = self.backend.session_id if self.backend is not None else "session"
        path = self.conversation.export(folder, sid)
        self._note(f"exported to {path}")
