"""Session store queries: the SQL that reads sessions, turns, media and events on a given connection."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mio_agent.exceptions import StoreError
from mio_agent.store_records import (
    SELECT_INFO,
    MediaRecord,
    SessionData,
    SessionInfo,
    StoredEvent,
    TurnRecord,
    info_from_row,
    items_to_parts,
    unpack_ids,
)

__all__ = [
    "HAS_SESSION",
    "INSERT_EVENT",
    "events_after",
    "first_seq",
    "list_infos",
    "load_session",
    "session_info",
]

HAS_SESSION = "SELECT 1 FROM sessions WHERE id = ?"
INSERT_EVENT = "INSERT INTO events (session, seq, turn, type, t, json) VALUES (?, ?, ?, ?, ?, ?)"
_SELECT_EVENTS_AFTER = "SELECT seq, json FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?"
_SELECT_TURNS = "SELECT turn, role, token_ids, parts, reason, timings, recorded FROM turns WHERE session = ? ORDER BY turn"


def first_seq(conn: sqlite3.Connection, session: str) -> int:
    """The seq the next event of an existing session gets; StoreError for an unknown session."""
    if conn.execute(HAS_SESSION, (session,)).fetchone() is None:
        raise StoreError(f"unknown session {session!r}: create it with create_session() first")
    row = conn.execute("SELECT MAX(seq) FROM events WHERE session = ?", (session,)).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def list_infos(conn: sqlite3.Connection) -> list[SessionInfo]:
    """Every session's row, oldest first."""
    return [info_from_row(r) for r in conn.execute(SELECT_INFO + " ORDER BY created, id")]


def session_info(conn: sqlite3.Connection, session_id: str, path: Path) -> SessionInfo:
    """One session's row; StoreError naming recent sessions of the store at `path` when there is none."""
    row = conn.execute(SELECT_INFO + " WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY created DESC LIMIT 5")]
        hint = f"; recent sessions: {', '.join(known)}" if known else "; it holds none"
        raise StoreError(f"no session {session_id!r} in {path}{hint}")
    return info_from_row(row)


def events_after(conn: sqlite3.Connection, session_id: str, after: int, batch: int) -> list[tuple[int, str]]:
    """Up to `batch` (seq, JSON) rows of a session's events with seq > `after`, in order."""
    return conn.execute(_SELECT_EVENTS_AFTER, (session_id, after, batch)).fetchall()


def load_session(
    conn: sqlite3.Connection, session_id: str, path: Path, root: Path, *, events: bool
) -> SessionData:
    """A session's row, turns, media (paths resolved against the store folder `root`) and, with
    `events`, its events, read in one transaction so that they agree."""
    conn.execute("BEGIN")
    try:
        info = session_info(conn, session_id, path)
        turns = tuple(
            TurnRecord(
                r[0],
                r[1],
                unpack_ids(r[2]),
                items_to_parts(r[1], json.loads(r[3])),
                r[4],
                json.loads(r[5]),
                r[6],
            )
            for r in conn.execute(_SELECT_TURNS, (session_id,))
        )
        media = tuple(
            MediaRecord(r[0], r[1], root / r[2], r[3], r[4], r[5])
            for r in conn.execute(
                "SELECT turn, kind, path, sha256, duration_s, size FROM media "
                "WHERE session = ? ORDER BY turn, path",
                (session_id,),
            )
        )
        evs: tuple[StoredEvent, ...] = ()
        if events:
            evs = tuple(
                StoredEvent(seq, json.loads(text))
                for seq, text in conn.execute(
                    "SELECT seq, json FROM events WHERE session = ? ORDER BY seq", (session_id,)
                )
            )
        return SessionData(info, turns, media, evs)
    finally:
        conn.execute("COMMIT")
