"""docs/protocol.md is enough to write a client: its own examples, sent as written to a real server
with the plain `websockets` library (no project client), get what the page says."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from mio_agent.protocol import Frame, FrameKind, pack_frame
from mio_agent.runtime.voice.resources import SharedResources
from tests.runtime.net.test_server import shared, start  # noqa: F401  (the module's model)

DOC = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()


def _examples() -> list[dict[str, Any]]:
    """The JSON objects of the page's ```json blocks, with their "…" placeholders as they are."""
    out = []
    for block in re.findall(r"```json\n(.*?)```", DOC, flags=re.S):
        text = re.sub(r",\s*…", "", block)  # a list's "…" means "and more"
        out.append(json.loads(text))
    return out


def _example(kind: str) -> dict[str, Any]:
    return next(e for e in _examples() if e.get("type") == kind)


@pytest.fixture
async def url(shared: SharedResources) -> AsyncIterator[str]:  # noqa: F811
    srv, address = await start(shared)
    yield address
    await srv.close()


async def _messages(ws: ClientConnection, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Messages up to the first that `until` accepts (a 60 s deadline guards against a hang)."""
    got: list[dict[str, Any]] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(raw, bytes):
            continue
        msg = json.loads(raw)
        got.append(msg)
        if until(msg):
            return got


def _turn_ended(msg: dict[str, Any]) -> bool:
    return msg["type"] == "event" and msg["event"]["type"] == "turn.ended"


async def _hello(ws: ClientConnection) -> dict[str, Any]:
    hello = {k: v for k, v in _example("hello").items() if k != "token"}  # this server has none
    await ws.send(json.dumps(hello))
    return json.loads(await ws.recv())


async def test_the_hello_example_gets_the_welcome_the_page_shows(url: str) -> None:
    async with connect(url) as ws:
        welcome = await _hello(ws)
    shown = _example("welcome")
    assert set(welcome) == set(shown)
    assert set(welcome["limits"]) == set(shown["limits"])
    assert welcome["seq"] == 0 and welcome["resumed"] is False and welcome["protocol"] == 1
    assert welcome["audio_out"] == shown["audio_out"] and welcome["audio_in"] == shown["audio_in"]
    assert set(welcome["capabilities"][0]) == set(shown["capabilities"][0])


async def test_a_typed_turn_gets_numbered_events_of_that_turn(url: str) -> None:
    async with connect(url) as ws:
        await _hello(ws)
        await ws.send(json.dumps({"type": "text", "text": "hello"}))
        msgs = await _messages(ws, _turn_ended)
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    events = [m["event"] for m in msgs if m["type"] == "event"]
    assert {"type", "session", "turn", "t"} <= set(events[0])
    assert {e["turn"] for e in events if e["type"] not in ("text.in", "session.state", "input.level")} == {1}


async def test_audio_end_ends_the_turn_without_trailing_silence(
    url: str, espeak: Callable[..., Path]
) -> None:
    from tests.runtime.voice.test_session import pcm_of

    pcm, rate = pcm_of(espeak("what is the weather like"))
    async with connect(url) as ws:
        await _hello(ws)
        await ws.send(json.dumps({"type": "audio.start", "stream": 1, "sample_rate": rate, "channels": 1}))
        step = rate // 50 * 2  # 20 ms frames, as the page recommends
        for i in range(0, len(pcm), step):
            await ws.send(pack_frame(Frame(FrameKind.AUDIO_IN, 1, 0, 0, pcm[i : i + step])))
        await ws.send(json.dumps({"type": "audio.end", "stream": 1}))
        msgs = await _messages(ws, _turn_ended)
    kinds = [m["event"]["type"] for m in msgs if m["type"] == "event"]
    assert kinds.index("user.speech.ended") < kinds.index("turn.started") < kinds.index("turn.ended")


async def test_errors_come_as_the_page_says(url: str) -> None:
    async with connect(url) as ws:
        await _hello(ws)
        # about what this connection sent: an error message quoting the id
        await ws.send(json.dumps({"type": "text", "id": "c7"}))
        (err,) = await _messages(ws, lambda m: m["type"] == "error")
        shown = _example("error") if any(e.get("type") == "error" for e in _examples()) else None
        assert err["code"] == "protocol.field" and err["ref"] == "c7" and err["fatal"] is False
        if shown is not None:
            assert set(shown) <= set(err)
        # of the session: an event of type error, in the turn it belongs to
        await ws.send(json.dumps({"type": "invoke", "name": "describe_image"}))
        msgs = await _messages(ws, _turn_ended)
    errors = [m["event"] for m in msgs if m["type"] == "event" and m["event"]["type"] == "error"]
    assert errors and errors[0]["code"].startswith("capability.") and errors[0]["turn"] >= 1
