"""Events on the wire: every event type by name, and JSON-safe dicts with bytes sent apart."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any

from mio_agent.events_base import Event
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
from mio_agent.fieldcheck import Invalid, convert

__all__ = [
    "BINARY_EVENT_TYPES",
    "EVENT_TYPES",
    "binary_payloads",
    "event_from_dict",
    "event_to_dict",
]

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

# get_type_hints re-evaluates string annotations on every call; events convert on every frame.
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
