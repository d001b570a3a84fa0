"""The conversation's lines: user and assistant turns, notes (routing, playback cleared) and errors."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["END_MARKS", "AssistantTurn", "ErrorLine", "NoteLine", "UserTurnView"]

END_MARKS = {"completed": "✓", "interrupted": "✗ interrupted", "error": "✗ error", "length": "… (cut)"}
"""How a turn's end reason shows after its text."""


class UserTurnView(Static):
    """What the user said or typed (speech shows its length, and its transcript when there is one)."""

    DEFAULT_CLASSES = "user"

    def __init__(self, text: str, speech_s: float = 0.0, images: int = 0, keyframes: int = 0) -> None:
        self.text = text
        self.speech_s = speech_s
        self.images = images
        self.keyframes = keyframes
        super().__init__(self._render_text())

    def _render_text(self) -> Text:
        line = Text("you  ", style="bold")
        if self.speech_s:
            line.append(f"🎤 {self.speech_s:.1f} s ", style="italic")
        if self.images:
            line.append(f"[{self.images} image{'s' if self.images > 1 else ''}] ", style="italic")
        if self.keyframes:
            line.append(
                f"[{self.keyframes} camera keyframe{'s' if self.keyframes > 1 else ''}] ", style="italic"
            )
        line.append(self.text)
        return line

    def set_transcript(self, text: str) -> None:
        self.text = f"“{text}”"
        self.update(self._render_text())


class AssistantTurn(Static):
    """One agent turn streaming in: text deltas, a playing indicator with the audio's length, progress,
    the end."""

    DEFAULT_CLASSES = "assistant"

    def __init__(self, turn: int, kind: str) -> None:
        self.turn = turn
        self.kind = kind
        self.text = ""
        self.audio_s = 0.0
        self.playing = False
        self.status = "…"
        self.progress = ""
        super().__init__(self._render_text())

    def _render_text(self) -> Text:
        who = "mio" if self.kind == "reply" else f"mio /{self.kind}"
        line = Text(f"{who}  ", style="bold")
        line.append(self.text)
        if self.audio_s:
            length = f"{self.audio_s:.1f} s" if self.audio_s >= 1 else f"{self.audio_s * 1000:.0f} ms"
            line.append(f"  {'▶' if self.playing else '♪'} {length}", style="italic")
        if self.progress:
            line.append(f"  [{self.progress}]", style="dim")
        line.append(f"  {self.status}", style="dim")
        return line

    def refresh_text(self) -> None:
        self.update(self._render_text())


class NoteLine(Static):
    """A line about what happened (playback cleared, routing, session notes)."""

    DEFAULT_CLASSES = "note"


class ErrorLine(Static):
    """An error event, with its code."""

    DEFAULT_CLASSES = "error"
