"""Session store database: its tables, their version check and how its connections are opened."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from mio_agent.exceptions import StoreError

__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "check_schema", "connect"]

# the store's own logger name: these messages were logged by mio_agent.store before it was split
log = logging.getLogger("mio_agent.store")

SCHEMA_VERSION = 1
"""Kept in `PRAGMA user_version`; a database of a newer version is refused, never altered."""

BUSY_TIMEOUT_S = 120.0
"""How long a connection waits for another's write lock before it gives up."""

_SCHEMA = (
    "CREATE TABLE sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, mode TEXT NOT NULL, "
    "config TEXT NOT NULL, status TEXT NOT NULL, ended REAL)",
    "CREATE TABLE turns (session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, "
    "turn INTEGER NOT NULL, role TEXT NOT NULL, token_ids BLOB NOT NULL, parts TEXT NOT NULL, "
    "reason TEXT, timings TEXT NOT NULL, recorded REAL NOT NULL, PRIMARY KEY (session, turn)) WITHOUT ROWID",
    "CREATE TABLE events (session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, "
    "seq INTEGER NOT NULL, turn INTEGER NOT NULL, type TEXT NOT NULL, t REAL NOT NULL, json TEXT NOT NULL, "
    "PRIMARY KEY (session, seq)) WITHOUT ROWID",
    "CREATE TABLE media (session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, "
    "turn INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT, duration_s REAL, "
    "size INTEGER NOT NULL, PRIMARY KEY (session, path))",
)


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new database; refuse a newer schema or a foreign database."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} holds session store schema {version}, written by a newer mio-agent; this one "
                f"reads up to {SCHEMA_VERSION}. Upgrade mio-agent or choose another session dir."
            )
        if version == 0:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise StoreError(
                    f"{path} is an SQLite database but not a mio-agent session store (tables: "
                    f"{', '.join(tables)}); choose another session dir"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection to the database at `path` in WAL mode with FULL sync; the writer's also checks
    (or creates) the schema, a reader's is query-only. StoreError when it is not a usable store.

    Opening is retried while the database is busy, for up to `BUSY_TIMEOUT_S`: SQLite answers some
    lock conflicts at once instead of through its busy timeout (many session logs opening one new
    file together, e.g. while its journal mode or schema is being set up by another)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            return _connect_once(path, writer=writer)
        except _Busy as busy:
            if time.monotonic() + delay > deadline:
                raise StoreError(
                    f"{path} is not a usable session store ({busy.error}); move it away or choose another "
                    "session dir"
                ) from None
            time.sleep(delay)  # on a worker thread: opening a store never runs on the event loop
            delay = min(delay * 2, 0.5)


class _Busy(Exception):
    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


def _connect_once(path: Path, *, writer: bool) -> sqlite3.Connection:
    try:
        # every session log holds its own connection to the one file: under load a writer may
        # wait for the others' batches (10 s was seen to run out on 2 busy cores)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
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
    except sqlite3.OperationalError as exc:
        conn.close()
        if _busy(exc):
            raise _Busy(exc) from None
        raise StoreError(
            f"{path} is not a usable session store ({exc}); move it away or choose another session dir"
        ) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"{path} is not a usable session store ({exc}); move it away or choose another session dir"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn
