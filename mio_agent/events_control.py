"""Control events: commands that change what is running (stop the reply, mute the microphone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mio_agent.events_base import ControlEvent

__all__ = ["Interrupt", "Mute"]


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
