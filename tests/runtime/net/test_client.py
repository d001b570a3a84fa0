"""`MioClient` and `mio-agent client` against a real server on a loopback port: image uploads, the
command's refusals of bad options, its exit statuses on connection and turn errors, and its output files."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mio_agent.engine import ReplyOptions
from mio_agent.events import ErrorEvent, Event, ImageIn, InvokeCapability, UserTurn
from mio_agent.runtime.net.client import MioClient
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.testing import png_bytes
from tests.runtime.net.test_server import served, shared, start, until_turn_ends

__all__ = ["served", "shared"]  # fixtures shared with test_server.py: the model (per module), a server

HANG_GUARD_S = 120
"""Only against hangs: a subprocess that has not finished by then failed."""


async def run_client(*args: str) -> tuple[int, str, str]:
    """`mio-agent client ARGS` in a subprocess (the server keeps running on this event loop)."""
    env = {**os.environ, "MIO_AGENT__ROUTER__TRANSCRIBE": "never"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mio_agent.cli.main", "client", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"mio-agent client {' '.join(args)[:80]} did not finish within {HANG_GUARD_S} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 1: image upload ---------------------------------------------------------------------------
async def test_an_uploaded_image_is_echoed_with_its_bytes_and_joins_the_next_turn(
    served: tuple[MioServer, str],
) -> None:
    _, url = served
    png = png_bytes(color=(200, 40, 40))
    async with MioClient(url) as client:
        await client.send_image(png, "red.png")
        await client.send_text("what colour is this picture?")
        items = await until_turn_ends(client)
    echoes = [i for i in items if isinstance(i, ImageIn)]
    assert len(echoes) == 1 and echoes[0].data == png and echoes[0].name == "red.png"
    turns = [i for i in items if isinstance(i, UserTurn)]
    assert len(turns) == 1 and turns[0].images == 1
    assert items[-1].reason == "completed"


async def test_an_invoke_on_an_uploaded_image_is_echoed_with_the_image(
    served: tuple[MioServer, str],
) -> None:
    _, url = served
    png = png_bytes(color=(10, 200, 10))
    async with MioClient(url) as client:
        stream = await client.send_image(png, "green.png")
        await client.invoke("no_such_capability", "edit it", image_stream=stream)
        items: list[Any] = []
        while not any(isinstance(i, ErrorEvent) for i in items):
            items.append(await client.next(timeout=60))
    invoked = [i for i in items if isinstance(i, InvokeCapability)]
    assert len(invoked) == 1 and invoked[0].image == png and invoked[0].name == "no_such_capability"
    assert [i.code for i in items if isinstance(i, ErrorEvent)] == ["capability.unknown"]


async def test_an_echo_of_bytes_another_client_sent_comes_as_the_raw_message(
    served: tuple[MioServer, str],
) -> None:
    _, url = served
    png = png_bytes()
    first = MioClient(url)
    await first.connect()
    await first.send_image(png, "p.png")
    while not isinstance(await first.next(timeout=60), ImageIn):
        pass
    other = MioClient(url)  # resumes the session from its start, without the upload's bytes
    await other.connect(resume=first.session)
    try:
        item = await other.next(timeout=60)
        while isinstance(item, Event):
            item = await other.next(timeout=60)
        assert isinstance(item, dict) and item["type"] == "event"
        assert item["event"]["type"] == "image.in" and item["event"]["data"] == {"bytes": len(png)}
    finally:
        await other.close()
        await first.close()


# -- 2: empty text -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   \t "])
async def test_an_empty_text_is_refused_at_once(served: tuple[MioServer, str], text: str) -> None:
    _, url = served
    rc, out, err = await run_client("--url", url, "--text", text)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert "--text" in line and "empty" in line and 'e.g. --text "hello"' in line


async def test_a_speech_file_makes_a_turn(served: tuple[MioServer, str], espeak: Callable[..., Path]) -> None:
    _, url = served
    rc, _, err = await run_client("--url", url, "--speech-file", str(espeak("what time is it")))
    assert rc == 0, err
    assert "[turn 1 completed]" in err


async def test_a_missing_speech_file_is_refused_before_connecting(tmp_path: Path) -> None:
    # nothing listens on port 1: the file is checked first
    rc, _, err = await run_client("--url", "ws://127.0.0.1:1/ws", "--speech-file", str(tmp_path / "no.wav"))
    assert rc == 2
    assert "no.wav" in one_line(err)


# -- 3: connection problems --------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["http://127.0.0.1:8765/ws", "127.0.0.1:8765", "ws://"])
async def test_a_url_that_is_not_a_websocket_url_is_refused(bad: str) -> None:
    rc, _, err = await run_client("--url", bad, "--text", "hello")
    assert rc == 2
    line = one_line(err)
    assert repr(bad) in line and "use ws://HOST:PORT/ws" in line


async def test_nothing_listening_is_one_line_and_status_1() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    rc, _, err = await run_client("--url", url, "--text", "hello")
    assert rc == 1
    line = one_line(err)
    assert f"cannot connect to {url}" in line and "mio-agent serve" in line


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_a_bad_token_is_one_line_naming_the_reason_and_status_1(
    shared: SharedResources, token: str | None
) -> None:
    srv, url = await start(shared, token="s3cret")
    try:
        rc, _, err = await run_client("--url", url, "--text", "hello", *(["--token", token] if token else []))
        assert rc == 1
        line = one_line(err)
        assert "a valid token is required" in line and "auth.token" in line and "--token" in line
        rc, _, err = await run_client("--url", url, "--text", "hello", "--token", "s3cret")
        assert rc == 0, err
    finally:
        await srv.close()


# -- 4: a turn that ends in an error -----------------------------------------------------------
async def test_a_turn_that_fails_exits_1_with_the_error(shared: SharedResources) -> None:
    srv, url = await start(shared, ReplyOptions(preset="no_such_preset"))  # every reply fails to start
    try:
        rc, _, err = await run_client("--url", url, "--text", "hello")
    finally:
        await srv.close()
    assert rc == 1, err
    assert "server error reply.start: " in err and "no_such_preset" in err
    assert "Traceback" not in err


async def test_a_refused_message_exits_1_with_the_error_at_once(served: tuple[MioServer, str]) -> None:
    _, url = served
    # over the server's limit on text fields (a single argv string may hold 128 KiB)
    rc, _, err = await run_client("--url", url, "--text", "x" * 100_000, "--timeout", "60")
    assert rc == 1, err
    assert "server error protocol.field: text.text" in err
    assert "Traceback" not in err and "--timeout" not in err


# -- 5: output files ---------------------------------------------------------------------------
async def test_replies_never_overwrite_earlier_ones(served: tuple[MioServer, str], tmp_path: Path) -> None:
    _, url = served
    out = tmp_path / "made" / "by" / "client"  # missing, with its parents
    rc, _, err = await run_client("--url", url, "--text", "hello", "--out", str(out))
    assert rc == 0, err
    first = (out / "reply-1.wav").read_bytes()
    rc, _, err = await run_client("--url", url, "--text", "good morning", "--out", str(out))
    assert rc == 0, err
    assert (out / "reply-1.wav").read_bytes() == first
    assert (out / "reply-2.wav").stat().st_size > 44
    (out / "reply-7.wav").write_bytes(b"kept")
    rc, _, err = await run_client("--url", url, "--text", "hello again", "--out", str(out))
    assert rc == 0, err
    assert (out / "reply-7.wav").read_bytes() == b"kept"
    assert sorted(p.name for p in out.glob("reply-*.wav")) == [
        "reply-1.wav", "reply-2.wav", "reply-7.wav", "reply-8.wav",
    ]  # fmt: skip
    assert f"wrote {out / 'reply-8.wav'}" in err


async def test_an_out_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("x")
    rc, _, err = await run_client("--url", "ws://127.0.0.1:1/ws", "--text", "hi", "--out", str(file))
    assert rc == 2
    assert "--out" in one_line(err)


def test_events_of_a_newer_server_are_passed_over_not_fatal() -> None:
    """docs/protocol.md: clients ignore event types and fields they do not know."""
    import json as _json

    from mio_agent.events import TextDelta

    client = MioClient("ws://127.0.0.1:1/ws")
    new_type = {"type": "event", "seq": 3, "event": {"type": "mood.changed", "session": "s", "turn": 1}}
    assert client._decode(_json.dumps(new_type)) == new_type
    extra = {"session": "s", "turn": 1, "t": 0.0, "text": "hi", "confidence": 0.9}
    got = client._decode(_json.dumps({"type": "event", "seq": 4, "event": {"type": "text.delta", **extra}}))
    assert isinstance(got, TextDelta) and got.text == "hi" and client.last_seq == 4
