"""SessionStore: every session's turns, tokens, events and media files in one SQLite database (WAL)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import math
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mio_agent.events import Event, event_to_dict
from mio_agent.exceptions import StoreError
from mio_agent.store_records import (
    SCHEMA_VERSION,
    SELECT_INFO,
    MediaRecord,
    SessionData,
    SessionInfo,
    StoredEvent,
    TurnRecord,
    check_schema,
    check_session_id,
    file_sha256,
    info_from_row,
    items_to_parts,
    new_session_id,
    pack_ids,
    parts_to_items,
    to_json,
    unpack_ids,
)

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

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 120.0
"""How long a connection waits for another's write lock before it gives up."""

DB_NAME = "sessions.sqlite3"
"""The database's file name inside a store folder."""

_MODES = ("std", "voice", "custom")
_ROLES = ("user", "assistant")
_T = TypeVar("_T")
_SELECT_EVENTS_AFTER = "SELECT seq, json FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?"
_SELECT_TURNS = "SELECT turn, role, token_ids, parts, reason, timings, recorded FROM turns WHERE session = ? ORDER BY turn"
_HAS_SESSION = "SELECT 1 FROM sessions WHERE id = ?"
_INSERT_EVENT = "INSERT INTO events (session, seq, turn, type, t, json) VALUES (?, ?, ?, ?, ?, ?)"


# -- the writer thread's work items ---------------------------------------------------------------


@dataclass(slots=True)
class _Insert:
    ticket: int
    row: tuple[str, int, int, str, float, str]


@dataclass(slots=True)
class _Flush:
    future: Future[int]


@dataclass(slots=True)
class _Call:
    sql: str
    params: tuple[Any, ...]
    session: str | None  # must exist
    future: Future[int]


class _Stop:
    pass


_Item = _Insert | _Flush | _Call | _Stop
_OPEN: weakref.WeakSet[SessionStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    # the writer is a daemon thread: without this, events still queued at exit would be dropped
    for store in list(_OPEN):
        store.close()


class SessionStore:
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
        if commit_interval < 0 or batch_max < 1 or queue_max < 1:
            raise StoreError("commit_interval must be >= 0 seconds, batch_max and queue_max >= 1")
        self.path = path
        self.root = path.parent
        self._interval = commit_interval
        self._batch_max = batch_max
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_max)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._next_seq: dict[str, int] = {}
        self._tickets = 0
        self._acked = 0
        self._closed = False
        self._error: StoreError | None = None
        self._wconn = self._connect(path, writer=True)
        try:
            self._rconn = self._connect(path, writer=False)
        except BaseException:
            self._wconn.close()
            raise
        # writer-thread state
        self._in_tx = False
        self._pending = 0
        self._pending_ticket = 0
        self._deadline = 0.0
        self._thread = threading.Thread(
            target=self._writer_main, name=f"mio-store-writer:{path}", daemon=True
        )
        self._thread.start()
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

    # -- connections and schema -------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path, *, writer: bool) -> sqlite3.Connection:
        try:
            # every session log holds its own connection to the one file: under load a writer may
            # wait for the others' batches (10 s was seen to run out on 2 busy cores)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the session store {path}: {exc}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                log.warning("session store %s: WAL is unavailable here (journal mode %s)", path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if writer:
                check_schema(conn, path)
            else:
                conn.execute("PRAGMA query_only=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{path} is not a usable session store ({exc}); move it away or choose another session dir"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    # -- writer thread ----------------------------------------------------------------------------

    def _writer_main(self) -> None:
        while True:
            item = self._next_item()
            if item is None:
                self._commit()
            elif isinstance(item, _Insert):
                self._insert(item)
            elif isinstance(item, _Flush):
                self._commit()
                if self._error is not None:
                    item.future.set_exception(self._error)
                else:
                    item.future.set_result(self._acked)
            elif isinstance(item, _Call):
                self._commit()
                self._run_call(item)
            else:
                self._commit()
                return

    def _next_item(self) -> _Item | None:
        """The next queued item, or None when the open transaction is due for its commit."""
        if not self._in_tx:
            return self._queue.get()
        if self._pending >= self._batch_max:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def _insert(self, item: _Insert) -> None:
        if self._error is not None:
            return
        try:
            if not self._in_tx:
                self._wconn.execute("BEGIN IMMEDIATE")
                self._in_tx = True
                self._deadline = time.monotonic() + self._interval
            self._wconn.execute(_INSERT_EVENT, item.row)
        except Exception as exc:  # whatever it is, the writer must live on to answer flush() and close()
            self._fail(exc)
            return
        self._pending += 1
        self._pending_ticket = item.ticket

    def _commit(self) -> None:
        if not self._in_tx:
            return
        try:
            self._wconn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        self._in_tx = False
        self._pending = 0
        self._acked = self._pending_ticket

    def _run_call(self, item: _Call) -> None:
        if self._error is not None:
            item.future.set_exception(self._error)
            return
        conn = self._wconn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if item.session is not None and not conn.execute(_HAS_SESSION, (item.session,)).fetchone():
                    raise StoreError(
                        f"unknown session {item.session!r}: create it with create_session() first"
                    )
                count = conn.execute(item.sql, item.params).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except StoreError as exc:
            item.future.set_exception(exc)
        except Exception as exc:  # sqlite3 errors, or an integer out of SQLite's range
            item.future.set_exception(StoreError(f"session store {self.path}: {exc}"))
        else:
            item.future.set_result(count)

    def _fail(self, exc: Exception) -> None:
        lost = self._pending
        self._error = StoreError(
            f"session store {self.path}: writing failed ({exc}); events up to #{self._acked} are saved, "
            f"the {lost} after them are lost and nothing more is written. Check the disk, then reopen the store."
        )
        log.error("%s", self._error)
        if self._in_tx:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("ROLLBACK")
        self._in_tx = False
        self._pending = 0

    # -- producers --------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError(f"session store {self.path} is closed")
        if self._error is not None:
            raise self._error

    def _put(self, item: _Item) -> None:
        with self._lock:
            self._check_usable()
            self._queue.put(item)

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._check_usable()
        with self._read_lock:
            try:
                return fn(self._rconn)
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: reading failed: {exc}") from None

    def _first_seq(self, session: str) -> int:
        def query(conn: sqlite3.Connection) -> int:
            if conn.execute(_HAS_SESSION, (session,)).fetchone() is None:
                raise StoreError(f"unknown session {session!r}: create it with create_session() first")
            row = conn.execute("SELECT MAX(seq) FROM events WHERE session = ?", (session,)).fetchone()
            return 0 if row[0] is None else int(row[0]) + 1

        return self._read(query)

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
                seq = self._first_seq(ev.session)
            if not -(1 << 63) <= ev.turn < 1 << 63:
                raise StoreError(f"event {ev.type}: turn {ev.turn} is out of range")
            ticket = self._tickets + 1
            # SQLite turns NaN into NULL: keep a usable number in the column, the JSON keeps the original
            t = ev.t if math.isfinite(ev.t) else 0.0
            item = _Insert(ticket, (ev.session, seq, ev.turn, ev.type, t, line))
            if block:
                self._queue.put(item)
            else:
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    return None
            self._next_seq[ev.session] = seq + 1
            self._tickets = ticket
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

    @property
    def acked(self) -> int:
        """The highest ticket committed: every event with a ticket up to it is on disk."""
        return self._acked

    def flush(self, timeout: float | None = None) -> int:
        """Commit everything appended so far and wait for it; returns `acked`."""
        future: Future[int] = Future()
        self._put(_Flush(future))
        return future.result(timeout)

    def _write(self, sql: str, params: tuple[Any, ...], *, session: str | None = None) -> int:
        """Run one statement in its own committed transaction; its row count. `session` must exist."""
        future: Future[int] = Future()
        self._put(_Call(sql, params, session, future))
        return future.result()

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
        return self._read(
            lambda conn: [info_from_row(r) for r in conn.execute(SELECT_INFO + " ORDER BY created, id")]
        )

    def session_info(self, session_id: str) -> SessionInfo:
        """One session's row; StoreError naming recent sessions when there is none."""
        return self._read(functools.partial(self._info_of, session_id))

    def _info_of(self, session_id: str, conn: sqlite3.Connection) -> SessionInfo:
        row = conn.execute(SELECT_INFO + " WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY created DESC LIMIT 5")]
            hint = f"; recent sessions: {', '.join(known)}" if known else "; it holds none"
            raise StoreError(f"no session {session_id!r} in {self.path}{hint}")
        return info_from_row(row)

    def iter_events(self, session_id: str, *, after: int = -1, batch: int = 500) -> Iterator[StoredEvent]:
        """The committed events of a session in order, from seq `after + 1`, read `batch` at a time."""

        def page(conn: sqlite3.Connection, after: int) -> list[tuple[int, str]]:
            return conn.execute(_SELECT_EVENTS_AFTER, (session_id, after, batch)).fetchall()

        last = after
        while True:
            rows = self._read(functools.partial(page, after=last))
            for seq, text in rows:
                yield StoredEvent(seq, json.loads(text))
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def load_session(self, session_id: str, *, events: bool = True) -> SessionData:
        """A session's row, turns, media and (unless `events=False`) its events, as one snapshot."""
        self.flush()

        def query(conn: sqlite3.Connection) -> SessionData:
            conn.execute("BEGIN")
            try:
                info = self._info_of(session_id, conn)
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
                    MediaRecord(r[0], r[1], self.root / r[2], r[3], r[4], r[5])
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

        return self._read(query)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Stop())
        self._thread.join()
        self._wconn.close()
        with self._read_lock:
            self._rconn.close()
        _OPEN.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

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
