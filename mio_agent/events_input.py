"""Input events: what comes in from the user (microphone, camera, text, images, speech boundaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mio_agent.events_base import InputEvent, validate_pcm
from mio_agent.exceptions import EventError

__all__ = [
    "AudioIn",
    "ImageIn",
    "InvokeCapability",
    "PlaybackProgress",
    "TextIn",
    "UserSpeechEnded",
    "UserSpeechStarted",
    "VideoFrame",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioIn(InputEvent):
    """A chunk of microphone audio: little-endian int16 PCM, interleaved when `channels` > 1."""

    type: ClassVar[str] = "audio.in"

    pcm: bytes = field(repr=False)
    sample_rate: int
    channels: int = 1

    def __post_init__(self) -> None:
        validate_pcm(self.pcm, self.channels, self.sample_rate, self.type)

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
