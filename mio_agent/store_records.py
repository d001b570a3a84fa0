"""Session store records: what is read from its tables, and their id, JSON and token-blob helpers."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mio_agent.events import Event, event_from_dict
from mio_agent.exceptions import StoreError

# re-exported: the schema lived here before the store was split by concern
from mio_agent.store_schema import SCHEMA_VERSION, check_schema

if TYPE_CHECKING:
    from mio_agent.conversation import Conversation, Part, Role

__all__ = [
    "SCHEMA_VERSION",
    "SELECT_INFO",
    "MediaRecord",
    "SessionData",
    "SessionInfo",
    "StoredEvent",
    "TurnRecord",
    "check_schema",
    "check_session_id",
    "file_sha256",
    "info_from_row",
    "items_to_parts",
    "new_session_id",
    "pack_ids",
    "parts_to_items",
    "to_json",
    "unpack_ids",
]

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def new_session_id() -> str:
    """A fresh session id that sorts by creation time: `YYYYmmdd-HHMMSS-<8 hex>` (UTC)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def check_session_id(session_id: str) -> None:
    """StoreError unless `session_id` is usable as a folder name (1-128 letters, digits, `_.-`)."""
    if not _ID_RE.fullmatch(session_id):
        raise StoreError(
            f"session id {session_id!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (it names the session's folder)"
        )


def to_json(value: object, what: str) -> str:
    """Compact JSON of `value`; StoreError naming `what` when it is not JSON-serialisable."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {exc}"
        ) from None


def pack_ids(ids: Sequence[int]) -> bytes:
    """Token ids as the store's blob: 4 bytes an id, little-endian."""
    # 4 bytes: MIO's vocabulary is past 65 536; fixed byte order: the blob reads the same anywhere
    try:
        return struct.pack(f"<{len(ids)}I", *ids)
    except struct.error:
        bad = next((i for i in ids if not (isinstance(i, int) and 0 <= i < 1 << 32)), None)
        raise StoreError(f"token ids must be integers in 0..2**32-1, got {bad!r}") from None


def unpack_ids(blob: bytes) -> tuple[int, ...]:
    """The token ids of a blob made by `pack_ids`."""
    return struct.unpack(f"<{len(blob) // 4}I", blob)


def parts_to_items(role: Role, parts: Sequence[Part]) -> list[dict[str, Any]]:
    """A turn's parts as conversation-file content items (what the store keeps as JSON)."""
    # imported here: conversation pulls torch in through the vocabulary, and the store (used by
    # light tools and by a crash-test child process) should not pay for it until turns are stored
    from mio_agent.conversation import Conversation, Turn, conversation_to_json

    if not parts:
        return []
    items: list[dict[str, Any]] = conversation_to_json(Conversation("std", (Turn(role, tuple(parts)),)))[
        "turns"
    ][0]["content"]
    return items


def items_to_parts(role: str, items: list[Any]) -> tuple[Part, ...]:
    """The parts of conversation-file content items stored by `parts_to_items`."""
    from mio_agent.conversation import conversation_from_json

    if not items:
        return ()
    return conversation_from_json({"mode": "std", "turns": [{"role": role, "content": items}]}).turns[0].parts


# -- records --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session's row: `created`/`ended` are Unix times; `status` is open, closed or error."""

    id: str
    created: float
    mode: str
    config: Mapping[str, Any]
    status: str
    ended: float | None
    turns: int
    events: int


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A stored turn: its token ids as the model saw them, its parts, why it ended and its timings."""

    turn: int
    role: str
    token_ids: tuple[int, ...]
    parts: tuple[Part, ...]
    reason: str | None
    timings: Mapping[str, Any]
    recorded: float


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """A media file of a session (absolute path); `sha256` and `duration_s` are None until it is complete."""

    turn: int
    kind: str
    path: Path
    sha256: str | None
    duration_s: float | None
    size: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A stored event: its place `seq` in the session (from 0) and its `event_to_dict` form."""

    seq: int
    data: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.data["type"])

    def event(self, payloads: Mapping[str, bytes] | None = None) -> Event:
        """The event object; events with bytes (audio, video, images) need their `payloads`."""
        return event_from_dict(self.data, payloads=payloads)


@dataclass(frozen=True, slots=True)
class SessionData:
    """Everything stored about one session, enough to resume its conversation or replay its events."""

    info: SessionInfo
    turns: tuple[TurnRecord, ...]
    media: tuple[MediaRecord, ...]
    events: tuple[StoredEvent, ...]

    def conversation(self) -> Conversation:
        """The stored turns as a Conversation (a `custom` session keeps its prompt in config["system"])."""
        from mio_agent.conversation import Conversation, Turn

        system = self.info.config.get("system") if self.info.mode == "custom" else None
        turns = tuple(Turn("user" if r.role == "user" else "assistant", r.parts) for r in self.turns)
        return Conversation(mode=self.info.mode, turns=turns, system=system)  # type: ignore[arg-type]


# -- rows of the sessions table ------------------------------------------------------------------

SELECT_INFO = (
    "SELECT id, created, mode, config, status, ended, "
    "(SELECT COUNT(*) FROM turns WHERE session = sessions.id), "
    "(SELECT COUNT(*) FROM events WHERE session = sessions.id) FROM sessions"
)


def info_from_row(row: Sequence[Any]) -> SessionInfo:
    """The SessionInfo of a row selected by `SELECT_INFO` (its columns in that order)."""
    return SessionInfo(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])
