"""SessionStore: every session's turns, tokens, events and media files in one SQLite database (WAL)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import math
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mio_agent import store_queries
from mio_agent.events import Event, event_to_dict
from mio_agent.exceptions import StoreError
from mio_agent.store_records import (
    SCHEMA_VERSION,
    MediaRecord,
    SessionData,
    SessionInfo,
    StoredEvent,
    TurnRecord,
    check_session_id,
    file_sha256,
    new_session_id,
    pack_ids,
    parts_to_items,
    to_json,
)

# re-exported: it was defined here before the connection code moved to store_schema
from mio_agent.store_schema import BUSY_TIMEOUT_S as BUSY_TIMEOUT_S
from mio_agent.store_schema import connect
from mio_agent.store_writer import StoreWriter

if TYPE_CHECKING:
    from mio_agent.conversation import Part, Role

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "AsyncSessionStore",
    "MediaRecord",
    "SessionData",
    "SessionInfo",
    "SessionStore",
    "StoreError",
    "StoredEvent",
    "TurnRecord",
    "file_sha256",
    "new_session_id",
]

DB_NAME = "sessions.sqlite3"
"""The database's file name inside a store folder."""

_MODES = ("std", "voice", "custom")
_ROLES = ("user", "assistant")
_T = TypeVar("_T")
_OPEN: weakref.WeakSet[SessionStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    # the writer is a daemon thread: without this, events still queued at exit would be dropped
    for store in list(_OPEN):
        store.close()


class SessionStore(StoreWriter):
    """Sessions, turns, events and media in `<folder>/sessions.sqlite3` (SQLite in WAL mode).

    Writes go through one writer thread that owns the write connection; any thread may call any
    method. `append_event` only encodes the event and queues it (it blocks only while
    `queue_max` events wait, which bounds memory); the writer inserts queued events and commits
    them in batches: after `commit_interval` seconds, `batch_max` events, or a `flush()`.

    Acknowledgement: an event is acknowledged once the transaction holding it has committed,
    i.e. when `flush()` returns after the event was appended, or once `acked` reaches the ticket
    `append_event` returned. Commits run with `synchronous=FULL`: the WAL is fsynced at each
    commit, so an acknowledged event survives a killed process and a power cut alike
    (`NORMAL` would only survive the former). Batching keeps that to a few fsyncs a second.
    `create_session`, `record_turn`, `add_media` and `end_session` commit before they return.

    One process writes a given session at a time (sequence numbers are kept in memory); several
    processes may share a database for different sessions. Readers see committed data only.
    """

    def __init__(
        self,
        path: Path,
        *,
        commit_interval: float = 0.05,
        batch_max: int = 512,
        queue_max: int = 8192,
    ) -> None:
        """Use `SessionStore.open`; this takes the database file's path."""
        super().__init__(path, commit_interval=commit_interval, batch_max=batch_max, queue_max=queue_max)
        self.root = path.parent
        self._read_lock = threading.Lock()
        self._next_seq: dict[str, int] = {}
        try:
            self._rconn = connect(path, writer=False)
        except BaseException:
            self._wconn.close()
            raise
        self._start_writer()
        _OPEN.add(self)

    @classmethod
    def open(cls, path: str | Path, **options: Any) -> SessionStore:
        """Open or create the store of a folder (`<path>/sessions.sqlite3`), or a database file given
        by a path ending in `.sqlite3`/`.db`. `options`: commit_interval (seconds), batch_max, queue_max."""
        p = Path(path).expanduser()
        db = p if p.suffix in (".sqlite3", ".db") or p.is_file() else p / DB_NAME
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the session folder {db.parent}: {exc.strerror or exc}") from None
        return cls(db, **options)

    # -- events -----------------------------------------------------------------------------------

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_usable()
        with self._read_lock:
            try:
                return fn(self._rconn)
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: reading failed: {exc}") from None

    def _append(self, ev: Event, encoded: str | None, *, block: bool) -> int | None:
        line = encoded if encoded is not None else json.dumps(event_to_dict(ev), separators=(",", ":"))
        if not block and not self._lock.acquire(blocking=False):
            return None
        if block:
            self._lock.acquire()
        try:
            self._check_usable()
            seq = self._next_seq.get(ev.session)
            if seq is None:
                if not block:
                    return None
                seq = self._read(functools.partial(store_queries.first_seq, session=ev.session))
            if not -(1 << 63) <= ev.turn < 1 << 63:
                raise StoreError(f"event {ev.type}: turn {ev.turn} is out of range")
            # SQLite turns NaN into NULL: keep a usable number in the column, the JSON keeps the original
            t = ev.t if math.isfinite(ev.t) else 0.0
            ticket = self._queue_insert((ev.session, seq, ev.turn, ev.type, t, line), block=block)
            if ticket is None:
                return None
            self._next_seq[ev.session] = seq + 1
            return ticket
        finally:
            self._lock.release()

    def append_event(self, ev: Event, *, encoded: str | None = None) -> int:
        """Queue an event for its session; returns its ticket (1, 2, … in append order on this store).

        The event is acknowledged once `acked >= ticket` (see the class notes). `encoded` is the
        event's `json.dumps(event_to_dict(ev))` when the caller has made it already. Raises
        StoreError for an unknown session or a failed or closed store.
        """
        ticket = self._append(ev, encoded, block=True)
        assert ticket is not None
        return ticket

    def try_append_event(self, ev: Event, *, encoded: str | None = None) -> int | None:
        """`append_event` that never waits: None when it would (full queue, busy lock, uncached session)."""
        return self._append(ev, encoded, block=False)

    def create_session(
        self, mode: str = "voice", config: Mapping[str, Any] | None = None, *, session_id: str | None = None
    ) -> str:
        """Create a session (status "open") and return its id; `config` is any JSON-safe mapping."""
        if mode not in _MODES:
            raise StoreError(f"session mode {mode!r}: expected one of {', '.join(_MODES)}")
        config_json = to_json(dict(config or {}), "session config")
        for _ in range(8):
            sid = session_id if session_id is not None else new_session_id()
            check_session_id(sid)
            row = (sid, time.time(), mode, config_json, "open")
            if self._write("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?, ?, ?, NULL)", row):
                with self._lock:
                    self._next_seq[sid] = 0
                return sid
            if session_id is not None:
                raise StoreError(f"session {sid!r} already exists: choose another id or resume it")
        raise StoreError("could not find a free session id")  # pragma: no cover - 8 random collisions

    def end_session(self, session_id: str, status: str = "closed") -> None:
        """Mark a session ended with `status` (e.g. closed, error), after committing its events."""
        params = (status, time.time(), session_id)
        if not self._write("UPDATE sessions SET status = ?, ended = ? WHERE id = ?", params):
            raise StoreError(f"unknown session {session_id!r}")

    def record_turn(
        self,
        session_id: str,
        turn: int,
        role: Role,
        *,
        token_ids: Sequence[int] = (),
        parts: Sequence[Part] = (),
        reason: str | None = None,
        timings: Mapping[str, Any] | None = None,
    ) -> None:
        """Store (or replace) turn `turn` of a session: its token ids, its parts (conversation-file
        items), why it ended (assistant turns) and its timings in seconds by stage."""
        if role not in _ROLES:
            raise StoreError(f"turn role {role!r}: expected 'user' or 'assistant'")
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
            raise StoreError(f"turn index must be an integer >= 0, got {turn!r}")
        items = to_json(parts_to_items(role, parts), "turn parts")
        row = (
            session_id,
            turn,
            role,
            pack_ids(token_ids),
            items,
            reason,
            to_json(dict(timings or {}), "turn timings"),
            time.time(),
        )
        self._write("INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row, session=session_id)

    def add_media(
        self,
        session_id: str,
        turn: int,
        kind: str,
        path: str | Path,
        *,
        sha256: str | None = None,
        duration_s: float | None = None,
        size: int | None = None,
    ) -> None:
        """Record (or update) a media file of a session; `size` defaults to the file's size now.
        Paths inside the store folder are stored relative to it, so the folder can be moved."""
        p = Path(path).absolute()
        if size is None:
            try:
                size = p.stat().st_size
            except OSError as exc:
                raise StoreError(f"media file {p}: {exc.strerror or exc}") from None
        try:
            stored = p.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            stored = str(p)
        row = (session_id, turn, kind, stored, sha256, duration_s, size)
        self._write("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?, ?, ?)", row, session=session_id)

    # -- readers ----------------------------------------------------------------------------------

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, oldest first."""
        return self._read(store_queries.list_infos)

    def session_info(self, session_id: str) -> SessionInfo:
        """One session's row; StoreError naming recent sessions when there is none."""
        return self._read(lambda conn: store_queries.session_info(conn, session_id, self.path))

    def iter_events(self, session_id: str, *, after: int = -1, batch: int = 500) -> Iterator[StoredEvent]:
        """The committed events of a session in order, from seq `after + 1`, read `batch` at a time."""
        last = after
        while True:
            rows = self._read(
                functools.partial(store_queries.events_after, session_id=session_id, after=last, batch=batch)
            )
            for seq, text in rows:
                yield StoredEvent(seq, json.loads(text))
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def load_session(self, session_id: str, *, events: bool = True) -> SessionData:
        """A session's row, turns, media and (unless `events=False`) its events, as one snapshot."""
        self.flush()
        return self._read(
            lambda conn: store_queries.load_session(conn, session_id, self.path, self.root, events=events)
        )

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (idempotent)."""
        if not self._stop_writer():
            return
        with self._read_lock:
            self._rconn.close()
        _OPEN.discard(self)

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSessionStore:
    """A SessionStore for asyncio code: nothing here blocks the event loop.

    `append_event` queues at once when it can and otherwise waits in a worker thread; `run`
    calls any other method of the store in a worker thread:
    `await astore.run(astore.store.record_turn, sid, 3, "assistant", token_ids=ids)`.
    """

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    @classmethod
    async def open(cls, path: str | Path, **options: Any) -> AsyncSessionStore:
        return cls(await asyncio.to_thread(SessionStore.open, path, **options))

    async def append_event(self, ev: Event) -> int:
        ticket = self.store.try_append_event(ev)
        if ticket is None:
            ticket = await asyncio.to_thread(self.store.append_event, ev)
        return ticket

    async def run(self, method: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(method, *args, **kwargs)

    async def flush(self) -> int:
        return await asyncio.to_thread(self.store.flush)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
