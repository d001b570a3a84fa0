"""How much of a reply the user actually heard, from a local speaker or from remote clients' reports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from mio_agent.conversation import Part, SpeechPart, TextPart

__all__ = ["CODE_MS", "LocalPlayback", "PlaybackControl", "ReportedPlayback", "heard_parts"]

CODE_MS = 20.0
"""Milliseconds of audio per speech content code (SpeechTokenizer: 50 codes a second)."""


class PlaybackControl(Protocol):
    """Where a session's reply audio plays: stop it at once, and say how much of a turn was heard."""

    def produced(self, turn: int, ms: float) -> None:
        """`ms` more milliseconds of turn `turn` were handed to the players."""

    def clear(self) -> None:
        """Drop everything buffered, now (a barge-in)."""

    def playing(self) -> bool:
        """Whether audio is still playing or buffered."""

    def played_ms(self, turn: int) -> float:
        """Milliseconds of turn `turn` heard so far."""


class ReportedPlayback:
    """Remote players: clients report `played_ms`; until one does, audio is assumed to play in real time.

    The estimate (time since the turn's first audio, capped at what was produced) keeps barge-in
    working with clients that never report; a report always wins over it.
    """

    def __init__(self) -> None:
        self._turn = -1
        self._produced = 0.0
        self._started: float | None = None
        self._reported: float | None = None
        self._cleared_at: float | None = None

    def _reset(self, turn: int) -> None:
        self._turn, self._produced, self._started, self._reported, self._cleared_at = (
            turn,
            0.0,
            None,
            None,
            None,
        )

    def produced(self, turn: int, ms: float) -> None:
        if turn != self._turn:
            self._reset(turn)
        if self._started is None:
            self._started = time.monotonic()
        self._produced += ms

    def report(self, turn: int, played_ms: float) -> None:
        """A client's PlaybackProgress."""
        if turn != self._turn:
            if turn < self._turn:
                return
            self._reset(turn)
        self._reported = max(self._reported or 0.0, played_ms)

    def clear(self) -> None:
        if self._cleared_at is None:
            self._cleared_at = self.played_ms(self._turn)

    def _estimate(self) -> float:
        if self._started is None:
            return 0.0
        return min(self._produced, (time.monotonic() - self._started) * 1000.0)

    def played_ms(self, turn: int) -> float:
        if turn != self._turn:
            return 0.0
        if self._cleared_at is not None and self._reported is None:
            return self._cleared_at
        if self._reported is not None:
            return min(self._reported, self._produced)
        return self._estimate()

    def playing(self) -> bool:
        if self._cleared_at is not None or self._started is None:
            return False
        return self.played_ms(self._turn) < self._produced


class _Sink(Protocol):
    def clear(self) -> float: ...

    def played_ms(self, turn: int) -> float: ...

    @property
    def buffered_ms(self) -> float: ...


class LocalPlayback:
    """A speaker on this machine (runtime.audio's sinks): clearing empties its jitter buffer at once."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self._turn = -1

    def produced(self, turn: int, ms: float) -> None:
        self._turn = turn

    def clear(self) -> None:
        self.sink.clear()

    def playing(self) -> bool:
        return self.sink.buffered_ms > 0.0

    def played_ms(self, turn: int) -> float:
        return self.sink.played_ms(turn)


def heard_parts(parts: Sequence[Part], played_ms: float) -> tuple[Part, ...]:
    """The reply as far as the user heard it: text before the speech, and the content codes played.

    Speech is decoded from content codes in order, CODE_MS each, so `played_ms` of audio is that
    many codes; timbre codes of a cut block are dropped (a content-only block is valid MIO).
    Anything after the cut (later text, images, speech) was never heard and is left out.
    """
    budget = int(played_ms // CODE_MS)
    kept: list[Part] = []
    for part in parts:
        if isinstance(part, SpeechPart):
            if budget <= 0:
                break
            if len(part.content) <= budget:
                kept.append(part)
                budget -= len(part.content)
                continue
            kept.append(SpeechPart(tuple(part.content[:budget])))
            break
        if isinstance(part, TextPart):
            kept.append(part)
            continue
        # an image shown before the speech stopped was seen
        kept.append(part)
    return tuple(kept)
