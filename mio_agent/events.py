"""Events: the small frozen messages that flow between inputs, the engine, plugins and outputs."""

# The classes and their wire form live in events_* modules, one concern each; this module gathers
# them so that `from mio_agent.events import X` stays the one import everyone (plugins too) uses.
from __future__ import annotations

from mio_agent.events_base import (
    END_REASONS,
    ControlEvent,
    EndReason,
    Event,
    Family,
    InputEvent,
    MetricValue,
    OutputEvent,
    TurnMode,
)
from mio_agent.events_codec import (
    BINARY_EVENT_TYPES,
    EVENT_TYPES,
    binary_payloads,
    event_from_dict,
    event_to_dict,
)
from mio_agent.events_control import Interrupt, Mute
from mio_agent.events_input import (
    AudioIn,
    ImageIn,
    InvokeCapability,
    PlaybackProgress,
    TextIn,
    UserSpeechEnded,
    UserSpeechStarted,
    VideoFrame,
)
from mio_agent.events_output import (
    AudioOut,
    CapabilityProgress,
    ErrorEvent,
    ImageOut,
    InputLevel,
    Metrics,
    PlaybackClear,
    RouteDecided,
    SessionState,
    SpeechCodes,
    TextDelta,
    Transcript,
    TurnEnded,
    TurnStarted,
    UserTurn,
)
from mio_agent.exceptions import EventError

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
