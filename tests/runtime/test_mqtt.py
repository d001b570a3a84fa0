"""The MQTT bridge against a real mosquitto on a loopback port: commands, events, a broker restart,
loss beyond the queue, and the last will of a killed assistant."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mio_agent.config import MqttConfig, load_config
from mio_agent.events import TextIn
from mio_agent.runtime.hub import SessionHub
from mio_agent.runtime.mqtt import MqttBridge
from mio_agent.runtime.resources import Resources

aiomqtt = pytest.importorskip("aiomqtt")
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto on a free loopback port, with persistence so a restart keeps queued QoS 1 messages."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\n"
        )
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def res() -> Resources:
    return Resources.load(
        load_config(None, overrides={"engine.max_new_tokens": 40, "router.transcribe": "never"})
    )


class Listener:
    """A plain MQTT client that collects what it receives (a persistent session: it gets QoS 1
    messages published while it was away)."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.got: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="test-listener", clean_session=False
                ) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        self.got.append((str(m.topic), bytes(m.payload)))
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, pred: Any, timeout: float = 30) -> tuple[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.got:
                if pred(item):
                    return item
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing matching arrived; got topics {sorted({t for t, _ in self.got})}")


async def _until_offline(bridge: MqttBridge, timeout: float = 20.0) -> None:
    """Wait until the bridge has noticed that the broker went away (a keepalive at the latest)."""
    deadline = time.monotonic() + timeout
    while bridge.connected.is_set():
        assert time.monotonic() < deadline, "the bridge never noticed the broker had gone"
        await asyncio.sleep(0.05)


async def publish(port: int, topic: str, payload: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.publish(topic, payload.encode(), qos=1)


@pytest.fixture
async def bridged(res: Resources, broker: Broker) -> AsyncIterator[tuple[SessionHub, MqttBridge, Listener]]:
    hub = SessionHub(res)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="home/mio", queue=200), hub)
    listener = Listener(broker.port, "home/mio/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), 10)
    await bridge.start()
    yield hub, bridge, listener
    await listener.stop()
    await bridge.aclose()
    await hub.aclose()


async def test_a_text_command_runs_a_turn_and_its_events_are_published(
    bridged: tuple[SessionHub, MqttBridge, Listener],
) -> None:
    hub, bridge, listener = bridged
    session = await hub.open()
    await listener.wait_for(lambda m: m == ("home/mio/status", b"online"))
    await asyncio.wait_for(bridge.connected.wait(), 10)
    await publish(listener.port, "home/mio/command", json.dumps({"type": "text", "text": "hello"}))
    started = await listener.wait_for(lambda m: m[0] == f"home/mio/{session.id}/event/turn.started")
    assert json.loads(started[1])["session"] == session.id
    reply = await listener.wait_for(lambda m: m[0] == f"home/mio/{session.id}/reply")
    assert json.loads(reply[1])["reason"] == "completed"
    await listener.wait_for(lambda m: m[0] == f"home/mio/{session.id}/state")


async def test_a_bad_command_is_answered_on_the_error_topic(
    bridged: tuple[SessionHub, MqttBridge, Listener],
) -> None:
    hub, bridge, listener = bridged
    session = await hub.open()
    await asyncio.wait_for(bridge.connected.wait(), 10)  # its command subscription is in place
    await publish(listener.port, f"home/mio/{session.id}/command", '{"type": "dance"}')
    topic, payload = await listener.wait_for(lambda m: m[0] == f"home/mio/{session.id}/error")
    err = json.loads(payload)
    assert err["code"] == "mqtt.command" and "dance" in err["message"] and '"type": "text"' in err["message"]
    await publish(listener.port, f"home/mio/{session.id}/command", "not json")
    await listener.wait_for(lambda m: m[0] == topic and b"not json" in m[1])


async def test_events_while_the_broker_is_down_arrive_after_it_is_back(
    res: Resources, broker: Broker
) -> None:
    hub = SessionHub(res)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="p", queue=500), hub)
    listener = Listener(broker.port, "p/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), 10)
    await bridge.start()
    session = await hub.open()
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        broker.stop()
        await _until_offline(bridge)
        # the session goes on without the broker: a whole turn happens while it is away
        session.submit(TextIn(session=session.id, turn=0, text="are you there"))
        await session.idle(60)
        assert len(bridge.outbox) > 0
        broker.start()
        ended = await listener.wait_for(lambda m: m[0] == f"p/{session.id}/event/turn.ended", timeout=40)
        assert json.loads(ended[1])["reason"] == "completed"
        assert bridge.connections >= 2 and bridge.lost == 0
    finally:
        await listener.stop()
        await bridge.aclose()
        await hub.aclose()


async def test_loss_beyond_the_queue_is_reported(res: Resources, broker: Broker) -> None:
    hub = SessionHub(res)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="q", queue=5), hub)
    listener = Listener(broker.port, "q/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), 10)
    await bridge.start()
    session = await hub.open()
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        broker.stop()
        await _until_offline(bridge)
        session.submit(TextIn(session=session.id, turn=0, text="talk"))
        await session.idle(60)
        assert bridge.lost > 0
        lost = bridge.lost
        broker.start()
        _, payload = await listener.wait_for(
            lambda m: m[0] == f"q/{session.id}/error" and b"mqtt.lost" in m[1], 40
        )
        assert json.loads(payload)["lost"] >= lost
    finally:
        await listener.stop()
        await bridge.aclose()
        await hub.aclose()


async def test_a_killed_assistant_goes_offline_through_its_last_will(broker: Broker, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MIO_AGENT__MQTT__ENABLED": "true",
        "MIO_AGENT__MQTT__PORT": str(broker.port),
        "MIO_AGENT__MQTT__PREFIX": "will",
    }
    listener = Listener(broker.port, "will/status")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), 10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mio_agent.cli.main", "serve", "--port", "0", "--no-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await listener.wait_for(lambda m: m == ("will/status", b"online"), timeout=90)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await listener.wait_for(lambda m: m == ("will/status", b"offline"), timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        await listener.stop()
