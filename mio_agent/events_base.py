"""Event base classes and the shared vocabulary (families, end reasons, turn modes) of every event."""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias

from mio_agent.exceptions import EventError

__all__ = [
    "END_REASONS",
    "ControlEvent",
    "EndReason",
    "Event",
    "Family",
    "InputEvent",
    "MetricValue",
    "OutputEvent",
    "TurnMode",
    "validate_pcm",
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


def validate_pcm(pcm: bytes, channels: int, sample_rate: int, what: str) -> None:
    """Raise EventError unless `pcm` is whole int16 frames of `channels` at a positive `sample_rate`."""
    if sample_rate <= 0:
        raise EventError(f"{what}: sample_rate must be a positive number of Hz, got {sample_rate}")
    if channels <= 0:
        raise EventError(f"{what}: channels must be positive, got {channels}")
    if len(pcm) % (2 * channels):
        raise EventError(
            f"{what}: pcm holds {len(pcm)} bytes, not a whole number of int16 frames of {channels} channel(s)"
        )
