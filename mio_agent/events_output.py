"""Output events: what the agent produces for speakers, screens, clients and the session log."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mio_agent.events_base import END_REASONS, EndReason, MetricValue, OutputEvent, TurnMode, validate_pcm
from mio_agent.exceptions import EventError

__all__ = [
    "AudioOut",
    "CapabilityProgress",
    "ErrorEvent",
    "ImageOut",
    "InputLevel",
    "Metrics",
    "PlaybackClear",
    "RouteDecided",
    "SessionState",
    "SpeechCodes",
    "TextDelta",
    "Transcript",
    "TurnEnded",
    "TurnStarted",
    "UserTurn",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnStarted(OutputEvent):
    """The agent started answering: `kind` is "reply" for the model, else the capability's name."""

    type: ClassVar[str] = "turn.started"

    mode: TurnMode
    kind: str = "reply"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta(OutputEvent):
    """The next piece of reply text."""

    type: ClassVar[str] = "text.delta"

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechCodes(OutputEvent):
    """Speech codes of one SpeechTokenizer layer (0 = content) as the model produced them."""

    type: ClassVar[str] = "speech.codes"

    layer: int
    codes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.layer < 0:
            raise EventError(f"{self.type}: layer must be 0 or more, got {self.layer}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioOut(OutputEvent):
    """Decoded reply audio: little-endian int16 mono PCM; `seq` numbers the chunks of a turn from 0."""

    type: ClassVar[str] = "audio.out"

    pcm: bytes = field(repr=False)
    sample_rate: int
    seq: int

    def __post_init__(self) -> None:
        validate_pcm(self.pcm, 1, self.sample_rate, self.type)

    @property
    def duration_s(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.pcm) / (2 * self.sample_rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageOut(OutputEvent):
    """An image the model produced: its codes, and the decoded PNG once a decoder has run (else None)."""

    type: ClassVar[str] = "image.out"

    codes: tuple[int, ...]
    png: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnEnded(OutputEvent):
    """The agent's turn is over: why, and how many tokens it generated."""

    type: ClassVar[str] = "turn.ended"

    reason: EndReason
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.reason not in END_REASONS:
            raise EventError(
                f"{self.type}: reason must be one of {', '.join(END_REASONS)}, got {self.reason!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackClear(OutputEvent):
    """Drop every buffered sample of audio now: the user interrupted."""

    type: ClassVar[str] = "playback.clear"
    control: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityProgress(OutputEvent):
    """A capability's progress: step `step` of `total` (None when unknown) and a line for people."""

    type: ClassVar[str] = "capability.progress"

    name: str
    step: int
    total: int | None = None
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics(OutputEvent):
    """A timing: `stage` (e.g. "prefill", "first_audio") took `seconds`; `extra` holds more numbers."""

    type: ClassVar[str] = "metrics"

    stage: str
    seconds: float
    extra: Mapping[str, MetricValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy keeps the event immutable even if the caller mutates its dict later.
        object.__setattr__(self, "extra", types.MappingProxyType(dict(self.extra)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(OutputEvent):
    """Something failed: a stable `code`, a message for people, and whether the session goes on."""

    type: ClassVar[str] = "error"

    code: str
    message: str
    recoverable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UserTurn(OutputEvent):
    """A user turn went to the agent: its text, seconds of speech, and which camera keyframes joined it."""

    type: ClassVar[str] = "user.turn"

    text: str = ""
    speech_s: float = 0.0
    images: int = 0
    keyframes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript(OutputEvent):
    """What the user said, as text (from MIO's speech recognition or an ASR plugin)."""

    type: ClassVar[str] = "user.transcript"

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecided(OutputEvent):
    """The router's choice for a turn: `capability` ("" = the plain reply) and why."""

    type: ClassVar[str] = "route.decided"

    capability: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState(OutputEvent):
    """What the session is doing now, for status lines and home automation."""

    type: ClassVar[str] = "session.state"

    state: Literal["listening", "hearing", "thinking", "speaking", "muted", "closed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InputLevel(OutputEvent):
    """Microphone level (dBFS, about ten a second) and whether the voice detector hears speech."""

    type: ClassVar[str] = "input.level"

    dbfs: float
    speech: bool
