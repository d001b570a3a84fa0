"""JSON messages of the protocol: what a client may send (validated), and what the server sends."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from mio_agent.events import Event, event_to_dict
from mio_agent.exceptions import ProtocolError
from mio_agent.fieldcheck import AtLeast, Finite, Invalid, convert

__all__ = [
    "CLIENT_MESSAGES",
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "PROTOCOL_VERSION",
    "Amount",
    "ClientMessage",
    "Count",
    "Resume",
    "decode_client_message",
    "encode_json",
    "error_message",
    "event_message",
    "welcome_message",
]

PROTOCOL_VERSION = 1
MAX_TEXT_CHARS = 20_000
"""Longest text a message field may hold (a typed turn is far shorter)."""
MAX_ID_CHARS = 128
"""Longest `id` a client may give a message."""

Count = Annotated[int, AtLeast(0)]
"""A field holding an integer of 0 or more (a stream, a turn, a length)."""
Amount = Annotated[float, Finite(), AtLeast(0)]
"""A field holding a finite number of 0 or more (an integer too, unless too large for a float)."""

Resume = dict[str, Any]
"""`hello.resume`: an object (its `session` and `last_seq` are checked with the hello)."""

# type -> field -> (type hint, required); values are checked with `fieldcheck.convert`
CLIENT_MESSAGES: dict[str, dict[str, tuple[Any, bool]]] = {
    "hello": {
        "protocol": (Count, True),
        "client": (str, False),
        "token": (str, False),
        "mode": (str, False),
        "resume": (Resume, False),
    },
    "audio.start": {
        "stream": (Count, True),
        "sample_rate": (Count, True),
        "channels": (Count, False),
        "format": (str, False),
    },
    "audio.end": {"stream": (Count, True)},
    "video.start": {
        "stream": (Count, True),
        "width": (Count, True),
        "height": (Count, True),
    },
    "video.end": {"stream": (Count, True)},
    "text": {"text": (str, True)},
    "image": {"stream": (Count, True), "bytes": (Count, True), "name": (str, False)},
    "invoke": {"name": (str, True), "text": (str, False), "image_stream": (Count, False)},
    "interrupt": {},
    "playback": {"turn": (Count, True), "played_ms": (Amount, True)},
    "mute": {"muted": (bool, True)},
    "ping": {"nonce": (str, False)},
}
"""Every message a client may send, with its fields (besides `type` and an optional `id`)."""


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A validated client message: its type, the client's id for it (echoed in errors), its fields."""

    type: str
    id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)


def _lone_surrogate(text: str) -> int | None:
    """Where `text` holds a UTF-16 surrogate that is not part of a character (None: it is valid Unicode).

    JSON may spell such a thing (`"\\ud800"`) and Python decodes it, but it cannot be encoded
    as UTF-8, so nothing may keep it: not the session, its log, nor a message sent back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _find_lone_surrogate(value: Any, path: str) -> tuple[str, int] | None:
    """The path of the first string (or field name) under `value` with a lone surrogate, and where.
    (Iterative: a deeply nested value cannot exhaust the stack.)"""
    todo: list[tuple[Any, str]] = [(value, path)]
    while todo:
        item, where = todo.pop()
        if isinstance(item, str):
            at = _lone_surrogate(item)
            if at is not None:
                return where, at
        elif isinstance(item, dict):
            for key in item:
                at = _lone_surrogate(key)
                if at is not None:
                    return f"{where}: a field name", at
            todo.extend((v, f"{where}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            todo.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def _surrogate_error(path: str, at: int, ref: str | None) -> ProtocolError:
    return ProtocolError(
        f"{path}: not valid Unicode: a lone surrogate at character {at} (a UTF-16 surrogate that is not "
        "half of a pair); strings must be valid Unicode",
        code="protocol.field",
        ref=ref,
    )


def decode_client_message(text: str | bytes) -> ClientMessage:
    """Parse and validate one JSON text frame from a client.

    Raises ProtocolError (with the message's `id` as `ref` when it had one) naming the problem:
    not JSON, not an object, an unknown type, a missing, unknown or mistyped field, a string that
    is not valid Unicode (a lone surrogate) or is longer than MAX_TEXT_CHARS.
    """
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"a text frame must be one JSON object: {exc}", code="protocol.json") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            f"a text frame must be a JSON object, got {type(obj).__name__}", code="protocol.json"
        )
    raw_id = obj.get("id")
    ref = raw_id if isinstance(raw_id, str) and len(raw_id) <= MAX_ID_CHARS else None
    if raw_id is not None and ref is None:
        raise ProtocolError(
            f"`id` must be a string of at most {MAX_ID_CHARS} characters", code="protocol.field"
        )
    if ref is not None and (at := _lone_surrogate(ref)) is not None:
        raise _surrogate_error("id", at, None)
    kind = obj.get("type")
    where = kind if isinstance(kind, str) and kind in CLIENT_MESSAGES else "message"
    found = _find_lone_surrogate(obj, where)
    if found is not None:
        raise _surrogate_error(*found, ref)
    if not isinstance(kind, str) or kind not in CLIENT_MESSAGES:
        raise ProtocolError(
            f"unknown message type {kind!r}; client messages are: {', '.join(CLIENT_MESSAGES)}",
            code="protocol.type",
            ref=ref,
        )
    spec = CLIENT_MESSAGES[kind]
    unknown = sorted(set(obj) - set(spec) - {"type", "id"})
    if unknown:
        raise ProtocolError(
            f"{kind}: unknown field(s) {', '.join(unknown)}; its fields are: {', '.join(spec) or 'none'}",
            code="protocol.field",
            ref=ref,
        )
    data: dict[str, Any] = {}
    for name, (hint, required) in spec.items():
        if name not in obj or obj[name] is None:
            if required:
                raise ProtocolError(f"{kind}: missing field {name!r}", code="protocol.field", ref=ref)
            continue
        value = obj[name]
        try:
            convert(value, hint)  # checked only: a number keeps its JSON type
        except Invalid as exc:
            try:
                shown = json.dumps(value)[:40]
            except RecursionError:
                shown = type(value).__name__
            raise ProtocolError(
                f"{kind}.{name}: expected {exc.expected}, got {shown}", code="protocol.field", ref=ref
            ) from None
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ProtocolError(
                f"{kind}.{name}: {len(value):,} characters is over the limit of {MAX_TEXT_CHARS:,} "
                "characters for a text field",
                code="protocol.field",
                ref=ref,
            )
        data[name] = value
    if kind == "hello" and "resume" in data:
        resume = data["resume"]
        last_seq = resume.get("last_seq")
        if not (isinstance(resume.get("session"), str) and type(last_seq) is int and last_seq >= 0):
            raise ProtocolError(
                'hello.resume: expected {"session": "<id>", "last_seq": <integer of 0 or more>}',
                code="protocol.field",
                ref=ref,
            )
    return ClientMessage(kind, ref, data)


def encode_json(obj: Mapping[str, Any]) -> str:
    """Compact JSON of a message, always encodable as UTF-8 (what a text frame must be).

    A lone surrogate in a string (which no client can send, but an event might still carry)
    becomes U+FFFD, so a message, once numbered and kept for replay, can always be sent."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if _lone_surrogate(text) is not None:
        # pairs of surrogates join into their character; a lone one is replaced
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def welcome_message(
    *,
    seq: int,
    session: str,
    resumed: bool,
    server: str,
    capabilities: Sequence[Mapping[str, Any]],
    limits: Mapping[str, Any],
    missed: int = 0,
) -> dict[str, Any]:
    """The server's answer to `hello`."""
    return {
        "type": "welcome",
        "seq": seq,
        "protocol": PROTOCOL_VERSION,
        "server": server,
        "session": session,
        "resumed": resumed,
        "missed": missed,
        "capabilities": list(capabilities),
        "audio_out": {"format": "pcm16", "sample_rate": 16000, "channels": 1},
        "audio_in": {"formats": ["pcm16"], "channels": [1, 2], "sample_rate": "8000..48000"},
        "limits": dict(limits),
    }


def event_message(seq: int, ev: Event) -> dict[str, Any]:
    """An event for the client (its bytes, if any, follow in a binary frame with the same seq)."""
    return {"type": "event", "seq": seq, "event": event_to_dict(ev)}


def error_message(
    seq: int,
    code: str,
    message: str,
    *,
    ref: str | None = None,
    fatal: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An error about the client's message `ref` (None: not about one message); `extra` adds
    fields of some codes (e.g. `replay.gap`'s `lost`, `audio.rate`'s `dropped`)."""
    return {
        "type": "error", "seq": seq, "code": code, "message": message, "ref": ref, "fatal": fatal,
        **(extra or {}),
    }  # fmt: skip
