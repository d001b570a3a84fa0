"""A session's outgoing WebSocket stream, without a socket: the Outbox (backlog, bounded queue,
slow-client close) and the Channel (numbering, replay buffer, attach/detach/resume, binary frames)
on a real session of the hub, fed through its bus."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mio_agent.config import load_config
from mio_agent.events import AudioIn, AudioOut, ImageOut, TextDelta, VideoFrame
from mio_agent.protocol import Frame, FrameKind, pack_frame, unpack_frame
from mio_agent.runtime.net.ws_channel import CLOSE_REPLACED, CLOSE_TOO_SLOW, Channel, Outbox
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources
from mio_agent.runtime.voice.session import Session

DEADLINE = 10.0
"""Only guards against a hang: every wait below ends as soon as the awaited message arrives."""
TOO_SLOW = "client too slow: its queue filled; reconnect with resume"
REPLACED = "the session was resumed on another connection"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(
            None, overrides={"engine.max_new_tokens": 20, "router.transcribe": "never", "engine.seed": 1}
        )
    )


@pytest.fixture
async def session(shared: SharedResources) -> AsyncIterator[Session]:
    hub = SessionHub(shared)
    s = await hub.open()
    yield s
    await hub.aclose()


@pytest.fixture
async def make(session: Session) -> AsyncIterator[Callable[[int], Channel]]:
    """Channels on `session`, closed at the end of the test."""
    made: list[Channel] = []

    def build(replay_events: int) -> Channel:
        made.append(Channel(session, replay_events))
        return made[-1]

    yield build
    for channel in made:
        await channel.close()


async def next_of(outbox: Outbox) -> str | bytes | None:
    return await asyncio.wait_for(outbox.get(), DEADLINE)


async def until_seq(channel: Channel, seq: int) -> None:
    """Wait until the channel has numbered `seq` messages (each check yields to its pump)."""

    async def poll() -> None:
        while channel.seq < seq:
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), DEADLINE)


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    """Whether `task` is still pending after every ready callback has run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


def text_json(sid: str, seq: int, text: str, *, turn: int = 1, t: float = 1.5) -> str:
    """The exact wire text of a text.delta event with this seq."""
    return (
        f'{{"type":"event","seq":{seq},"event":{{"type":"text.delta","session":"{sid}",'
        f'"turn":{turn},"t":{t},"text":"{text}"}}}}'
    )


def delta(session: Session, text: str, *, turn: int = 1, t: float = 1.5) -> TextDelta:
    return TextDelta(session=session.id, turn=turn, t=t, text=text)


# -- Outbox ------------------------------------------------------------------------------------
def test_close_codes() -> None:
    assert (CLOSE_TOO_SLOW, CLOSE_REPLACED) == (4008, 4009)


async def test_outbox_starts_open_and_empty() -> None:
    ob = Outbox(3)
    assert (ob.maxsize, ob.close_code, ob.close_reason, ob.stopped) == (3, None, "", False)
    task = asyncio.create_task(ob.get())
    assert await still_waiting(task)
    task.cancel()


async def test_outbox_sends_backlog_before_queue_in_order() -> None:
    ob = Outbox(4)
    ob.put("q1")
    ob.put(b"q2")
    ob.preload(["welcome", b"missed"])
    ob.preload(["missed2"])
    assert [await next_of(ob) for _ in range(5)] == ["welcome", b"missed", "missed2", "q1", b"q2"]
    # empty again: the next get waits (and does not spin) until a put or a preload
    task = asyncio.create_task(ob.get())
    assert await still_waiting(task)
    ob.put("later")
    assert await asyncio.wait_for(task, DEADLINE) == "later"
    task = asyncio.create_task(ob.get())
    assert await still_waiting(task)
    ob.preload(["preloaded"])
    assert await asyncio.wait_for(task, DEADLINE) == "preloaded"
    task = asyncio.create_task(ob.get())
    assert await still_waiting(task)
    task.cancel()


async def test_outbox_backlog_is_not_bounded_by_maxsize() -> None:
    ob = Outbox(1)
    ob.preload(["a", "b", "c"])
    ob.put("d")
    assert not ob.stopped
    assert [await next_of(ob) for _ in range(4)] == ["a", "b", "c", "d"]


async def test_outbox_stops_too_slow_exactly_when_the_queue_passes_maxsize() -> None:
    ob = Outbox(2)
    ob.put("1")
    ob.put("2")
    assert (ob.stopped, ob.close_code, ob.close_reason) == (False, None, "")
    ob.put("3")
    assert (ob.stopped, ob.close_code, ob.close_reason) == (True, 4008, TOO_SLOW)
    # what was queued is not sent, nor anything put later
    ob.put("4")
    assert await next_of(ob) is None
    assert await next_of(ob) is None


async def test_outbox_reading_makes_room() -> None:
    ob = Outbox(1)
    ob.put("a")
    assert await next_of(ob) == "a"
    ob.put("b")
    assert not ob.stopped
    assert await next_of(ob) == "b"
    ob.put("c")
    ob.put("d")
    assert ob.close_code == 4008
    assert await next_of(ob) is None


async def test_outbox_stop_wakes_a_waiting_get_and_the_first_reason_wins() -> None:
    ob = Outbox(2)
    task = asyncio.create_task(ob.get())
    assert await still_waiting(task)
    ob.stop(4009, "first")
    assert await asyncio.wait_for(task, DEADLINE) is None
    ob.stop(1000, "second")
    ob.put("x")
    assert (ob.stopped, ob.close_code, ob.close_reason) == (True, 4009, "first")
    assert await next_of(ob) is None


async def test_outbox_stop_drops_the_backlog_too() -> None:
    ob = Outbox(2)
    ob.preload(["welcome"])
    ob.put("a")
    ob.stop(0, "")
    assert (ob.stopped, ob.close_code, ob.close_reason) == (True, 0, "")
    assert await next_of(ob) is None


# -- Channel -----------------------------------------------------------------------------------
async def test_channel_starts_detached_reading_the_bus(session: Session) -> None:
    before = time.monotonic()
    ch = Channel(session, 8)
    after = time.monotonic()
    assert (ch.session, ch.seq, ch.outbox, ch.peer, ch.attached) == (session, 0, None, None, False)
    assert ch.detached_at is not None and before <= ch.detached_at <= after
    assert (ch.replay.capacity, ch.replay.last_seq) == (8, 0)
    (sub,) = [s for s in session.bus.subscriptions if s.name == "websocket"]
    assert (sub.maxsize, sub.policy, sub.closed_reason) == (4096, "block", None)
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"ws-channel-{session.id}"]
    await ch.close()
    assert task.done()
    assert sub.closed_reason == "channel closed"
    assert sub not in session.bus.subscriptions
    # closed: later events are neither numbered nor kept
    session.bus.publish(delta(session, "late"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (ch.seq, ch.replay.since(0)) == (0, ([], 0))


async def test_events_are_numbered_json_and_input_echoes_are_not_sent(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    ob = Outbox(16)
    assert ch.attach(ob, "10.0.0.1", None) == ([], 0)
    assert (ch.outbox, ch.peer, ch.detached_at, ch.attached) == (ob, "10.0.0.1", None, True)
    sid = session.id
    session.bus.publish(AudioIn(session=sid, turn=1, pcm=b"\x00\x00" * 4, sample_rate=16000))
    session.bus.publish(VideoFrame(session=sid, turn=1, width=1, height=1, rgb=b"\x01\x02\x03"))
    session.bus.publish(delta(session, "héllo", turn=2))
    session.bus.publish(delta(session, "wörld", turn=2, t=2.0))
    first = await next_of(ob)
    assert first == text_json(sid, 1, "héllo", turn=2)
    assert json.loads(first) == {
        "type": "event",
        "seq": 1,
        "event": {"type": "text.delta", "session": sid, "turn": 2, "t": 1.5, "text": "héllo"},
    }
    assert await next_of(ob) == text_json(sid, 2, "wörld", turn=2, t=2.0)
    assert ch.seq == 2
    assert ch.replay.since(0) == (
        [text_json(sid, 1, "héllo", turn=2), text_json(sid, 2, "wörld", turn=2, t=2.0)],
        0,
    )


async def test_audio_out_goes_as_one_binary_frame_numbered_with_the_json(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    ob = Outbox(16)
    ch.attach(ob, "p", None)
    pcm = b"\x01\x00\x02\x00\xff\x7f"
    session.bus.publish(delta(session, "a", turn=3))
    session.bus.publish(AudioOut(session=session.id, turn=3, t=2.25, pcm=pcm, sample_rate=16000, seq=5))
    session.bus.publish(delta(session, "b", turn=3))
    assert await next_of(ob) == text_json(session.id, 1, "a", turn=3)
    data = await next_of(ob)
    assert isinstance(data, bytes)
    assert unpack_frame(data) == Frame(FrameKind.AUDIO_OUT, 3, 2, 2_250_000, pcm)
    assert data == pack_frame(Frame(FrameKind.AUDIO_OUT, 3, 2, 2_250_000, pcm))
    # no JSON for the audio: the next message is the next text, numbered right after the frame
    assert await next_of(ob) == text_json(session.id, 3, "b", turn=3)
    assert ch.replay.since(1) == ([data, text_json(session.id, 3, "b", turn=3)], 0)


async def test_image_out_goes_as_json_then_its_png_frame(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    ob = Outbox(16)
    ch.attach(ob, "p", None)
    sid = session.id
    session.bus.publish(ImageOut(session=sid, turn=4, t=0.5, codes=(7, 8), png=PNG))
    session.bus.publish(ImageOut(session=sid, turn=4, t=0.75, codes=(9,)))
    session.bus.publish(delta(session, "c", turn=4))
    assert json.loads(await next_of(ob) or "") == {
        "type": "event",
        "seq": 1,
        "event": {
            "type": "image.out", "session": sid, "turn": 4, "t": 0.5, "codes": [7, 8],
            "png": {"bytes": len(PNG)},
        },
    }  # fmt: skip
    frame = await next_of(ob)
    assert isinstance(frame, bytes)
    assert unpack_frame(frame) == Frame(FrameKind.IMAGE_OUT, 4, 2, 500_000, PNG)
    # an image without its PNG (no decoder ran) is only the JSON
    assert json.loads(await next_of(ob) or "") == {
        "type": "event",
        "seq": 3,
        "event": {"type": "image.out", "session": sid, "turn": 4, "t": 0.75, "codes": [9], "png": None},
    }
    assert await next_of(ob) == text_json(sid, 4, "c", turn=4)
    assert ch.seq == 4


async def test_send_and_send_error_number_keep_and_deliver(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    ob = Outbox(16)
    ch.attach(ob, "p", None)
    assert ch.send({"type": "pong", "nonce": "n1", "seq": 0}) == 1
    assert await next_of(ob) == '{"type":"pong","nonce":"n1","seq":1}'
    ch.send_error("replay.gap", "2 lost", extra={"lost": 2})
    assert await next_of(ob) == (
        '{"type":"error","seq":2,"code":"replay.gap","message":"2 lost","ref":null,"fatal":false,"lost":2}'
    )
    ch.send_error("protocol.field", "bad", ref="m1", fatal=True)
    assert await next_of(ob) == (
        '{"type":"error","seq":3,"code":"protocol.field","message":"bad","ref":"m1","fatal":true}'
    )
    # a frame's own seq is replaced by the channel's; the rest of it is kept
    assert ch.send(frame=Frame(FrameKind.AUDIO_OUT, 7, 99, 123, b"ab")) == 4
    data = await next_of(ob)
    assert isinstance(data, bytes) and unpack_frame(data) == Frame(FrameKind.AUDIO_OUT, 7, 4, 123, b"ab")
    assert ch.seq == 4
    assert ch.replay.since(0) == (
        [
            '{"type":"pong","nonce":"n1","seq":1}',
            '{"type":"error","seq":2,"code":"replay.gap","message":"2 lost","ref":null,"fatal":false,"lost":2}',
            '{"type":"error","seq":3,"code":"protocol.field","message":"bad","ref":"m1","fatal":true}',
            data,
        ],
        0,
    )


async def test_detached_channel_keeps_numbering_and_resume_replays_what_was_missed(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(3)
    sid = session.id
    ob1 = Outbox(16)
    ch.attach(ob1, "a", None)
    session.bus.publish(delta(session, "m1"))
    session.bus.publish(delta(session, "m2"))
    assert [await next_of(ob1), await next_of(ob1)] == [text_json(sid, 1, "m1"), text_json(sid, 2, "m2")]
    before = time.monotonic()
    ch.detach(ob1)
    after = time.monotonic()
    assert (ch.outbox, ch.attached) == (None, False)
    assert ch.detached_at is not None and before <= ch.detached_at <= after
    for text in ("m3", "m4", "m5"):
        session.bus.publish(delta(session, text))
    await until_seq(ch, 5)
    waiting = asyncio.create_task(ob1.get())
    assert await still_waiting(waiting)  # the detached outbox got nothing more
    waiting.cancel()
    # resume after seq 2: 3..5 are still kept, nothing lost
    ob2 = Outbox(16)
    missed = [text_json(sid, n, f"m{n}") for n in (3, 4, 5)]
    assert ch.attach(ob2, "b", 2) == (missed, 0)
    assert (ch.outbox, ch.peer, ch.detached_at) == (ob2, "b", None)
    # resume after seq 0: 1 and 2 are older than the 3 kept
    ob3 = Outbox(16)
    assert ch.attach(ob3, "c", 0) == (missed, 2)
    assert ch.attach(ob3, "c", 5) == ([], 0)
    assert ch.attach(ob3, "c", 4) == ([text_json(sid, 5, "m5")], 0)
    # the same outbox attached again is not replaced
    assert (ob3.stopped, ob2.close_code) == (False, 4009)


async def test_another_outbox_attaching_closes_the_previous_one_as_replaced(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    sid = session.id
    ob1 = Outbox(16)
    ch.attach(ob1, "a", None)
    waiting = asyncio.create_task(ob1.get())
    assert await still_waiting(waiting)
    ob2 = Outbox(16)
    assert ch.attach(ob2, "b", None) == ([], 0)
    assert (ob1.stopped, ob1.close_code, ob1.close_reason) == (True, 4009, REPLACED)
    assert await asyncio.wait_for(waiting, DEADLINE) is None
    assert (ch.outbox, ch.peer, ob2.stopped) == (ob2, "b", False)
    # the replaced connection's cleanup detaches its own outbox only
    ch.detach(ob1)
    assert (ch.outbox, ch.attached, ch.detached_at) == (ob2, True, None)
    session.bus.publish(delta(session, "to b"))
    assert await next_of(ob2) == text_json(sid, 1, "to b")
    assert await next_of(ob1) is None


async def test_channel_stops_a_client_whose_queue_passes_maxsize(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(8)
    sid = session.id
    slow = Outbox(2)
    ch.attach(slow, "slow", None)
    session.bus.publish(delta(session, "m1"))
    session.bus.publish(delta(session, "m2"))
    await until_seq(ch, 2)
    assert (slow.stopped, slow.close_code) == (False, None)
    session.bus.publish(delta(session, "m3"))
    await until_seq(ch, 3)
    assert (slow.stopped, slow.close_code, slow.close_reason) == (True, CLOSE_TOO_SLOW, TOO_SLOW)
    assert await next_of(slow) is None
    # the channel kept every message: the client resumes on a new connection and gets them all
    fresh = Outbox(2)
    assert ch.attach(fresh, "slow", 0) == ([text_json(sid, n, f"m{n}") for n in (1, 2, 3)], 0)
    assert (slow.close_code, slow.close_reason) == (4008, TOO_SLOW)  # the first reason stays


async def test_resume_preloads_welcome_and_missed_before_new_messages(
    session: Session, make: Callable[[int], Channel]
) -> None:
    ch = make(2)
    sid = session.id
    for n in (1, 2, 3):
        ch.send({"type": "note", "n": n})
    ob = Outbox(1)
    missed, lost = ch.attach(ob, "p", 0)
    assert (missed, lost) == (['{"type":"note","n":2,"seq":2}', '{"type":"note","n":3,"seq":3}'], 1)
    ob.preload(['{"type":"welcome"}', *missed])
    session.bus.publish(delta(session, "new"))
    await until_seq(ch, 4)
    assert [await next_of(ob) for _ in range(4)] == [
        '{"type":"welcome"}',
        '{"type":"note","n":2,"seq":2}',
        '{"type":"note","n":3,"seq":3}',
        text_json(sid, 4, "new"),
    ]
    assert not ob.stopped


async def test_an_event_that_cannot_be_sent_is_logged_and_the_stream_goes_on(
    session: Session, make: Callable[[int], Channel], caplog: pytest.LogCaptureFixture
) -> None:
    ch = make(8)
    ob = Outbox(16)
    ch.attach(ob, "p", None)
    caplog.set_level(logging.ERROR, logger="mio_agent.runtime.net.ws_channel")
    # a turn past a frame's 32-bit stream field: pack_frame refuses it
    session.bus.publish(AudioOut(session=session.id, turn=2**32, pcm=b"\x00\x00", sample_rate=16000, seq=0))
    session.bus.publish(delta(session, "after"))
    # the refused frame took no seq: no hole that a resuming client would be told is lost
    assert await next_of(ob) == text_json(session.id, 1, "after")
    assert ch.replay.since(0) == ([text_json(session.id, 1, "after")], 0)
    assert ch.seq == 1
    records = [r for r in caplog.records if r.name == "mio_agent.runtime.net.ws_channel"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.ERROR, f"session {session.id}: cannot send audio.out")
    ]
    assert records[0].exc_info is not None
