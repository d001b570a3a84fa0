"""Events: the small frozen messages that flow between inputs, the engine, plugins and outputs."""

from __future__ import annotations

import time
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeAlias

from mio_agent.exceptions import EventError
from mio_agent.fieldcheck import Invalid, convert

__all__ = [
    "BINARY_EVENT_TYPES",
    "END_REASONS",
    "EVENT_TYPES",
    "AudioIn",
    "AudioOut",
    "CapabilityProgress",
    "ControlEvent",
    "EndReason",
    "ErrorEvent",
    "Event",
    "EventError",
    "Family",
    "ImageIn",
    "ImageOut",
    "InputEvent",
    "InputLevel",
    "Interrupt",
    "InvokeCapability",
    "MetricValue",
    "Metrics",
    "Mute",
    "OutputEvent",
    "PlaybackClear",
    "PlaybackProgress",
    "RouteDecided",
    "SessionState",
    "SpeechCodes",
    "TextDelta",
    "TextIn",
    "Transcript",
    "TurnEnded",
    "TurnMode",
    "TurnStarted",
    "UserSpeechEnded",
    "UserSpeechStarted",
    "UserTurn",
    "VideoFrame",
    "binary_payloads",
    "event_from_dict",
    "event_to_dict",
]

Family: TypeAlias = Literal["input", "output", "control"]
EndReason: TypeAlias = Literal["completed", "interrupted", "error", "length"]
END_REASONS: tuple[EndReason, ...] = typing.get_args(EndReason)
# Mirrors mio_agent.conversation.Mode (a test keeps them equal); repeated here so that events,
# which every transport imports, do not pull in torch through the vocabulary module.
TurnMode: TypeAlias = Literal["std", "voice", "custom"]
MetricValue: TypeAlias = int | float | str | bool


# -- base classes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event.

    `session` is the session id, `turn` the turn number inside it (0 before the first turn) and
    `t` a `time.monotonic()` reading taken when the event was built. Monotonic clocks are per
    process: a `t` read from another process orders its events but cannot be compared with ours.

    `type` is the stable dotted name used in logs and on the wire. `control` marks events that
    jump every queue (interrupt, playback.clear): the bus delivers them before queued data.
    """

    type: ClassVar[str] = "event"
    family: ClassVar[Family] = "output"
    control: ClassVar[bool] = False

    session: str
    turn: int
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputEvent(Event):
    """What comes in from the user: microphone, camera, typed text, speech boundaries."""

    family: ClassVar[Family] = "input"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputEvent(Event):
    """What the agent produces for speakers, screens, clients and the session log."""

    family: ClassVar[Family] = "output"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlEvent(Event):
    """Commands that change what is running rather than carry content."""

    family: ClassVar[Family] = "control"
    control: ClassVar[bool] = True


def _validate_pcm(pcm: bytes, channels: int, sample_rate: int, what: str) -> None:
    if sample_rate <= 0:
        raise EventError(f"{what}: sample_rate must be a positive number of Hz, got {sample_rate}")
    if channels <= 0:
        raise EventError(f"{what}: channels must be positive, got {channels}")
    if len(pcm) % (2 * channels):
        raise EventError(
            f"{what}: pcm holds {len(pcm)} bytes, not a whole number of int16 frames of {channels} channel(s)"
        )


# -- input family ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioIn(InputEvent):
    """A chunk of microphone audio: little-endian int16 PCM, interleaved when `channels` > 1."""

    type: ClassVar[str] = "audio.in"

    pcm: bytes = field(repr=False)
    sample_rate: int
    channels: int = 1

    def __post_init__(self) -> None:
        _validate_pcm(self.pcm, self.channels, self.sample_rate, self.type)

    @property
    def duration_s(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoFrame(InputEvent):
    """One camera frame: `rgb` holds height × width × 3 bytes, rows top to bottom."""

    type: ClassVar[str] = "video.frame"

    width: int
    height: int
    rgb: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise EventError(
                f"{self.type}: width and height must be positive, got {self.width}×{self.height}"
            )
        if len(self.rgb) != self.width * self.height * 3:
            raise EventError(
                f"{self.type}: rgb holds {len(self.rgb)} bytes, expected {self.width}×{self.height}×3 = "
                f"{self.width * self.height * 3}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3), the shape to give `numpy.frombuffer(frame.rgb, numpy.uint8)`."""
        return (self.height, self.width, 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class TextIn(InputEvent):
    """Text the user typed or sent."""

    type: ClassVar[str] = "text.in"

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSpeechStarted(InputEvent):
    """Voice activity began: the user started speaking (possibly over the agent)."""

    type: ClassVar[str] = "user.speech.started"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSpeechEnded(InputEvent):
    """Voice activity ended after `duration_s` seconds of speech."""

    type: ClassVar[str] = "user.speech.ended"

    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageIn(InputEvent):
    """An image the user sent or attached (PNG or JPEG bytes); it joins the next turn."""

    type: ClassVar[str] = "image.in"

    data: bytes = field(repr=False)
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvokeCapability(InputEvent):
    """Run the capability `name` on `text` and, if given, `image` (PNG or JPEG bytes)."""

    type: ClassVar[str] = "capability.invoke"

    name: str
    text: str = ""
    image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackProgress(InputEvent):
    """A client played `played_ms` milliseconds of turn `turn`'s audio (so a barge-in cuts the context there)."""

    type: ClassVar[str] = "playback.progress"

    played_ms: float

    def __post_init__(self) -> None:
        if self.played_ms < 0:
            raise EventError(f"{self.type}: played_ms must be 0 or more, got {self.played_ms}")


# -- output family --------------------------------------------------------------------------------


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
        _validate_pcm(self.pcm, 1, self.sample_rate, self.type)

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


# -- control family -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt(ControlEvent):
    """Stop the running reply (the user barged in, pressed a key, or a client asked)."""

    type: ClassVar[str] = "interrupt"

    reason: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mute(ControlEvent):
    """Stop (`muted` true) or resume listening to the microphone."""

    type: ClassVar[str] = "mute"

    muted: bool


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        AudioIn,
        VideoFrame,
        TextIn,
        UserSpeechStarted,
        UserSpeechEnded,
        ImageIn,
        InvokeCapability,
        PlaybackProgress,
        TurnStarted,
        TextDelta,
        SpeechCodes,
        AudioOut,
        ImageOut,
        TurnEnded,
        PlaybackClear,
        CapabilityProgress,
        Metrics,
        ErrorEvent,
        UserTurn,
        Transcript,
        RouteDecided,
        SessionState,
        InputLevel,
        Interrupt,
        Mute,
    )
}
"""Every concrete event class by its `type` name."""

# -- dictionaries ---------------------------------------------------------------------------------

_hints_cache: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    hints = _hints_cache.get(cls)
    if hints is None:
        all_hints = typing.get_type_hints(cls)
        hints = {f.name: all_hints[f.name] for f in fields(cls)}
        _hints_cache[cls] = hints
    return hints


def _is_bytes_hint(hint: Any) -> bool:
    return hint is bytes or bytes in typing.get_args(hint)


BINARY_EVENT_TYPES: frozenset[str] = frozenset(
    name for name, cls in EVENT_TYPES.items() if any(_is_bytes_hint(h) for h in _hints(cls).values())
)
"""Types whose events carry raw bytes (audio, video, images): transports send those in binary frames."""


def binary_payloads(ev: Event) -> dict[str, bytes]:
    """The raw bytes fields of an event by field name (empty for events without any, or with None)."""
    return {
        name: value
        for name, hint in _hints(type(ev)).items()
        if _is_bytes_hint(hint) and isinstance(value := getattr(ev, name), bytes)
    }


def event_to_dict(ev: Event) -> dict[str, Any]:
    """A JSON-safe dict of an event: `type`, `session`, `turn`, `t`, then the event's own fields.

    Raw bytes are never inlined (base64 would grow audio by a third and JSON logs by megabytes):
    each bytes field becomes `{"bytes": <length>}` and its content travels separately, in a
    binary frame or a media file (`binary_payloads(ev)` gives it). Tuples become lists and
    mappings plain dicts.
    """
    out: dict[str, Any] = {"type": ev.type, "session": ev.session, "turn": ev.turn, "t": ev.t}
    for name in _hints(type(ev)):
        if name in out:
            continue
        value = getattr(ev, name)
        if isinstance(value, bytes):
            out[name] = {"bytes": len(value)}
        elif isinstance(value, tuple):
            out[name] = list(value)
        elif isinstance(value, Mapping):
            out[name] = dict(value)
        else:
            out[name] = value
    return out


def _describe(value: object) -> str:
    text = repr(value)
    return (text[:60] + "…" if len(text) > 60 else text) + f" ({type(value).__name__})"


def event_from_dict(d: Mapping[str, Any], *, payloads: Mapping[str, bytes] | None = None) -> Event:
    """Build an event from `event_to_dict`'s output (e.g. a JSON frame from a client).

    Events with bytes fields (`BINARY_EVENT_TYPES`) need their content in `payloads`, by field
    name; a bytes field that is None (ImageOut.png) needs none. `t` is optional and defaults to
    now. Raises EventError naming the type and field on an unknown type, a missing, unknown or
    mistyped field, or a payload whose length differs from the dict's.
    """
    kind = d.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"unknown event type {kind!r}; known types: {', '.join(sorted(EVENT_TYPES))}")
    hints = _hints(cls)
    unknown = sorted(set(d) - set(hints) - {"type"})
    if unknown:
        raise EventError(f"{kind}: unknown field(s) {', '.join(unknown)}; fields are: {', '.join(hints)}")
    payloads = payloads or {}
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in d:
            if f.name == "t":
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                raise EventError(f"{kind}: missing field {f.name!r}")
            continue
        value = d[f.name]
        try:
            kwargs[f.name] = convert(value, hints[f.name], payload=payloads.get(f.name))
        except Invalid as exc:
            problem = exc.problem or f"expected {exc.expected}, got {_describe(value)}"
            raise EventError(f"{kind}.{f.name}: {problem}") from None
    return cls(**kwargs)
