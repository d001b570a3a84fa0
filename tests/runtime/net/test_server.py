"""`mio-agent serve` over real loopback sockets: turns, audio, many sessions, a stalled client, resume,
token and Origin checks, hostile input and the static page."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mio_agent.config import ServerConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioOut, Event, TextDelta, TurnEnded
from mio_agent.exceptions import ConfigError, ProtocolError
from mio_agent.protocol import Frame, FrameKind, pack_frame
from mio_agent.runtime.net.client import MioClient, ServerError
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 60, "router.transcribe": "never", "engine.seed": 1}
        )
    )


async def start(
    shared: SharedResources, reply: ReplyOptions | None = None, **server: Any
) -> tuple[MioServer, str]:
    cfg = ServerConfig(**{"port": 0, **server})
    srv = MioServer(SessionHub(shared), cfg, reply_options=reply)
    port = await srv.start()
    return srv, f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
async def served(shared: SharedResources) -> AsyncIterator[tuple[MioServer, str]]:
    srv, url = await start(shared)
    yield srv, url
    await srv.close()


async def until_turn_ends(client: MioClient, timeout: float = 60) -> list[Any]:
    items = []
    while True:
        item = await client.next(timeout=timeout)
        items.append(item)
        if isinstance(item, TurnEnded):
            return items


async def test_a_text_turn_streams_events_and_raw_audio(served: tuple[MioServer, str]) -> None:
    _, url = served
    async with MioClient(url) as client:
        assert client.welcome is not None and client.welcome.capabilities
        assert {"name", "description", "inputs", "outputs"} <= set(client.welcome.capabilities[0])
        await client.send_text("hello")
        items = await until_turn_ends(client)
    kinds = [i.type for i in items if isinstance(i, Event)]
    assert kinds.index("turn.started") < kinds.index("audio.out") < kinds.index("turn.ended")
    audio = [i for i in items if isinstance(i, AudioOut)]
    assert audio and all(len(a.pcm) % 2 == 0 and a.turn == 1 for a in audio)
    assert items[-1].reason == "completed"


async def test_spoken_audio_in_binary_frames_makes_a_turn(
    served: tuple[MioServer, str], espeak: Callable[..., Path]
) -> None:
    from tests.runtime.voice.test_session import pcm_of

    _, url = served
    pcm, rate = pcm_of(espeak("what time is it"))
    async with MioClient(url) as client:
        await client.send_audio(pcm + bytes(rate * 2), rate, realtime=8.0)
        items = await until_turn_ends(client, timeout=120)
    kinds = [i.type for i in items if isinstance(i, Event)]
    assert "user.speech.started" in kinds and "user.speech.ended" in kinds and "user.turn" in kinds


async def test_many_sessions_at_once_each_get_their_own_reply(served: tuple[MioServer, str]) -> None:
    _, url = served

    async def one(i: int) -> tuple[str, str]:
        async with MioClient(url) as client:
            await client.send_text(f"hello number {i}")
            items = await until_turn_ends(client, timeout=120)
            return client.session, items[-1].reason

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert len({s for s, _ in results}) == 8
    assert all(reason == "completed" for _, reason in results)


async def test_a_stalled_client_is_cut_off_without_delaying_another(shared: SharedResources) -> None:
    # (the fixture's 60 new tokens hold no block of 150 codes: such a reply is refused, so say 900)
    long_replies = ReplyOptions(
        max_new_tokens=900, min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False
    )
    srv, url = await start(shared, long_replies, send_queue=8)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        stalled = await connect(url, max_size=None, sock=sock)
        await stalled.send(json.dumps({"type": "hello", "protocol": 1}))
        welcome = json.loads(await stalled.recv())  # then it stops reading
        for i in range(3):
            await stalled.send(json.dumps({"type": "text", "text": f"talk a lot {i}"}))
        # far more than the socket buffers hold, however long the model's replies are
        session = srv.channels[welcome["session"]].session
        for i in range(2000):
            session.publish(TextDelta(session=session.id, turn=0, text=f"{i:04d}" + "x" * 1000))
        async with MioClient(url) as healthy:
            await healthy.send_text("hello")
            items = await asyncio.wait_for(until_turn_ends(healthy), 60)
            assert items[-1].reason == "completed"
        # the stalled client's queue filled: the server closed it with 4008 (it may resume later)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(stalled.recv(), 60)
        assert stalled.close_code == 4008
    finally:
        await srv.close()


async def test_a_client_that_reconnects_resumes_without_loss_or_duplicates(
    served: tuple[MioServer, str],
) -> None:
    """Every message (JSON and binary) has a seq: across a drop mid-reply and a resume, the client
    gets each seq of the session exactly once, in order, from 1 to the end of the turn."""
    import json

    from websockets.asyncio.client import connect

    from mio_agent.protocol import unpack_frame

    _, url = served
    seqs: list[int] = []

    async def read(ws: Any, *, stop_after: int | None = None) -> bool:
        """Record seqs until `stop_after` messages were read (False) or the turn ended (True)."""
        while True:
            raw = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(raw, bytes):
                seqs.append(unpack_frame(raw).seq)
            else:
                msg = json.loads(raw)
                seqs.append(msg["seq"])
                if msg["type"] == "event" and msg["event"]["type"] == "turn.ended":
                    assert msg["event"]["reason"] == "completed"
                    return True
            if stop_after is not None and len(seqs) >= stop_after:
                return False

    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "protocol": 1}))
        welcome = json.loads(await ws.recv())
        session = welcome["session"]
        await ws.send(json.dumps({"type": "text", "text": "tell me something"}))
        ended = await read(ws, stop_after=3)  # then the connection drops, mid-reply
    assert not ended
    async with connect(url) as ws:
        resume = {"session": session, "last_seq": seqs[-1]}
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "resume": resume}))
        again = json.loads(await ws.recv())
        assert again["resumed"] is True and again["session"] == session and again["missed"] == 0
        assert await read(ws)
    assert seqs == list(range(1, len(seqs) + 1))  # none lost, none twice, in order


async def test_resuming_an_unknown_session_is_refused(served: tuple[MioServer, str]) -> None:
    _, url = served
    client = MioClient(url)
    with pytest.raises(ProtocolError, match="not open any more"):
        await client.connect(resume="no-such-session")


async def test_a_token_is_required_when_configured(shared: SharedResources) -> None:
    srv, url = await start(shared, token="s3cret")
    try:
        with pytest.raises(ProtocolError, match="valid token"):
            await MioClient(url).connect()
        with pytest.raises(ProtocolError, match="valid token"):
            await MioClient(url, token="wrong").connect()
        ok = MioClient(url, token="s3cret")
        assert (await ok.connect()).session
        await ok.close()
    finally:
        await srv.close()


def test_binding_beyond_loopback_needs_a_token(shared: SharedResources) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        MioServer(SessionHub(shared), ServerConfig(host="0.0.0.0"))


async def test_a_foreign_origin_is_refused_and_the_page_origin_accepted(
    served: tuple[MioServer, str],
) -> None:
    srv, url = served
    with pytest.raises(InvalidStatus) as info:
        await MioClient(url, origin="http://evil.example").connect()
    assert info.value.response.status_code == 403
    ok = MioClient(url, origin=f"http://127.0.0.1:{srv.port}")
    await ok.connect()
    await ok.close()


async def test_hostile_input_gets_errors_and_the_connection_stays_usable(
    served: tuple[MioServer, str],
) -> None:
    _, url = served
    async with MioClient(url) as client:
        ws = client.ws
        assert ws is not None
        await ws.send(b"\x07garbage")
        await ws.send(json.dumps({"type": "dance", "id": "d1"}))
        await client.send_frame(FrameKind.AUDIO_IN, 99, b"\x00\x00")
        await client.send({"type": "audio.start", "stream": 1, "sample_rate": 3, "id": "a1"})
        await ws.send(pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 0, 0, b"")))
        await client.send({"type": "image", "stream": 5, "bytes": 10, "id": "i1"})
        await client.send_frame(FrameKind.IMAGE_IN, 5, b"short")
        await client.ping("still-there")
        errors: list[ServerError] = []
        while True:
            item = await client.next(timeout=60)
            if isinstance(item, ServerError):
                errors.append(item)
            elif isinstance(item, dict) and item.get("type") == "pong":
                assert item["nonce"] == "still-there"
                break
    codes = [e.code for e in errors]
    assert codes == [
        "protocol.invalid",
        "protocol.type",
        "audio.stream",
        "audio.format",
        "protocol.frame",
        "image.size",
    ]
    assert "shorter than its 20-byte header" in errors[0].message
    refs = {e.code: e.ref for e in errors}
    assert refs["protocol.type"] == "d1" and refs["audio.format"] == "a1" and refs["image.size"] == "i1"


async def test_the_first_message_must_be_a_hello(served: tuple[MioServer, str]) -> None:
    _, url = served
    ws = await connect(url)
    await ws.send(json.dumps({"type": "text", "text": "hi"}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "error" and reply["code"] == "protocol.order" and reply["fatal"]
    with pytest.raises(ConnectionClosed):
        await ws.recv()


async def test_the_browser_page_is_served_over_http_and_nothing_else(served: tuple[MioServer, str]) -> None:
    srv, _ = served
    base = f"http://127.0.0.1:{srv.port}"

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    status, body = await asyncio.to_thread(get, "/")
    assert status == 200 and b"<html" in body.lower()
    assert (await asyncio.to_thread(get, "/../../pyproject.toml"))[0] == 404
    assert (await asyncio.to_thread(get, "/nope.js"))[0] == 404


async def test_limits_on_sessions_per_client_message_size_and_audio_rate(shared: SharedResources) -> None:
    srv, url = await start(shared, max_sessions_per_client=2, max_message_bytes=64 * 1024)
    try:
        a, b = MioClient(url), MioClient(url)
        await a.connect()
        await b.connect()
        with pytest.raises(ProtocolError, match="already has 2 sessions"):
            await MioClient(url).connect()
        # audio far faster than real time is refused past the burst allowance
        await a.send({"type": "audio.start", "stream": 1, "sample_rate": 16000})
        second = bytes(32000)  # one second of 16 kHz mono
        for _ in range(12):
            await a.send_frame(FrameKind.AUDIO_IN, 1, second)
        while True:
            item = await a.next(timeout=60)
            if isinstance(item, ServerError):
                assert item.code == "audio.rate"
                break
        # a message over max_message_bytes closes the connection (1009), the server goes on
        ws = b.ws
        assert ws is not None
        await ws.send(b"\x00" * (128 * 1024))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009
        c = MioClient(url)
        assert (await c.connect()).session  # b's slot is free again
        await c.close()
        await a.close()
    finally:
        await srv.close()
