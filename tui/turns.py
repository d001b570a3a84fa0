"""The conversation's pieces: user and assistant turns, images in half blocks, progress, errors."""

from __future__ import annotations

import io

from rich.text import Text
from textual.widgets import Static

__all__ = ["AssistantTurn", "ErrorLine", "ImageView", "NoteLine", "UserTurnView", "half_blocks"]


def half_blocks(png: bytes, width: int = 32) -> Text:
    """An image as rows of '▀' whose top colour is one pixel row and bottom colour the next: two
    pixels per character cell, readable in any terminal that shows 24-bit colour."""
    import numpy as np
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    height = max(2, round(picture.height * width / picture.width / 2) * 2)
    small = picture.resize((width, height))
    rgb = np.asarray(small, dtype=np.uint8)
    out = Text()
    for y in range(0, height, 2):
        for x in range(width):
            (r1, g1, b1), (r2, g2, b2) = rgb[y, x].tolist(), rgb[y + 1, x].tolist()
            out.append("▀", style=f"rgb({r1},{g1},{b1}) on rgb({r2},{g2},{b2})")
        if y + 2 < height:
            out.append("\n")
    return out


class UserTurnView(Static):
    """What the user said or typed (speech shows its length, and its transcript when there is one)."""

    DEFAULT_CLASSES = "user"

    def __init__(self, text: str, speech_s: float = 0.0, images: int = 0) -> None:
        self.text = text
        self.speech_s = speech_s
        self.images = images
        super().__init__(self._render_text())

    def _render_text(self) -> Text:
        line = Text("you  ", style="bold")
        if self.speech_s:
            line.append(f"🎤 {self.speech_s:.1f} s ", style="italic")
        if self.images:
            line.append(f"[{self.images} image{'s' if self.images > 1 else ''}] ", style="italic")
        line.append(self.text)
        return line

    def set_transcript(self, text: str) -> None:
        self.text = f"“{text}”"
        self.update(self._render_text())


class AssistantTurn(Static):
    """One agent turn streaming in: text deltas, a playing indicator with the audio's length, the end."""

    DEFAULT_CLASSES = "assistant"

    def __init__(self, turn: int, kind: str) -> None:
        self.turn = turn
        self.kind = kind
        self.text = ""
        self.audio_s = 0.0
        self.status = "…"
        self.progress = ""
        super().__init__(self._render_text())

    def _render_text(self) -> Text:
        who = "mio" if self.kind == "reply" else f"mio /{self.kind}"
        line = Text(f"{who}  ", style="bold")
        line.append(self.text)
        if self.audio_s:
            line.append(f"  ♪ {self.audio_s:.1f} s", style="italic")
        if self.progress:
            line.append(f"  [{self.progress}]", style="dim")
        line.append(f"  {self.status}", style="dim")
        return line

    def refresh_text(self) -> None:
        self.update(self._render_text())


class ImageView(Static):
    """An image the agent made, drawn in half blocks."""

    DEFAULT_CLASSES = "image"


class NoteLine(Static):
    """A line about what happened (playback cleared, routing, session notes)."""

    DEFAULT_CLASSES = "note"


class ErrorLine(Static):
    """An error event, with its code."""

    DEFAULT_CLASSES = "error"
