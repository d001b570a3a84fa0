"""StoreWriter: the session store's one writer thread, which batches event inserts into commits."""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mio_agent.exceptions import StoreError
from mio_agent.store_queries import HAS_SESSION, INSERT_EVENT
from mio_agent.store_schema import connect

__all__ = ["EventRow", "StoreWriter"]

# the store's own logger name: these messages were logged by mio_agent.store before it was split
log = logging.getLogger("mio_agent.store")

EventRow = tuple[str, int, int, str, float, str]
"""An events table row: session, seq, turn, type, t, json."""


# -- the writer thread's work items ---------------------------------------------------------------


@dataclass(slots=True)
class _Insert:
    ticket: int
    row: EventRow


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


class StoreWriter:
    """The write side of a SessionStore: the write connection and the one thread that uses it.

    Producers queue items under `_lock`; the thread inserts queued events into an open transaction
    and commits it after `commit_interval` seconds or `batch_max` events, before any other item,
    and on a flush. `_acked` is the last ticket committed. After a failed write `_error` is set,
    what was not committed is lost and every later call raises it.
    """

    def __init__(self, path: Path, *, commit_interval: float, batch_max: int, queue_max: int) -> None:
        """Open the write connection (creating the schema); `_start_writer` starts the thread."""
        if commit_interval < 0 or batch_max < 1 or queue_max < 1:
            raise StoreError("commit_interval must be >= 0 seconds, batch_max and queue_max >= 1")
        self.path = path
        self._interval = commit_interval
        self._batch_max = batch_max
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_max)
        self._lock = threading.Lock()
        self._tickets = 0
        self._acked = 0
        self._closed = False
        self._error: StoreError | None = None
        self._wconn = connect(path, writer=True)
        # writer-thread state
        self._in_tx = False
        self._pending = 0
        self._pending_ticket = 0
        self._deadline = 0.0
        self._thread = threading.Thread(
            target=self._writer_main, name=f"mio-store-writer:{path}", daemon=True
        )

    def _start_writer(self) -> None:
        self._thread.start()

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
            self._wconn.execute(INSERT_EVENT, item.row)
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
                if item.session is not None and not conn.execute(HAS_SESSION, (item.session,)).fetchone():
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

    def _queue_insert(self, row: EventRow, *, block: bool) -> int | None:
        """Queue an event row, with `_lock` held by the caller; its ticket, or None when `block` is
        False and the queue is full."""
        ticket = self._tickets + 1
        item = _Insert(ticket, row)
        if block:
            self._queue.put(item)
        else:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                return None
        self._tickets = ticket
        return ticket

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

    def _stop_writer(self) -> bool:
        """Commit what is queued, stop the thread and close the write connection; False when that
        was done already."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(_Stop())
        self._thread.join()
        self._wconn.close()
        return True

    @property
    def closed(self) -> bool:
        return self._closed
