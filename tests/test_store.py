"""SessionStore: real SQLite files, acknowledgement by commit, schema versions, a writer killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mio_agent import store as store_module
from mio_agent.conversation import ImagePart, SpeechPart, TextPart
from mio_agent.events import Metrics, SpeechCodes, TextDelta, TextIn, TurnEnded, UserSpeechStarted
from mio_agent.store import (
    DB_NAME,
    SCHEMA_VERSION,
    AsyncSessionStore,
    SessionStore,
    StoreError,
    file_sha256,
    new_session_id,
)


def count_events(db: Path, session: str) -> int:
    """Events visible to an independent connection, i.e. committed ones."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events WHERE session = ?", (session,)).fetchone()[0])
    finally:
        conn.close()


def wait_for(condition: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.005)
    return False


def test_all_is_complete() -> None:
    for name in store_module.__all__:
        assert hasattr(store_module, name), name


def test_sessions_events_and_their_order_come_back(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        assert st.path == tmp_path / DB_NAME
        a = st.create_session("voice", {"model": "embedded", "temperature": 0.7})
        b = st.create_session("custom", {"system": "Be brief."})
        written = [
            UserSpeechStarted(session=a, turn=1, t=1.5),
            TextIn(session=a, turn=1, text="héllo\nthere", t=2.0),
            SpeechCodes(session=a, turn=2, layer=0, codes=(1, 2, 1023)),
            Metrics(session=a, turn=2, stage="prefill", seconds=0.031, extra={"tokens": 12, "cached": True}),
            TurnEnded(session=a, turn=2, reason="interrupted", tokens=7),
        ]
        tickets = [st.append_event(ev) for ev in written]
        st.append_event(TextDelta(session=b, turn=0, text="other session"))
        assert tickets == [1, 2, 3, 4, 5]
        assert st.flush() == 6
        data = st.load_session(a)
        assert [e.seq for e in data.events] == [0, 1, 2, 3, 4]
        assert [e.event() for e in data.events] == written
        assert data.info.mode == "voice" and data.info.config == {"model": "embedded", "temperature": 0.7}
        assert data.info.status == "open" and data.info.events == 5
        st.end_session(a, "closed")
        infos = {i.id: i for i in st.list_sessions()}
        assert set(infos) == {a, b}
        assert infos[a].status == "closed" and infos[a].ended is not None and infos[b].events == 1
        assert [e.data["text"] for e in st.iter_events(b)] == ["other session"]
    assert (tmp_path / (DB_NAME + "-wal")).exists() or (tmp_path / DB_NAME).stat().st_size > 0


def test_turns_keep_tokens_parts_reason_and_timings(tmp_path: Path) -> None:
    speech = SpeechPart((5, 6, 7), ((1, 2, 3), (4, 5, 6), (7, 8, 9)))
    image = ImagePart(tuple(range(32)))
    with SessionStore.open(tmp_path) as st:
        sid = st.create_session("std")
        st.record_turn(sid, 0, "user", token_ids=[1, 70000, 2**32 - 1], parts=[TextPart("look"), image])
        st.record_turn(sid, 1, "assistant", token_ids=[9], parts=[speech], reason="interrupted")
        # a reply cut back after an interruption replaces the stored turn
        st.record_turn(
            sid, 1, "assistant", token_ids=[9, 10], parts=[TextPart("ok")], reason="completed",
            timings={"prefill": 0.012, "first_token": 0.05},
        )  # fmt: skip
        st.record_turn(sid, 2, "user", token_ids=[], parts=[])
        data = st.load_session(sid, events=False)
    assert [t.turn for t in data.turns] == [0, 1, 2]
    assert data.turns[0].token_ids == (1, 70000, 2**32 - 1)
    assert data.turns[0].parts == (TextPart("look"), image)
    assert data.turns[1].parts == (TextPart("ok"),) and data.turns[1].token_ids == (9, 10)
    assert data.turns[1].reason == "completed" and data.turns[1].timings == {
        "prefill": 0.012,
        "first_token": 0.05,
    }
    assert data.turns[2].parts == () and data.turns[2].token_ids == ()
    conv = data.conversation()
    assert conv.mode == "std" and [t.role for t in conv.turns] == ["user", "assistant", "user"]

    with SessionStore.open(tmp_path) as st, pytest.raises(StoreError, match="token ids"):
        st.record_turn(sid, 3, "assistant", token_ids=[-1])


def test_media_paths_are_relative_to_the_store_folder(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path / "store") as st:
        sid = st.create_session("voice")
        wav = tmp_path / "store" / sid / "user-1.wav"
        wav.parent.mkdir()
        wav.write_bytes(b"RIFF" + bytes(100))
        st.add_media(sid, 1, "user_audio", wav, sha256=file_sha256(wav), duration_s=0.5)
        outside = tmp_path / "elsewhere.png"
        outside.write_bytes(b"png")
        st.add_media(sid, 2, "image", outside)
        data = st.load_session(sid)
    raw = (
        sqlite3.connect(tmp_path / "store" / DB_NAME)
        .execute("SELECT path FROM media ORDER BY turn")
        .fetchall()
    )
    assert raw[0][0] == f"{sid}/user-1.wav" and Path(raw[1][0]).is_absolute()
    first, second = data.media
    assert first.path == wav and first.size == 104 and first.duration_s == 0.5
    assert first.sha256 == file_sha256(wav) and second.sha256 is None and second.size == 3


def test_unknown_sessions_and_bad_input_are_refused(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        with pytest.raises(StoreError, match="unknown session 'nope'"):
            st.append_event(TextIn(session="nope", turn=0, text="x"))
        with pytest.raises(StoreError, match="unknown session"):
            st.record_turn("nope", 0, "user")
        with pytest.raises(StoreError, match="mode 'loud'"):
            st.create_session("loud")
        with pytest.raises(StoreError, match="not allowed"):
            st.create_session("std", session_id="../escape")
        with pytest.raises(StoreError, match="JSON"):
            st.create_session("std", {"f": object()})
        sid = st.create_session("std", session_id="fixed-1")
        with pytest.raises(StoreError, match="already exists"):
            st.create_session("std", session_id=sid)
        with pytest.raises(StoreError, match=r"no session 'gone'.*fixed-1"):
            st.load_session("gone")
    with pytest.raises(StoreError, match="closed"):
        st.append_event(TextIn(session=sid, turn=0, text="late"))


def test_odd_values_neither_break_nor_stop_the_writer(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        sid = st.create_session("voice")
        st.append_event(Metrics(session=sid, turn=0, stage="x", seconds=float("nan"), t=float("nan")))
        with pytest.raises(StoreError, match="out of range"):
            st.append_event(TextIn(session=sid, turn=1 << 70, text="x"))
        with pytest.raises(StoreError):
            st.add_media(sid, 1 << 70, "image", tmp_path / DB_NAME)
        st.append_event(TextIn(session=sid, turn=1, text="still fine"))
        events = st.load_session(sid).events
        assert st.session_info(sid).events == 2
    assert events[0].data["t"] != events[0].data["t"]  # NaN kept in the JSON
    assert events[1].data["text"] == "still fine"


def test_a_failed_write_is_reported_and_nothing_after_it_is_acknowledged(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        sid = st.create_session("voice")
        st.append_event(TextIn(session=sid, turn=0, text="saved"))
        assert st.flush() == 1
        # a second writer on the same session (not supported) takes the next sequence number
        other = sqlite3.connect(tmp_path / DB_NAME)
        other.execute("INSERT INTO events VALUES (?, 1, 0, 'text.in', 0.0, '{}')", (sid,))
        other.commit()
        other.close()
        st.append_event(TextIn(session=sid, turn=0, text="clashes"))
        with pytest.raises(StoreError, match=r"writing failed .*events up to #1 are saved"):
            st.flush()
        assert st.acked == 1
        with pytest.raises(StoreError, match="writing failed"):
            st.append_event(TextIn(session=sid, turn=0, text="refused"))
    with SessionStore.open(tmp_path) as st:
        assert [e.data.get("text") for e in st.load_session(sid).events] == ["saved", None]


def test_session_ids_sort_by_creation_time() -> None:
    before = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    ids = {new_session_id() for _ in range(100)}
    after = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    assert len(ids) == 100
    for sid in ids:
        stamp, _, rand = sid.rpartition("-")
        assert before <= stamp <= after and len(rand) == 8 and int(rand, 16) >= 0


def test_an_event_is_acknowledged_only_once_committed(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    with SessionStore.open(tmp_path, commit_interval=60.0) as st:
        sid = st.create_session("voice")
        for i in range(10):
            st.append_event(TextDelta(session=sid, turn=0, text=str(i)))
        time.sleep(0.1)
        assert st.acked == 0 and count_events(db, sid) == 0
        assert st.flush() == 10
        assert st.acked == 10 and count_events(db, sid) == 10


def test_commits_come_by_time_and_by_batch_size(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path, commit_interval=0.02) as st:
        sid = st.create_session("voice")
        ticket = st.append_event(TextDelta(session=sid, turn=0, text="soon"))
        assert wait_for(lambda: st.acked >= ticket)
    with SessionStore.open(tmp_path, commit_interval=60.0, batch_max=5) as st:
        sid = st.create_session("voice")
        for i in range(12):
            st.append_event(TextDelta(session=sid, turn=0, text=str(i)))
        assert wait_for(lambda: st.acked == 10)
        time.sleep(0.05)
        assert st.acked == 10 and count_events(tmp_path / DB_NAME, sid) == 10


def test_many_threads_append_without_losing_or_reordering(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path, queue_max=16) as st:
        sid = st.create_session("voice")

        def produce(k: int) -> None:
            for i in range(300):
                st.append_event(TextDelta(session=sid, turn=k, text=f"{k}:{i}"))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        events = st.load_session(sid).events
    assert [e.seq for e in events] == list(range(1200))
    for k in range(4):
        assert [e.data["text"] for e in events if e.data["turn"] == k] == [f"{k}:{i}" for i in range(300)]


def test_a_reopened_store_continues_a_session(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        sid = st.create_session("voice")
        st.append_event(TextDelta(session=sid, turn=0, text="before"))
    with SessionStore.open(tmp_path / DB_NAME) as st:
        assert st.try_append_event(TextDelta(session=sid, turn=1, text="x")) is None  # would need a read
        st.append_event(TextDelta(session=sid, turn=1, text="after"))
        events = st.load_session(sid).events
    assert [(e.seq, e.data["text"]) for e in events] == [(0, "before"), (1, "after")]


def test_wal_mode_and_schema_version_are_set(tmp_path: Path) -> None:
    SessionStore.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_newer_schema_a_foreign_database_and_a_non_database_are_refused(tmp_path: Path) -> None:
    SessionStore.open(tmp_path / "newer").close()
    conn = sqlite3.connect(tmp_path / "newer" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer mio-agent"):
        SessionStore.open(tmp_path / "newer")

    foreign = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE cats (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"not a mio-agent session store.*cats"):
        SessionStore.open(foreign)

    junk = tmp_path / "junk" / DB_NAME
    junk.parent.mkdir()
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable session store"):
        SessionStore.open(junk.parent)


async def test_async_store_appends_and_writes_from_the_event_loop(tmp_path: Path) -> None:
    async with await AsyncSessionStore.open(tmp_path, queue_max=2) as ast:
        sid = await ast.run(ast.store.create_session, "voice")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        tickets = [await ast.append_event(TextDelta(session=sid, turn=0, text=str(i))) for i in range(50)]
        await ast.run(ast.store.record_turn, sid, 0, "assistant", token_ids=[1, 2], reason="completed")
        before = ticks
        assert await ast.flush() == 50
        task.cancel()
        data = await ast.run(ast.store.load_session, sid)
    assert tickets == list(range(1, 51)) and len(data.events) == 50 and data.turns[0].token_ids == (1, 2)
    assert ticks > before  # the loop kept running while the flush waited for its commit


_CHILD = """
import sys
from mio_agent.events import TextDelta
from mio_agent.store import SessionStore

store = SessionStore.open(sys.argv[1], commit_interval=0.005)
sid, i = sys.argv[2], 0
while True:
    for _ in range(25):
        store.append_event(TextDelta(session=sid, turn=i // 100, text=f"e{i}", t=float(i)))
        i += 1
    print(store.flush(), flush=True)
"""


def test_events_acknowledged_before_sigkill_are_all_there(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as st:
        sid = st.create_session("voice")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), sid], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        acked = 0
        while acked < 400:
            line = child.stdout.readline()
            assert line, "the writer process ended early"
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)  # while it goes on appending and committing
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with SessionStore.open(tmp_path) as st:
        events = st.load_session(sid).events
        assert len(events) >= acked
        assert [e.seq for e in events] == list(range(len(events)))
        assert [e.data["text"] for e in events[:acked]] == [f"e{i}" for i in range(acked)]
        # the store is healthy after the crash: the session goes on
        st.append_event(TextDelta(session=sid, turn=99, text="after the crash"))
        assert st.load_session(sid).events[-1].seq == len(events)
