"""A conversation as Markdown, with its images and audio as files beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mio_agent.events import (
    AudioOut,
    Event,
    ImageIn,
    ImageOut,
    TextDelta,
    Transcript,
    TurnEnded,
    TurnStarted,
    UserTurn,
)

__all__ = ["MAX_AUDIO_BYTES", "Conversation", "Entry"]

MAX_AUDIO_BYTES = 64 << 20
"""Reply audio kept for export (about 30 minutes); later audio is not kept, so memory stays bounded."""


@dataclass(slots=True)
class Entry:
    """One turn of one side: its text, its images (attached by the user, or made by the agent) and the agent's audio."""

    role: str
    turn: int
    text: str = ""
    kind: str = ""
    images: list[bytes] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    reason: str = ""


class Conversation:
    """The turns the TUI has shown, rebuilt from events (live, or read from a session log)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._agent: dict[int, Entry] = {}
        self._users: dict[int, Entry] = {}
        self._audio_bytes = 0
        self._attached: list[bytes] = []

    def _agent_entry(self, turn: int) -> Entry:
        entry = self._agent.get(turn)
        if entry is None:
            entry = self._agent[turn] = Entry("assistant", turn)
            self.entries.append(entry)
        return entry

    def add(self, ev: Event) -> None:
        if isinstance(ev, ImageIn):
            # an attached image joins the user's next turn
            self._attached.append(ev.data)
        elif isinstance(ev, UserTurn):
            speech = f"(spoke {ev.speech_s:.1f} s) " if ev.speech_s else ""
            entry = self._users[ev.turn] = Entry("user", ev.turn, speech + ev.text, images=self._attached)
            self._attached = []
            self.entries.append(entry)
        elif isinstance(ev, Transcript) and ev.turn in self._users:
            self._users[ev.turn].text += f" “{ev.text}”"
        elif isinstance(ev, TurnStarted):
            self._agent_entry(ev.turn).kind = ev.kind
        elif isinstance(ev, TextDelta):
            self._agent_entry(ev.turn).text += ev.text
        elif isinstance(ev, ImageOut) and ev.png is not None:
            self._agent_entry(ev.turn).images.append(ev.png)
        elif isinstance(ev, AudioOut) and self._audio_bytes + len(ev.pcm) <= MAX_AUDIO_BYTES:
            self._agent_entry(ev.turn).audio.append(ev.pcm)
            self._audio_bytes += len(ev.pcm)
        elif isinstance(ev, TurnEnded):
            self._agent_entry(ev.turn).reason = ev.reason

    def export(self, folder: Path, session: str) -> Path:
        """Write `<folder>/<session>.md` and its media in `<folder>/<session>-media/`; the Markdown path."""
        import numpy as np

        from mio_agent.codecs.speech import write_wav

        folder.mkdir(parents=True, exist_ok=True)
        media = folder / f"{session}-media"
        media.mkdir(exist_ok=True)
        lines = [f"# Conversation {session}", ""]
        for e in self.entries:
            who = (
                "**You**"
                if e.role == "user"
                else f"**MIO**{f' (/{e.kind})' if e.kind not in ('', 'reply') else ''}"
            )
            lines.append(f"{who}: {e.text.strip() or '…'}")
            for k, png in enumerate(e.images):
                name = f"turn{e.turn}-{e.role}-image{k + 1}.png"
                (media / name).write_bytes(png)
                lines.append(f"\n![image {k + 1} of turn {e.turn}]({media.name}/{name})")
            if e.audio:
                name = f"turn{e.turn}-reply.wav"
                samples = np.frombuffer(b"".join(e.audio), "<i2").astype(np.float32) / 32768
                write_wav(media / name, samples, 16000)
                lines.append(f"\n[▶ reply audio, {samples.size / 16000:.1f} s]({media.name}/{name})")
            if e.reason and e.reason != "completed":
                lines.append(f"\n_({e.reason})_")
            lines.append("")
        path = folder / f"{session}.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path
