"""The Textual terminal assistant: a conversation view, an input with slash commands, live panels."""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Footer, Header, Input

from mio_agent.events import (
    AudioIn,
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
from mio_agent.exceptions import MioAgentError
from mio_agent.tui.backend import Backend
from mio_agent.tui.export import Conversation
from mio_agent.tui.images import Graphics, image_widget
from mio_agent.tui.panels import LatencyPanel, MicPanel, ModelPanel, PluginsPanel
from mio_agent.tui.sessions import SessionChoice, SessionsScreen, export_session
from mio_agent.tui.slash import (
    BUILTIN_COMMANDS,
    MODES,
    CapabilityCommands,
    Prompt,
    SlashSuggester,
    aliases_for,
    command_help,
    command_usage,
    literal,
    parse_slash,
)
from mio_agent.tui.turns import END_MARKS, AssistantTurn, ErrorLine, NoteLine, UserTurnView

__all__ = ["MioApp"]

RELEASE_SILENCE_S = 1.0
"""Silence sent when push-to-talk is released, longer than the voice detector's end-of-speech pause, so
the utterance ends at the key press instead of waiting for more audio."""


class MioApp(App[str | None]):
    """The terminal assistant; it talks to the runtime only through events and commands (a Backend).

    Its return value is the id of a past session to resume (chosen on the sessions screen), or None.
    """

    CSS_PATH = "app.tcss"
    TITLE = "mio-agent"
    COMMANDS = App.COMMANDS | {CapabilityCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        # not a priority binding: Escape must still close the command palette and other screens
        Binding("escape", "interrupt", "Interrupt"),
        # priority: they work while the prompt has the focus
        Binding("ctrl+t", "talk", "Talk", priority=True),
        Binding("f2", "cycle_mode", "Mode", priority=True),
        Binding("ctrl+s", "export", "Export", priority=True),
        Binding("ctrl+o", "sessions", "Sessions", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        make_backend: Callable[[], Awaitable[Backend]],
        *,
        export_dir: Path = Path("."),
        session_root: Path | None = None,
        past: Iterable[Event] = (),
        graphics: Graphics = None,
        mode: str = "hands-free",
    ) -> None:
        super().__init__()
        self._make_backend = make_backend
        self.backend: Backend | None = None
        self.capability_info: list[dict[str, Any]] = []
        self.export_dir = export_dir
        self.session_root = session_root
        self.graphics = graphics
        self.conversation = Conversation()
        self.mode = mode
        self.talking = False
        self.mic_on = True
        self._past = list(past)
        self._turns: dict[int, AssistantTurn] = {}
        self._users: dict[int, UserTurnView] = {}
        self._playing_until: dict[int, float] = {}
        self.events_seen = 0

    # -- layout and start ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            yield VerticalScroll(id="conversation")
            with VerticalScroll(id="side"):
                yield MicPanel(id="mic")
                yield LatencyPanel(id="latency")
                yield ModelPanel("model loading…", id="model")
                yield PluginsPanel("", id="plugins")
        yield Prompt(placeholder="Type a message, or / for commands (Tab completes)", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt", Prompt).focus()
        self.connect()

    @work(exclusive=True, group="backend")
    async def connect(self) -> None:
        """Load the model or reach the server (seconds), then read events for as long as the app runs."""
        try:
            backend = await self._make_backend()
        except Exception as exc:  # a missing model or an unreachable server is shown, not a traceback
            self._add(ErrorLine(f"could not start: {exc}"))
            return
        self.backend = backend
        self.capability_info = backend.capabilities
        names = [c["name"] for c in self.capability_info]
        self.sub_title = f"session {backend.session_id}"
        prompt = self.query_one("#prompt", Prompt)
        prompt.suggester = SlashSuggester(names, lambda: self.available_themes)
        self.query_one("#model", ModelPanel).set_description(backend.description)
        self.query_one("#plugins", PluginsPanel).set_plugins(backend.plugins, len(names))
        mic = self.query_one("#mic", MicPanel)
        mic.microphone = backend.microphone
        mic.mode = self.mode
        mic.state = backend.state
        mic.show()
        for ev in self._past:
            self.show_event(ev, live=False)
        if self._past:
            self._note(f"resumed session {backend.session_id}: {len(self.conversation.entries)} past entries")
        if backend.notice:
            self._note(backend.notice)
        if backend.microphone and self.mode == "push-to-talk":
            self._send(Mute(session=backend.session_id, turn=0, muted=True))
        try:
            async for ev in backend.events():
                self.show_event(ev)
        except Exception as exc:  # a lost connection to a server: say so, keep the conversation on screen
            self._add(ErrorLine(f"lost the session: {exc}"))
        else:
            self._note("the session ended")
        mic.state = "closed"
        mic.show()

    async def on_unmount(self) -> None:
        if self.backend is not None:
            await self.backend.close()

    # -- events from the runtime --------------------------------------------------------------
    def _add(self, widget: Widget) -> None:
        try:
            conv = self.query_one("#conversation", VerticalScroll)
        except NoMatches:
            return  # the app is closing: an event that arrives now has no view left to go to
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
        """Show one event of the session (live, or of a past session when `live` is False)."""
        self.events_seen += 1
        self.conversation.add(ev)
        if isinstance(ev, UserTurn):
            view = UserTurnView(ev.text, ev.speech_s, ev.images, len(ev.keyframes))
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
            self._audio(ev, live)
        elif isinstance(ev, ImageOut) and ev.png is not None:
            width = min(48, max(16, self.size.width // 3))
            self._add(image_widget(ev.png, width=width, graphics=self.graphics))
        elif isinstance(ev, CapabilityProgress):
            w = self._assistant(ev.turn, ev.name)
            total = f"/{ev.total}" if ev.total else ""
            w.progress = f"{ev.step}{total} {ev.message}".strip()
            w.refresh_text()
        elif isinstance(ev, TurnEnded):
            w = self._assistant(ev.turn)
            # playback.clear jumps the bus's queue: a "completed" queued before it may come after it
            if not (w.status == "■ stopped" and ev.reason == "completed"):
                w.status = END_MARKS.get(ev.reason, ev.reason)
                w.refresh_text()
        elif isinstance(ev, PlaybackClear):
            self._stop_playing(ev.turn)
            cleared = self._turns.get(ev.turn)
            if cleared is not None and cleared.status in ("…", "✓"):
                # a reply generated to its end may still be cut while it plays
                cleared.status = "■ stopped"
                cleared.refresh_text()
            self._note(f"■ playback cleared (turn {ev.turn})")
        elif isinstance(ev, ErrorEvent):
            self._add(ErrorLine(f"error {ev.code}: {ev.message}"))
        elif isinstance(ev, SessionState | InputLevel):
            mic = self.query_one("#mic", MicPanel)
            if isinstance(ev, SessionState):
                mic.state = ev.state
            else:
                mic.dbfs, mic.speech = ev.dbfs, ev.speech
            mic.show()
        elif isinstance(ev, Metrics):
            self.query_one("#latency", LatencyPanel).add(ev.turn, ev.stage, ev.seconds)

    def _audio(self, ev: AudioOut, live: bool) -> None:
        w = self._assistant(ev.turn)
        w.audio_s += ev.duration_s
        if live:
            # the reply plays about as fast as it arrives; the indicator goes off when its audio would end
            now = time.monotonic()
            until = max(self._playing_until.get(ev.turn, now), now) + ev.duration_s
            self._playing_until[ev.turn] = until
            w.playing = True
            self.set_timer(until - now + 0.05, lambda: self._maybe_stop_playing(ev.turn))
        w.refresh_text()

    def _maybe_stop_playing(self, turn: int) -> None:
        if time.monotonic() >= self._playing_until.get(turn, 0.0):
            self._stop_playing(turn)

    def _stop_playing(self, turn: int) -> None:
        self._playing_until.pop(turn, None)
        w = self._turns.get(turn)
        if w is not None and w.playing:
            w.playing = False
            w.refresh_text()

    # -- input --------------------------------------------------------------------------------
    def _send(self, ev: Event) -> bool:
        if self.backend is None:
            self._add(ErrorLine("not connected yet: wait for the model to load"))
            return False
        try:
            self.backend.submit(ev)
        except MioAgentError as exc:  # e.g. the session has ended
            self._add(ErrorLine(str(exc)))
            return False
        return True

    def _sid(self) -> str:
        return self.backend.session_id if self.backend is not None else ""

    @on(Input.Submitted, "#prompt")
    def submitted(self, message: Input.Submitted) -> None:
        text = message.value.strip()
        message.input.value = ""
        if not text:
            return
        names = [c["name"] for c in self.capability_info]
        cmd = parse_slash(text, names)
        if cmd is None:
            self._send(TextIn(session=self._sid(), turn=0, text=text.removeprefix("/")))
        elif cmd.capability:
            self._send(InvokeCapability(session=self._sid(), turn=0, name=cmd.name, text=cmd.arg))
        elif cmd.name == "attach":
            self._attach_file(cmd.arg)
        elif cmd.name == "interrupt":
            self.action_interrupt()
        elif cmd.name == "talk":
            self.action_talk()
        elif cmd.name == "mic" and cmd.arg in ("on", "off"):
            self._set_mic(cmd.arg == "on")
        elif cmd.name == "mode" and cmd.arg in MODES:
            if cmd.arg != self.mode:
                self.action_cycle_mode()
        elif cmd.name == "export":
            self.action_export(cmd.arg or None)
        elif cmd.name == "sessions":
            self.action_sessions()
        elif cmd.name == "theme" and cmd.arg in self.available_themes:
            self.theme = cmd.arg
        elif cmd.name == "help":
            self._help()
        elif cmd.name == "quit":
            self.exit()
        elif cmd.name in BUILTIN_COMMANDS:
            self._add(ErrorLine(literal(f"usage: {command_help(cmd.name)}")))
        else:
            self._add(ErrorLine(f"unknown command /{cmd.name}; type /help"))

    def _help(self) -> None:
        names = [c["name"] for c in self.capability_info]
        width = max(len(command_usage(n)) for n in BUILTIN_COMMANDS)
        lines = ["commands:"]
        lines += [f"  {command_usage(n):<{width}}  {BUILTIN_COMMANDS[n][1]}" for n in BUILTIN_COMMANDS]
        lines.append("capabilities (type /name and what it should work on):")
        lines += [f"  /{c['name']:<{width - 1}}  {c.get('description', '')}" for c in self.capability_info]
        aliases = ", ".join(f"/{a} = /{n}" for a, n in aliases_for(names).items())
        if aliases:
            lines.append(f"aliases: {aliases}")
        self._note(literal("\n".join(lines)))

    def _attach_file(self, path: str) -> None:
        file = Path(path).expanduser()
        if not path or not file.is_file():
            self._add(ErrorLine(f"/attach: no such file {path!r}"))
            return
        if self._send(ImageIn(session=self._sid(), turn=0, data=file.read_bytes(), name=file.name)):
            self._note(f"attached {file.name}: it joins your next turn")

    # -- actions ------------------------------------------------------------------------------
    def prefill(self, text: str) -> Callable[[], None]:
        """A callback putting `text` in the prompt (for the command palette)."""

        def fill() -> None:
            prompt = self.query_one("#prompt", Prompt)
            prompt.value = text
            prompt.cursor_position = len(text)
            prompt.focus()

        return fill

    def action_interrupt(self) -> None:
        self._send(Interrupt(session=self._sid(), turn=0, reason="key"))

    def _has_microphone(self) -> bool:
        if self.backend is None or not self.backend.microphone:
            self._note("no microphone here: type your turns")
            return False
        return True

    def _set_mic(self, on: bool) -> None:
        if self._has_microphone() and self._send(Mute(session=self._sid(), turn=0, muted=not on)):
            self.mic_on = on

    def action_talk(self) -> None:
        """Push-to-talk: start talking (interrupting the agent), again to send; hands-free: mic on/off."""
        if not self._has_microphone():
            return
        if self.mode == "hands-free":
            self._set_mic(not self.mic_on)
            return
        mic = self.query_one("#mic", MicPanel)
        if not self.talking:
            if mic.state in ("thinking", "speaking"):
                self.action_interrupt()
            self.talking = self._send(Mute(session=self._sid(), turn=0, muted=False))
        else:
            silence = bytes(2 * int(16000 * RELEASE_SILENCE_S))
            self._send(AudioIn(session=self._sid(), turn=0, pcm=silence, sample_rate=16000))
            self._send(Mute(session=self._sid(), turn=0, muted=True))
            self.talking = False
        mic.talking = self.talking
        mic.show()

    def action_cycle_mode(self) -> None:
        if not self._has_microphone():
            return
        self.mode = "push-to-talk" if self.mode == "hands-free" else "hands-free"
        self.talking = False
        self._set_mic(self.mode == "hands-free")
        mic = self.query_one("#mic", MicPanel)
        mic.mode, mic.talking = self.mode, False
        mic.show()
        self._note(
            f"mode: {self.mode}" + (" (Ctrl+T to talk, again to send)" if self.mode == "push-to-talk" else "")
        )

    def action_export(self, target: str | None = None) -> None:
        folder = Path(target).expanduser() if target else self.export_dir
        # a copy: the conversation goes on growing while the files are written
        self._export(copy.deepcopy(self.conversation), folder, self._sid() or "session")

    @work(thread=True, group="export")
    def _export(self, conversation: Conversation, folder: Path, session: str) -> None:
        try:
            path = conversation.export(folder, session)
        except OSError as exc:
            self.call_from_thread(self._add, ErrorLine(f"export failed: {exc}"))
        else:
            self.call_from_thread(self._note, f"exported to {path}")

    def action_sessions(self) -> None:
        if self.session_root is None:
            self._note("no session folder: sessions are not logged here")
            return
        self.push_screen(SessionsScreen(self.session_root), self._session_chosen)

    def _session_chosen(self, choice: SessionChoice | None) -> None:
        if choice is None:
            return
        if choice.action == "export":
            self._export_past(choice.session)
        elif choice.session == self._sid():
            self._note(f"session {choice.session} is the one open")
        else:
            # the runner (`mio-agent tui`) opens the app again on that session, with the same model
            self.exit(choice.session)

    @work(thread=True, group="export")
    def _export_past(self, session: str) -> None:
        assert self.session_root is not None
        try:
            path = export_session(self.session_root, session, self.export_dir)
        except (OSError, MioAgentError) as exc:
            self.call_from_thread(self._add, ErrorLine(f"export of {session} failed: {exc}"))
        else:
            self.call_from_thread(self._note, f"exported session {session} to {path}")
