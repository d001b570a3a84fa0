"""What a `mio-agent run` session did, in plain words: per turn what was heard and answered, and how fast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mio_agent.events import AudioOut, ErrorEvent, Event, Metrics, TextDelta, Transcript, TurnEnded, UserTurn

__all__ = ["EMBEDDED_SOUND_NOTE", "SessionReport", "TurnReport"]

_USER_WAV = re.compile(r"user-(\d+)(?:\.\d+)?\.wav")

# stages of the time to first audio, in the order they happen
_STAGES = ("vad", "encode", "transcribe", "first_token", "first_audio")

EMBEDDED_SOUND_NOTE = (
    "The embedded model has random weights: its spoken reply is a few codes of noise (a click or a "
    "short buzz), not words. Point model.path at MIO-7B-Instruct for real answers (README, "
    '"Using real MIO weights").'
)


@dataclass(slots=True)
class TurnReport:
    """One turn: what the user gave, what came back, how long each stage took."""

    turn: int
    heard_s: float = 0.0
    typed: str = ""
    transcript: str = ""
    answer_text: str = ""
    answer_s: float = 0.0
    reason: str = ""
    errors: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if self.typed:
            asked = f"you typed {self.typed!r}"
        elif self.transcript:
            asked = f"heard {self.heard_s:.1f} s of speech: {self.transcript!r}"
        else:
            asked = f"heard {self.heard_s:.1f} s of speech"
        parts = []
        if self.answer_s:
            parts.append(f"{self.answer_s:.2f} s of speech")
        if self.answer_text:
            parts.append(repr(self.answer_text[:120]))
        answered = "answered " + (" and ".join(parts) if parts else "nothing audible")
        out = [f"  turn {self.turn}: {asked}; {answered} ({self.reason or 'unfinished'})"]
        timed = [f"{s.replace('_', ' ')} {self.stages[s] * 1000:.0f} ms" for s in _STAGES if s in self.stages]
        if timed:
            out.append("    latency: " + ", ".join(timed))
        out += [f"    error: {e}" for e in self.errors]
        return out


class SessionReport:
    """Collects a session's events (fed from its bus) into turn reports."""

    def __init__(self) -> None:
        self.turns: dict[int, TurnReport] = {}

    def _of(self, n: int) -> TurnReport:
        return self.turns.setdefault(n, TurnReport(n))

    def feed(self, ev: Event) -> None:
        if isinstance(ev, UserTurn):
            t = self._of(ev.turn)
            t.heard_s, t.typed = ev.speech_s, ev.text
        elif isinstance(ev, Transcript):
            self._of(ev.turn).transcript = ev.text
        elif isinstance(ev, TextDelta):
            self._of(ev.turn).answer_text += ev.text
        elif isinstance(ev, AudioOut):
            self._of(ev.turn).answer_s += ev.duration_s
        elif isinstance(ev, Metrics):
            self._of(ev.turn).stages[ev.stage] = ev.seconds
        elif isinstance(ev, ErrorEvent):
            self._of(ev.turn).errors.append(ev.message)
        elif isinstance(ev, TurnEnded):
            self._of(ev.turn).reason = ev.reason

    def write(
        self,
        out: TextIO,
        *,
        session: str,
        why: str,
        folder: Path | None,
        embedded: bool,
        files: dict[str, Path] | None = None,
    ) -> None:
        done = [t for n, t in sorted(self.turns.items()) if t.reason]
        out.write(f"\nsession {session}: {len(done)} turn{'s' if len(done) != 1 else ''}, {why}\n")
        for t in done:
            for line in t.lines():
                out.write(line + "\n")
        if folder is not None:
            out.write(f"  session log: {folder} (events.jsonl, user-N.wav, assistant-N.wav)\n")
            numbers = {t.turn for t in done}
            for wav in sorted(folder.glob("user-*.wav")):
                match = _USER_WAV.fullmatch(wav.name)
                if (
                    match
                    and int(match.group(1)) not in numbers
                    and int(match.group(1)) > max(numbers, default=0)
                ):
                    # the microphone stays open after the last turn: what it heard is kept (replay feeds it)
                    out.write(f"  {wav.name}: microphone audio after the last turn (no turn began in it)\n")
        for label, path in (files or {}).items():
            out.write(f"  {label}: {path}\n")
        if embedded:
            out.write(EMBEDDED_SOUND_NOTE + "\n")
