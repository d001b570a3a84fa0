"""Opening the session store while another connection holds the database: retried, then a clear error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mio_agent import store_schema
from mio_agent.exceptions import StoreError


class _Clock:
    """The `time` module seen by store_schema: a clock that only moves when told, and a sleep that
    runs `on_sleep` (here: the other connection lets go)."""

    def __init__(self, on_sleep: object = None, step: float = 0.0) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.on_sleep = on_sleep
        self.step = step

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += self.step
        if callable(self.on_sleep):
            self.on_sleep()


def _held(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # nobody else may even read the file
    return holder


def test_a_store_opens_once_the_other_connection_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "sessions.sqlite3"
    holder = _held(db)
    clock = _Clock(on_sleep=lambda: holder.execute("COMMIT"))
    monkeypatch.setattr(store_schema, "time", clock)
    monkeypatch.setattr(store_schema, "BUSY_TIMEOUT_S", 0.05)  # SQLite's own wait, per attempt
    conn = store_schema.connect(db, writer=True)
    try:
        assert clock.slept == [0.01]  # refused once (locked), waited, then opened
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_schema.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
        holder.close()


def test_a_store_held_too_long_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "sessions.sqlite3"
    holder = _held(db)
    clock = _Clock(step=1.0)  # each wait takes a second of the deadline
    monkeypatch.setattr(store_schema, "time", clock)
    monkeypatch.setattr(store_schema, "BUSY_TIMEOUT_S", 0.05)  # the deadline: gone after one wait
    try:
        with pytest.raises(StoreError, match="database is locked") as info:
            store_schema.connect(db, writer=True)
        assert str(db) in str(info.value) and clock.slept == [0.01]
    finally:
        holder.close()
