"""`mio-agent serve` against hostile or unlucky clients, over real loopback sockets: unencodable text,
resuming after a long absence, session limits under a rush, DNS rebinding, bad resume points,
audio floods, over-long text, tasks left behind and a busy port."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from mio_agent.config import ServerConfig, load_config
from mio_agent.events import TextDelta, TurnEnded
from mio_agent.exceptions import ProtocolError
from mio_agent.protocol import Frame, FrameKind, decode_client_message, encode_json, pack_frame
from mio_agent.protocol.messages import MAX_TEXT_CHARS
from mio_agent.runtime.net.client import MioClient
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

DEADLINE = 60.0
"""Only guards against a hang: every wait below ends as soon as the awaited message arrives."""


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 20, "router.transcribe": "never", "engine.seed": 1}
        )
    )


async def start(
    shared: SharedResources, log_root: Path | None = None, **server: Any
) -> tuple[MioServer, str]:
    srv = MioServer(SessionHub(shared, log_root=log_root), ServerConfig(**{"port": 0, **server}))
    port = await srv.start()
    return srv, f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
async def served(shared: SharedResources) -> AsyncIterator[tuple[MioServer, str]]:
    srv, url = await start(shared)
    yield srv, url
    await srv.close()
    await srv.hub.aclose()


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition of the server's state (each check yields to the server's tasks)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), DEADLINE)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON message (binary frames are skipped)."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), DEADLINE)
        if isinstance(raw, str):
            msg: dict[str, Any] = json.loads(raw)
            return msg


async def handshake(
    url: str, *, local: str = "127.0.0.1", **hello: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    """Open a connection from `local` and say hello; returns it and the server's answer."""
    ws = await connect(url, max_size=None, local_addr=(local, 0))
    await ws.send(json.dumps({"type": "hello", "protocol": 1, **hello}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))


async def until_pong(ws: ClientConnection, nonce: str) -> list[dict[str, Any]]:
    """Send a ping and collect every JSON message up to its pong."""
    await ws.send(json.dumps({"type": "ping", "nonce": nonce}))
    seen = []
    while True:
        msg = await recv_json(ws)
        if msg["type"] == "pong" and msg["nonce"] == nonce:
            return seen
        seen.append(msg)


# -- 1. lone surrogates ------------------------------------------------------------------------
def test_lone_surrogates_are_refused_naming_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"text\.text: .*lone surrogate") as info:
        decode_client_message('{"type": "text", "text": "ok \\ud800", "id": "m1"}')
    assert info.value.code == "protocol.field" and info.value.ref == "m1"
    with pytest.raises(ProtocolError, match=r"hello\.resume\.session: .*lone surrogate"):
        decode_client_message(
            '{"type": "hello", "protocol": 1, "resume": {"session": "\\udc00", "last_seq": 1}}'
        )
    with pytest.raises(ProtocolError, match=r"a field name: .*lone surrogate") as info:
        decode_client_message('{"type": "ping", "\\ud800": 1}')
    assert info.value.code == "protocol.field" and "\ud800" not in str(info.value)
    with pytest.raises(ProtocolError, match=r"id: .*lone surrogate"):
        decode_client_message('{"type": "ping", "id": "\\ud800"}')
    # a pair is a character, not a lone surrogate
    assert decode_client_message('{"type": "text", "text": "\\ud83d\\ude00"}').get("text") == "\U0001f600"


def test_server_json_is_always_valid_utf8() -> None:
    text = encode_json({"type": "event", "text": "a\ud800b\udc00", "pair": "\ud83d\ude00"})
    assert json.loads(text.encode("utf-8")) == {
        "type": "event",
        "text": "a\ufffdb\ufffd",
        "pair": "\U0001f600",
    }


async def test_a_lone_surrogate_gets_an_error_and_the_session_still_works_and_resumes(
    served: tuple[MioServer, str],
) -> None:
    _, url = served
    client = MioClient(url)
    await client.connect()
    ws = client.ws
    assert ws is not None
    # raw JSON with the escape: the client library itself would never send a lone surrogate
    await ws.send('{"type": "text", "text": "\\ud800", "id": "s1"}')
    await ws.send('{"type": "ping", "\\udc00": 1, "id": "s2"}')
    errors = [m for m in await until_pong(ws, "after") if m["type"] == "error"]
    assert [(e["code"], e["ref"], e["fatal"]) for e in errors] == [
        ("protocol.field", "s1", False),
        ("protocol.field", "s2", False),
    ]
    assert "text.text" in errors[0]["message"] and "lone surrogate" in errors[0]["message"]
    await client.send_text("hello")
    while not isinstance(item := await client.next(timeout=DEADLINE), TurnEnded):
        pass
    assert item.reason == "completed"
    client.last_seq = 0  # replay everything the session kept
    welcome = await client.reconnect()
    assert welcome.resumed
    assert client.ws is not None
    await until_pong(client.ws, "resumed")
    await client.close()


async def test_an_unencodable_event_is_sent_repaired_and_replays(served: tuple[MioServer, str]) -> None:
    srv, url = served
    client = MioClient(url)
    await client.connect()
    before = client.last_seq
    srv.channels[client.session].session.publish(TextDelta(session=client.session, turn=0, text="a\ud800b"))
    while not isinstance(item := await client.next(timeout=DEADLINE), TextDelta):
        pass
    assert item.text == "a\ufffdb"
    client.last_seq = before
    assert (await client.reconnect()).resumed
    while not isinstance(item := await client.next(timeout=DEADLINE), TextDelta):
        pass
    assert item.text == "a\ufffdb"
    await client.close()


# -- 2. resuming after missing more than the send queue holds -----------------------------------
async def _leave_and_pile_up(srv: MioServer, url: str, n: int) -> tuple[str, int, int]:
    """Connect, leave, let `n` text.delta events pile up; returns (session, last seq seen, newest seq)."""
    ws, welcome = await handshake(url)
    session, last = welcome["session"], welcome["seq"]
    await ws.close()
    channel = srv.channels[session]
    await wait_until(lambda: channel.outbox is None)
    for i in range(n):
        channel.session.publish(TextDelta(session=session, turn=0, text=f"n{i}"))
    # the channel has numbered and kept them all once the last one is its newest message
    await wait_until(lambda: f'"n{n - 1}"' in str(channel.replay.since(channel.seq - 1)[0]))
    return session, last, channel.seq


async def _texts_until(ws: ClientConnection, final: str) -> tuple[list[str], list[int]]:
    texts, seqs = [], []
    while True:
        msg = await recv_json(ws)
        seqs.append(msg["seq"])
        if msg["type"] == "event" and msg["event"]["type"] == "text.delta":
            texts.append(msg["event"]["text"])
            if texts[-1] == final:
                return texts, seqs


async def test_a_client_that_missed_more_than_its_send_queue_resumes_without_loss(
    served: tuple[MioServer, str],
) -> None:
    srv, url = served
    assert srv.cfg.send_queue == 512
    session, last, _ = await _leave_and_pile_up(srv, url, 700)
    ws, welcome = await handshake(url, resume={"session": session, "last_seq": last})
    assert welcome["type"] == "welcome" and welcome["resumed"] and welcome["missed"] == 0
    texts, seqs = await _texts_until(ws, "n699")
    assert texts == [f"n{i}" for i in range(700)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await until_pong(ws, "live")  # the connection goes on
    await ws.close()


async def test_a_resume_beyond_the_replay_buffer_reports_the_gap_and_goes_on(
    served: tuple[MioServer, str],
) -> None:
    srv, url = served
    kept = srv.cfg.replay_events
    session, last, newest = await _leave_and_pile_up(srv, url, 1500)
    ws, welcome = await handshake(url, resume={"session": session, "last_seq": last})
    lost = newest - last - kept
    assert welcome["resumed"] and welcome["missed"] == lost > 0
    texts, seqs = await _texts_until(ws, "n1499")
    assert seqs[0] == last + lost + 1 and len(texts) > kept - 10
    assert texts == [f"n{i}" for i in range(1500 - len(texts), 1500)]
    # numbered after what was replayed: the gap, then the session goes on
    gap = await recv_json(ws)
    assert gap["type"] == "error" and gap["code"] == "replay.gap" and not gap["fatal"]
    assert gap["lost"] == lost and gap["lost_from"] == last + 1 and gap["lost_to"] == last + lost
    assert gap["seq"] == newest + 1
    await until_pong(ws, "live")
    await ws.close()


# -- 3. session limits ----------------------------------------------------------------------------
async def _rush(url: str, sources: list[str]) -> tuple[list[ClientConnection], list[dict[str, Any]]]:
    results = await asyncio.gather(*(handshake(url, local=src) for src in sources))
    return [ws for ws, _ in results], [reply for _, reply in results]


async def test_a_hundred_parallel_handshakes_of_one_client_get_exactly_its_limit(
    shared: SharedResources, tmp_path: Path
) -> None:
    # with session logs, opening a session waits on disk: the other handshakes run meanwhile
    srv, url = await start(shared, log_root=tmp_path)
    conns, replies = await _rush(url, ["127.0.0.1"] * 100)
    welcomed = [r for r in replies if r["type"] == "welcome"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(welcomed) == srv.cfg.max_sessions_per_client == 8
    assert len(refused) == 92 and {(r["code"], r["fatal"]) for r in refused} == {("limit.sessions", True)}
    await asyncio.gather(*(ws.close() for ws in conns))
    await srv.close()
    await srv.hub.aclose()


async def test_a_hundred_parallel_handshakes_of_many_clients_get_exactly_the_server_limit(
    served: tuple[MioServer, str],
) -> None:
    srv, url = served
    sources = [f"127.0.0.{2 + i % 20}" for i in range(100)]  # 20 clients, 5 each
    conns, replies = await _rush(url, sources)
    welcomed = [r for r in replies if r["type"] == "welcome"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(welcomed) == srv.cfg.max_sessions == 64
    assert len(refused) == 36 and {(r["code"], r["fatal"]) for r in refused} == {("limit.server", True)}
    # "resume" in the URL is no way around the limit; only a resume in the hello is
    ws, reply = await handshake(url.replace("/ws", "/ws?resume=1"), local="127.0.0.99")
    assert reply["code"] == "limit.server"
    await ws.close()
    await asyncio.gather(*(ws.close() for ws in conns))


async def test_sessions_of_departed_clients_do_not_lock_out_a_new_one(served: tuple[MioServer, str]) -> None:
    srv, url = served
    opened = []
    for _ in range(srv.cfg.max_sessions):
        ws, welcome = await handshake(url)
        assert welcome["type"] == "welcome"
        opened.append((welcome["session"], welcome["seq"]))
        await ws.close()
    await wait_until(lambda: all(c.outbox is None for c in srv.channels.values()))
    newcomer, welcome = await handshake(url, local="127.0.0.2")
    assert welcome["type"] == "welcome" and not welcome["resumed"]
    # the oldest departed session made the room; the newest is still there to resume
    oldest, newest = opened[0], opened[-1]
    ws, reply = await handshake(url, resume={"session": oldest[0], "last_seq": oldest[1]})
    assert reply["type"] == "error" and reply["code"] == "session.gone"
    ws, reply = await handshake(url, resume={"session": newest[0], "last_seq": newest[1]})
    assert reply["type"] == "welcome" and reply["resumed"]
    await ws.close()
    await newcomer.close()


# -- 4. DNS rebinding -----------------------------------------------------------------------------
async def raw_status(port: int, host: str, origin: str | None, path: str = "/ws") -> int:
    """Send a handshake (or a plain GET) with these Host and Origin headers; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    if path == "/ws":
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), DEADLINE)
    writer.close()
    await writer.wait_closed()
    return int(status.split()[1])


async def test_a_rebound_host_name_is_refused_and_loopback_origins_are_accepted(
    served: tuple[MioServer, str],
) -> None:
    srv, _ = served
    port = srv.port
    assert await raw_status(port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
    assert await raw_status(port, f"evil.example:{port}", None) == 403
    assert await raw_status(port, f"evil.example:{port}", None, path="/") == 403
    # the Origin must be one of the server's own, whatever Host says
    assert await raw_status(port, f"127.0.0.1:{port}", f"http://evil.example:{port}") == 403
    assert await raw_status(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    assert await raw_status(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    assert await raw_status(port, f"[::1]:{port}", None) == 101
    assert await raw_status(port, f"127.0.0.1:{port}", None, path="/") == 200


async def test_configured_allowed_hosts_are_accepted(shared: SharedResources) -> None:
    srv, _ = await start(shared, allowed_hosts=("mio.lan",))
    try:
        port = srv.port
        assert await raw_status(port, f"mio.lan:{port}", f"http://mio.lan:{port}") == 101
        assert await raw_status(port, f"MIO.lan:{port}", None, path="/") == 200
        assert await raw_status(port, f"evil.example:{port}", f"http://evil.example:{port}") == 403
    finally:
        await srv.close()
        await srv.hub.aclose()


# -- 5. resume points, audio floods, long text ----------------------------------------------------
async def test_a_resume_beyond_the_newest_message_is_refused(served: tuple[MioServer, str]) -> None:
    srv, url = served
    ws, welcome = await handshake(url)
    session = welcome["session"]
    await ws.close()
    newest = srv.channels[session].seq
    ws, reply = await handshake(url, resume={"session": session, "last_seq": newest + 100})
    assert reply["type"] == "error" and reply["code"] == "protocol.field" and reply["fatal"]
    assert "last_seq" in reply["message"] and str(newest) in reply["message"]
    ws, reply = await handshake(url, resume={"session": session, "last_seq": newest})
    assert reply["type"] == "welcome" and reply["resumed"]
    await ws.close()


async def _flood(ws: ClientConnection, chunks: int, *, end: bool) -> None:
    await ws.send(json.dumps({"type": "audio.start", "stream": 1, "sample_rate": 16000}))
    chunk = pack_frame(Frame(FrameKind.AUDIO_IN, 1, 0, 0, bytes(3200)))  # 100 ms
    for _ in range(chunks):
        await ws.send(chunk)
    if end:
        await ws.send(json.dumps({"type": "audio.end", "stream": 1}))


async def test_dropped_audio_is_reported_once_per_interval_with_a_count(
    served: tuple[MioServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, url = served
    # exactly 1.05 s (10 chunks) is allowed; no second report within the test
    limits = dataclasses.replace(srv.input_limits, audio_speed=0.0, audio_burst_s=1.05, drop_report_s=3600.0)
    monkeypatch.setattr(srv, "input_limits", limits)
    ws, _ = await handshake(url)
    await _flood(ws, 1500, end=True)
    errors = [m for m in await until_pong(ws, "done") if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["audio.rate", "audio.rate"]
    # the first drop is reported at once; the rest when the stream ends
    assert [e["dropped"] for e in errors] == [1, 1489] and errors[-1]["dropped_total"] == 1490
    assert "1489 audio chunk" in errors[-1]["message"]
    await ws.close()


async def test_dropped_audio_is_reported_when_the_interval_ends(
    served: tuple[MioServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, url = served
    limits = dataclasses.replace(srv.input_limits, audio_speed=0.0, audio_burst_s=1.05, drop_report_s=0.05)
    monkeypatch.setattr(srv, "input_limits", limits)
    ws, _ = await handshake(url)
    await _flood(ws, 1500, end=False)  # no audio.end: the timer reports the rest
    total = 0
    while total < 1490:
        msg = await recv_json(ws)
        if msg["type"] == "error":
            assert msg["code"] == "audio.rate"
            total += msg["dropped"]
    assert total == 1490 and msg["dropped_total"] == 1490
    await ws.close()


def test_an_over_long_text_names_the_limit_and_the_field() -> None:
    assert MAX_TEXT_CHARS == 20_000
    assert decode_client_message(json.dumps({"type": "text", "text": "x" * 20_000})).get("text")
    with pytest.raises(ProtocolError) as info:
        decode_client_message(json.dumps({"type": "text", "text": "x" * 20_001, "id": "t1"}))
    assert info.value.code == "protocol.field" and info.value.ref == "t1"
    assert "text.text" in str(info.value) and "20,000 characters" in str(info.value)
    assert "expected a string" not in str(info.value)


async def test_an_over_long_text_gets_a_clear_error_over_the_wire(served: tuple[MioServer, str]) -> None:
    _, url = served
    ws, welcome = await handshake(url)
    assert welcome["limits"]["max_text_chars"] == 20_000
    await ws.send(json.dumps({"type": "text", "text": "x" * 20_001, "id": "long"}))
    errors = [m for m in await until_pong(ws, "p") if m["type"] == "error"]
    assert len(errors) == 1 and errors[0]["ref"] == "long" and "20,000 characters" in errors[0]["message"]
    await ws.close()


# -- 6. no task left behind ------------------------------------------------------------------------
async def test_no_task_is_left_behind_by_connections_or_shutdown(
    shared: SharedResources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    before = asyncio.all_tasks()
    srv, url = await start(shared)
    for i in range(10):
        ws, welcome = await handshake(url)
        assert welcome["type"] == "welcome"
        await until_pong(ws, str(i))
        await ws.close()
    assert srv._server is not None
    handlers = srv._server.handlers
    await wait_until(lambda: not handlers)  # every connection's handler has finished
    gc.collect()
    left = [t for t in asyncio.all_tasks() - before if "Queue.get" in repr(t.get_coro())]
    assert left == []
    await srv.close()
    await srv.hub.aclose()
    gc.collect()
    assert asyncio.all_tasks() - before == set()
    assert "Task was destroyed" not in caplog.text


# -- 7. a busy port ---------------------------------------------------------------------------------
def test_serve_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mio_agent.cli.main", "serve", "--port", str(port), "--no-log"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(port) in lines[0] and "--port" in lines[0] and "in use" in lines[0]
