"""The compact live status line of `mio-agent run`: state, microphone level, latencies of the last turn."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from mio_agent.events import Event, InputLevel, Metrics, SessionState, TurnEnded

if TYPE_CHECKING:
    from mio_agent.runtime.audio.base import AudioSink
    from mio_agent.runtime.voice.session import Session

__all__ = ["StatusLine", "level_bar"]

_BARS = " ▁▂▃▄▅▆▇█"
_ICONS = {"listening": "·", "hearing": "◉", "thinking": "…", "speaking": "♪", "muted": "×", "closed": " "}


def level_bar(dbfs: float, width: int = 8) -> str:
    """A meter of a level from -60 dBFS (empty) to 0 (full)."""
    fill = max(0.0, min(1.0, (dbfs + 60.0) / 60.0)) * width
    whole = int(fill)
    bar = "█" * whole
    if whole < width:
        bar += _BARS[int((fill - whole) * (len(_BARS) - 1))]
    return bar.ljust(width)


class StatusLine:
    """Redraws one line on a terminal (or, on a pipe, writes one line per state change and per finished turn)."""

    def __init__(self, session: Session, speaker: AudioSink | None, out: TextIO) -> None:
        self.session = session
        self.speaker = speaker
        self.out = out
        self.tty = out.isatty()
        self.state = session.state
        self.level = -120.0
        self.speech = False
        self.latency: dict[str, float] = {}
        self.extra: dict[str, float] = {}

    def render(self) -> str:
        parts = [
            f"{_ICONS.get(self.state, '?')} {self.state:<9}",
            f"mic {level_bar(self.level)} {self.level:5.0f} dB",
        ]
        if self.speaker is not None and self.speaker.buffered_ms > 0:
            parts.append(f"buffer {self.speaker.buffered_ms:4.0f} ms")
        if "first_audio" in self.latency:
            parts.append("last:" + self._latency().removeprefix(":"))
        return "  ".join(parts)

    def _latency(self) -> str:
        """ ": first audio N ms (vad, engine, overhead)" of the last turn, or "" before any audio."""
        if "first_audio" not in self.latency:
            return ""
        ms = {k: v * 1000 for k, v in self.extra.items()}
        return (
            f": first audio {self.latency['first_audio'] * 1000:.0f} ms "
            f"(vad {self.latency.get('vad', 0) * 1000:.0f}, engine {ms.get('engine_s', 0):.0f}, "
            f"overhead {ms.get('overhead_s', 0):.0f})"
        )

    def feed(self, ev: Event) -> bool:
        """Take one event; whether the line changed."""
        if isinstance(ev, SessionState):
            changed = ev.state != self.state
            self.state = ev.state
            if changed and not self.tty:
                # a log (pipe, journal) gets one line per state change: when the user was heard,
                # when the agent thought and spoke
                self.out.write(f"turn {ev.turn} {ev.state}\n")
                self.out.flush()
                return False
        elif isinstance(ev, InputLevel):
            self.level, self.speech = ev.dbfs, ev.speech
        elif isinstance(ev, Metrics):
            self.latency[ev.stage] = ev.seconds
            if ev.stage == "first_audio":
                self.extra = {k: float(v) for k, v in ev.extra.items() if isinstance(v, int | float)}
        elif isinstance(ev, TurnEnded) and not self.tty:
            # the turn's own figures, not the live state (which has moved on by now)
            self.out.write(f"turn {ev.turn} {ev.reason}{self._latency()}\n")
            self.out.flush()
            return False
        else:
            return False
        return True

    async def run(self) -> None:
        sub = self.session.bus.subscribe(
            "status",
            maxsize=64,
            filter=lambda e: e.type in ("session.state", "input.level", "metrics", "turn.ended"),
        )
        try:
            async for ev in sub:
                if self.feed(ev) and self.tty:
                    self.out.write("\r\x1b[2K" + self.render()[:200])
                    self.out.flush()
        finally:
            if self.tty:
                self.out.write("\n")
            sub.close()
