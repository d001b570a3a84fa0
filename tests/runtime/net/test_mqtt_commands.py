"""The MQTT bridge's commands and media topics against a real mosquitto (docs/mqtt.md): `invoke`,
`interrupt` and `mute` sent by a plain MQTT client, the image and audio topics, and the order of
the QoS 1 messages queued while the broker was down."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from PIL import Image

from mio_agent.bus import Subscription
from mio_agent.codecs.speech import load_audio
from mio_agent.config import MqttConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.events import AudioIn, AudioOut, Event, ImageOut, TextDelta, TextIn, TurnEnded, event_to_dict
from mio_agent.runtime.net.mqtt import MqttBridge
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources
from tests.runtime.net import test_mqtt
from tests.runtime.net.test_mqtt import Broker, Listener, _until_offline, publish

# the broker of tests/runtime/net/test_mqtt.py: a mosquitto on a loopback port of this test's own
broker = test_mqtt.broker

PREFIX = "home/mio"
# a reply long enough that it is certainly still being generated when it is held (below)
LONG_REPLY = ReplyOptions(
    max_new_tokens=900, min_speech_codes=150, max_speech_codes=200, allow_text=False, allow_image=False
)
# docs/mqtt.md: microphone frames, camera frames and level meters are not published as events;
# reply audio goes to P/S/audio (raw PCM), never as an event; capabilities' speech codes are
# skipped too (not in the docs: see the report of this test file)
NOT_EVENTS = frozenset({"audio.in", "video.frame", "input.level", "audio.out", "speech.codes"})


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
        load_config(
            None,
            overrides={
                "engine.max_new_tokens": 40,
                "engine.seed": 5,
                "router.transcribe": "never",
                "codecs.diffusion_steps": 1,
            },
        )
    )


Bridged = tuple[SessionHub, MqttBridge, Listener]


async def _bridge(shared: SharedResources, broker: Broker, prefix: str, **cfg: Any) -> Bridged:
    hub = SessionHub(shared)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix=prefix, **cfg), hub)
    listener = Listener(broker.port, f"{prefix}/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), 10)
    await bridge.start()
    await asyncio.wait_for(bridge.connected.wait(), 10)  # its command subscriptions are in place
    return hub, bridge, listener


async def _close(hub: SessionHub, bridge: MqttBridge, listener: Listener) -> None:
    await listener.stop()
    await bridge.aclose()
    await hub.aclose()


@pytest.fixture
async def bridged(shared: SharedResources, broker: Broker) -> AsyncIterator[Bridged]:
    parts = await _bridge(shared, broker, PREFIX, queue=500)
    yield parts
    await _close(*parts)


@pytest.fixture
async def bridged_audio(shared: SharedResources, broker: Broker) -> AsyncIterator[Bridged]:
    parts = await _bridge(shared, broker, PREFIX, queue=5000, publish_audio=True)
    yield parts
    await _close(*parts)


def on(topic: str) -> Callable[[tuple[str, bytes]], bool]:
    return lambda m: m[0] == topic


def payloads(listener: Listener, topic: str) -> list[bytes]:
    return [p for t, p in listener.got if t == topic]


def events_of(listener: Listener, sid: str, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads(listener, f"{PREFIX}/{sid}/event/{kind}")]


async def arrives(
    listener: Listener, pred: Callable[[tuple[str, bytes]], bool], since: int, timeout: float = 30
) -> tuple[str, bytes]:
    """The first message after the first `since` ones that matches `pred` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in listener.got[since:]:
            if pred(item):
                return item
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing matching arrived after message {since}; got {listener.got[since:][-20:]}")


async def drain(sub: Subscription) -> list[Event]:
    out = []
    while sub.pending:
        out.append(await sub.get())
    return out


async def retained_state(port: int, topic: str) -> bytes:
    """What a client that subscribes now gets first on `topic`: its retained message."""
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for m in c.messages:
                assert m.retain, f"{topic}: the first message was not the retained one"
                return bytes(m.payload)
    raise AssertionError(f"no retained message on {topic}")


async def test_invoke_runs_the_capability_and_the_image_topic_carries_its_png(
    bridged: Bridged, shared: SharedResources
) -> None:
    hub, _, listener = bridged
    session = await hub.open()
    sid = session.id
    probe = session.bus.subscribe("probe", maxsize=100_000, filter=lambda e: isinstance(e, ImageOut))
    command = {"type": "invoke", "name": "generate_image", "text": "a lighthouse at dusk"}
    await publish(listener.port, f"{PREFIX}/{sid}/command", json.dumps(command))
    _, raw = await listener.wait_for(on(f"{PREFIX}/{sid}/reply"), timeout=120)
    reply = json.loads(raw)
    assert reply["reason"] == "completed", reply
    turn = reply["turn"]
    # the command reached the session as an invocation of that capability, which ran the turn
    (invoked,) = events_of(listener, sid, "capability.invoke")
    assert (invoked["name"], invoked["text"]) == ("generate_image", "a lighthouse at dusk")
    assert [(e["turn"], e["kind"]) for e in events_of(listener, sid, "turn.started")] == [
        (turn, "generate_image")
    ]
    assert [e["capability"] for e in events_of(listener, sid, "route.decided")] == ["generate_image"]
    assert [e["reason"] for e in events_of(listener, sid, "turn.ended")] == ["completed"]
    progress = events_of(listener, sid, "capability.progress")
    assert progress and all(p["name"] == "generate_image" for p in progress)
    # P/S/image: the PNG bytes of the image the session made (its event says only their length)
    (image_event,) = events_of(listener, sid, "image.out")
    (png,) = payloads(listener, f"{PREFIX}/{sid}/image")
    made = [e for e in await drain(probe) if isinstance(e, ImageOut)]
    assert len(made) == 1 and made[0].png is not None
    assert png == made[0].png
    assert image_event["png"] == {"bytes": len(png)} and len(image_event["codes"]) == 32
    size = shared.image_codec().decoder.image_size  # type: ignore[union-attr]
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (size, size)
    # audio is not published without mqtt.publish_audio
    assert not [t for t, _ in listener.got if t.endswith("/audio")]


async def test_an_unknown_capability_is_reported_on_the_error_topic(bridged: Bridged) -> None:
    hub, _, listener = bridged
    session = await hub.open()
    await publish(listener.port, f"{PREFIX}/command", json.dumps({"type": "invoke", "name": "juggle"}))
    _, raw = await listener.wait_for(on(f"{PREFIX}/{session.id}/error"))
    err = json.loads(raw)
    assert err["code"] == "capability.unknown" and "juggle" in err["message"]
    assert "generate_image" in err["message"]  # it says what exists
    assert not events_of(listener, session.id, "turn.started")


async def test_interrupt_ends_a_playing_reply_as_interrupted_and_audio_is_its_pcm(
    bridged_audio: Bridged,
) -> None:
    hub, _, listener = bridged_audio
    session = await hub.open(reply_options=LONG_REPLY)
    sid = session.id
    probe = session.bus.subscribe("probe", maxsize=100_000)
    # a consumer that must see everything ("block", as the session log) and does not read: the
    # reply stops between two steps once it holds 3 audio chunks, so it is certainly still
    # running (and its audio playing) when the interrupt arrives
    gate = session.bus.subscribe("gate", maxsize=3, policy="block", filter=lambda e: isinstance(e, AudioOut))
    await publish(listener.port, f"{PREFIX}/{sid}/command", json.dumps({"type": "text", "text": "a story"}))
    deadline = time.monotonic() + 60
    while len(payloads(listener, f"{PREFIX}/{sid}/audio")) < 3:
        assert time.monotonic() < deadline, "no reply audio reached the audio topic"
        await asyncio.sleep(0.02)
    assert session.agent_active and session.state == "speaking"
    assert not events_of(listener, sid, "turn.ended")

    await publish(listener.port, f"{PREFIX}/{sid}/command", json.dumps({"type": "interrupt"}))
    await listener.wait_for(on(f"{PREFIX}/{sid}/event/playback.clear"))
    gate.close()  # the held reply may go on now: it must stop at once
    _, raw = await listener.wait_for(on(f"{PREFIX}/{sid}/reply"), timeout=60)
    reply = json.loads(raw)
    assert (reply["turn"], reply["reason"]) == (1, "interrupted")
    assert [(e["turn"], e["reason"]) for e in events_of(listener, sid, "turn.ended")] == [(1, "interrupted")]
    assert [e["reason"] for e in events_of(listener, sid, "interrupt")] == ["mqtt"]
    await session.idle(60)

    # P/S/audio: exactly the session's reply audio, chunk for chunk, as 16 kHz mono PCM16
    audio = [e for e in await drain(probe) if isinstance(e, AudioOut)]
    assert audio and all(e.sample_rate == 16000 and e.turn == 1 for e in audio)
    assert [e.seq for e in audio] == list(range(len(audio)))
    # the reply stopped long before its 150 codes (3 s) of speech
    assert sum(e.duration_s for e in audio) < 150 * 0.02
    assert payloads(listener, f"{PREFIX}/{sid}/audio") == [e.pcm for e in audio]
    # the model keeps only what was heard of the interrupted reply
    assert [t.role for t in session.engine.turns] == ["user", "assistant"]


async def test_mute_stops_listening_and_is_the_retained_state(
    bridged: Bridged, espeak: Callable[..., Path]
) -> None:
    hub, _, listener = bridged
    session = await hub.open()
    sid = session.id
    audio, rate = load_audio(espeak("hello there, can you hear me now"))
    mono = audio if audio.ndim == 1 else audio[0]
    speech = (np.clip(mono, -1, 1) * 32767).astype("<i2").tobytes() + bytes(rate * 2)

    def speak() -> None:
        for i in range(0, len(speech), 640):
            session.submit(AudioIn(session=sid, turn=0, pcm=speech[i : i + 640], sample_rate=rate))

    state_topic = f"{PREFIX}/{sid}/state"
    await listener.wait_for(lambda m: m == (state_topic, b"listening"))
    since = len(listener.got)
    await publish(listener.port, f"{PREFIX}/command", json.dumps({"type": "mute", "muted": True}))
    await arrives(listener, lambda m: m == (state_topic, b"muted"), since)
    assert session.state == "muted"
    assert [e["muted"] for e in events_of(listener, sid, "mute")] == [True]
    assert await retained_state(listener.port, state_topic) == b"muted"

    # muted: speech is not heard; a typed turn still runs (its end means the speech before it,
    # had it been taken, would have been processed already)
    speak()
    await publish(listener.port, f"{PREFIX}/{sid}/command", json.dumps({"type": "text", "text": "hi"}))
    await listener.wait_for(on(f"{PREFIX}/{sid}/reply"), timeout=60)
    await session.idle(60)
    assert not events_of(listener, sid, "user.speech.started")
    assert [e["text"] for e in events_of(listener, sid, "user.turn")] == ["hi"]
    # the reply over, the session is still muted, and says so
    assert session.state == "muted"
    assert await retained_state(listener.port, state_topic) == b"muted"

    since = len(listener.got)
    await publish(listener.port, f"{PREFIX}/{sid}/command", json.dumps({"type": "mute", "muted": False}))
    await arrives(listener, lambda m: m == (state_topic, b"listening"), since)
    assert await retained_state(listener.port, state_topic) == b"listening"
    speak()
    await listener.wait_for(on(f"{PREFIX}/{sid}/event/user.speech.started"), timeout=60)
    turn = await listener.wait_for(
        lambda m: m[0] == f"{PREFIX}/{sid}/event/user.turn" and json.loads(m[1])["speech_s"] > 0, timeout=60
    )
    assert json.loads(turn[1])["turn"] == 2
    await session.idle(60)


async def test_events_queued_while_the_broker_is_down_arrive_in_order(
    shared: SharedResources, broker: Broker
) -> None:
    hub, bridge, listener = await _bridge(shared, broker, "p", queue=500)
    try:
        session = await hub.open()
        sid = session.id
        await listener.wait_for(on(f"p/{sid}/event/session.state"))
        deadline = time.monotonic() + 10
        while bridge.outbox:
            assert time.monotonic() < deadline, "the bridge never emptied its queue"
            await asyncio.sleep(0.02)
        probe = session.bus.subscribe("probe", maxsize=100_000, filter=lambda e: e.type not in NOT_EVENTS)
        broker.stop()
        await _until_offline(bridge)
        mark = len(listener.got)
        # two whole turns while the broker is away
        for text in ("first question", "second question"):
            session.submit(TextIn(session=sid, turn=0, text=text))
            await session.idle(60)
        made = await drain(probe)
        assert [e.turn for e in made if isinstance(e, TurnEnded)] == [1, 2]
        # what must arrive, in this order: each event, and after each turn's end its reply
        expected: list[tuple[str, Any]] = []
        for ev in made:
            expected.append((f"p/{sid}/event/{ev.type}", event_to_dict(ev)))
            if isinstance(ev, TurnEnded):
                text = "".join(e.text for e in made if isinstance(e, TextDelta) and e.turn == ev.turn)
                expected.append((f"p/{sid}/reply", {"turn": ev.turn, "text": text, "reason": ev.reason}))
        assert len(bridge.outbox) >= len(expected)
        broker.start()
        last_topic, last = expected[-1]
        await listener.wait_for(lambda m: m[0] == last_topic and json.loads(m[1]) == last, timeout=40)
        got = [
            (t, json.loads(p))
            for t, p in listener.got[mark:]
            if t.startswith(f"p/{sid}/event/") or t == f"p/{sid}/reply"
        ]
        assert [t for t, _ in got] == [t for t, _ in expected]
        assert got == expected
        assert bridge.connections >= 2 and bridge.lost == 0
    finally:
        await _close(hub, bridge, listener)


async def test_an_idle_bridge_reconnects_after_a_broker_restart_and_takes_commands(
    shared: SharedResources, broker: Broker
) -> None:
    hub, bridge, listener = await _bridge(shared, broker, PREFIX, queue=500)
    try:
        session = await hub.open()
        sid = session.id
        await listener.wait_for(on(f"{PREFIX}/{sid}/event/session.state"))
        deadline = time.monotonic() + 10
        while bridge.outbox:
            assert time.monotonic() < deadline, "the bridge never emptied its queue"
            await asyncio.sleep(0.02)
        # nothing to publish: only the command reader can notice that the broker restarted
        broker.stop()
        broker.start()
        deadline = time.monotonic() + 40
        while bridge.connections < 2 or not bridge.connected.is_set():
            assert time.monotonic() < deadline, "an idle bridge never reconnected after the broker restarted"
            await asyncio.sleep(0.05)
        await publish(
            listener.port, f"{PREFIX}/command", json.dumps({"type": "text", "text": "still there?"})
        )
        _, raw = await listener.wait_for(on(f"{PREFIX}/{sid}/reply"), timeout=60)
        assert json.loads(raw)["turn"] == 1
    finally:
        await _close(hub, bridge, listener)
