"""Slash commands: parsing, completion (capabilities, aliases, settings, file paths) and the command palette."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from textual.binding import Binding, BindingType
from textual.command import Hit, Hits, Provider
from textual.suggester import Suggester
from textual.widgets import Input

__all__ = [
    "ALIASES",
    "BUILTIN_COMMANDS",
    "MODES",
    "CommandHost",
    "Prompt",
    "SlashCommand",
    "SlashSuggester",
    "aliases_for",
    "command_help",
    "command_usage",
    "literal",
    "parse_slash",
]

ALIASES = {
    "edit": "image_editing",
    "story": "visual_storytelling",
    "think": "chain_of_visual_thought",
    "draw": "generate_image",
    "describe": "describe_image",
    "say": "speak",
}
"""Short slash commands for the capabilities people use most (offered only when the capability is loaded)."""

BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "attach": ("PATH", "an image file that joins your next turn"),
    "interrupt": ("", "stop the reply and its sound now (Escape)"),
    "talk": ("", "push-to-talk: start talking, again to send (Ctrl+T)"),
    "mic": ("on|off", "the microphone in hands-free mode"),
    "mode": ("hands-free|push-to-talk", "how you talk (F2)"),
    "export": ("[DIR]", "this conversation as Markdown with its images and audio (Ctrl+S)"),
    "sessions": ("", "past sessions: export one"),
    "theme": ("NAME", "the colour theme"),
    "help": ("", "list the commands"),
    "quit": ("", "leave (Ctrl+Q)"),
}
"""The TUI's own commands: (arguments, what it does)."""


def command_usage(name: str) -> str:
    """`/name ARGS` of a built-in command (plain text: show it escaped where markup is on)."""
    args = BUILTIN_COMMANDS[name][0]
    return f"/{name} {args}" if args else f"/{name}"


def command_help(name: str) -> str:
    """One line: usage, then what the command does."""
    return f"{command_usage(name)}: {BUILTIN_COMMANDS[name][1]}"


def literal(text: str) -> str:
    """`text` for a place that reads Textual markup, shown as written (`[DIR]` is not a tag)."""
    return text.replace("[", "\\[")


MODES = ("hands-free", "push-to-talk")


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A typed `/name rest`: `name` with aliases resolved; `capability` True when it names one."""

    name: str
    arg: str
    capability: bool


def aliases_for(capabilities: Iterable[str]) -> dict[str, str]:
    """The aliases whose capability is loaded."""
    names = set(capabilities)
    return {alias: target for alias, target in ALIASES.items() if target in names}


def parse_slash(text: str, capabilities: Sequence[str]) -> SlashCommand | None:
    """`/name rest` as a command (None for text that is not a command: it is a turn)."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, rest = text[1:].partition(" ")
    name = aliases_for(capabilities).get(name, name)
    return SlashCommand(name, rest.strip(), name in capabilities)


def _complete_path(prefix: str) -> str | None:
    folder, _, start = prefix.rpartition(os.sep)
    base = Path(folder or ".").expanduser()
    try:
        names = sorted(p.name + (os.sep if p.is_dir() else "") for p in base.iterdir())
    except OSError:
        return None
    for name in names:
        # hidden files only when asked for
        if name.startswith(start) and (start.startswith(".") or not name.startswith(".")):
            return f"{folder}{os.sep if folder else ''}{name}"
    return None


class SlashSuggester(Suggester):
    """Completes command names (capabilities, aliases, the TUI's own), then their argument: a mode, a theme,
    on/off, or a file path."""

    def __init__(self, capabilities: Sequence[str], themes: Callable[[], Iterable[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names = sorted({*capabilities, *aliases_for(capabilities), *BUILTIN_COMMANDS})
        self.themes = themes

    async def get_suggestion(self, value: str) -> str | None:
        if not value.startswith("/"):
            return None
        name, space, arg = value[1:].partition(" ")
        if not space:
            return next((f"/{n}" for n in self.names if n.startswith(name) and n != name), None)
        choices: Iterable[str] = {"mode": MODES, "mic": ("on", "off"), "theme": sorted(self.themes())}.get(
            name, ()
        )
        if name in ("attach", "export"):
            path = _complete_path(arg)
            return f"/{name} {path}" if path else None
        return next((f"/{name} {c}" for c in choices if c.startswith(arg) and c != arg), None)


class Prompt(Input):
    """The input line: Tab accepts the completion shown (and moves on when there is none)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "complete", "Complete", show=False)]

    def action_complete(self) -> None:
        if self._suggestion and self.cursor_at_end and len(self._suggestion) > len(self.value):
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()


class CommandHost(Protocol):
    """What the palette needs from the app."""

    capability_info: list[dict[str, Any]]

    def prefill(self, text: str) -> Callable[[], None]: ...

    def action_interrupt(self) -> None: ...

    def action_talk(self) -> None: ...

    def action_cycle_mode(self) -> None: ...

    def action_export(self) -> None: ...

    def action_sessions(self) -> None: ...


class CapabilityCommands(Provider):
    """The command palette: every capability, interrupting, talking, the input mode, export, past sessions."""

    async def search(self, query: str) -> Hits:
        host: CommandHost = self.app  # type: ignore[assignment]
        matcher = self.matcher(query)
        entries: list[tuple[str, Callable[[], Any], str]] = [
            (f"/{c['name']}", host.prefill(f"/{c['name']} "), str(c.get("description", "")))
            for c in host.capability_info
        ]
        entries += [
            ("Interrupt the agent", host.action_interrupt, literal(command_help("interrupt"))),
            ("Talk (push-to-talk)", host.action_talk, literal(command_help("talk"))),
            ("Switch input mode", host.action_cycle_mode, "hands-free ⇄ push-to-talk"),
            ("Export the conversation", host.action_export, literal(command_help("export"))),
            ("Past sessions", host.action_sessions, literal(command_help("sessions"))),
            ("Attach an image", host.prefill("/attach "), literal(command_help("attach"))),
        ]
        for name, callback, help_text in entries:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
