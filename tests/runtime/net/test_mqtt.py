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
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from mio_agent.config import MqttConfig, load_config
from mio_agent.events import TextIn
from mio_agent.runtime.net.mqtt import MqttBridge
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import SharedResources

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
# bounds that only turn a hang into a failure: nothing here is timed against them
HANG_S = 60.0
FIRST_START_TRIES = 5


def reserve_port() -> socket.socket:
    """A loopback port the kernel says is free, held by a socket that stays bound (never listening).

    SO_REUSEADDR lets mosquitto (which sets it too) bind and listen beside it, while a program that
    binds without it (the default) is refused the port for as long as this socket is open.
    """
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


class Broker:
    """A mosquitto on a loopback port of its own for the whole test, with persistence so a restart
    keeps queued QoS 1 messages.

    The port must stay ours from the first start to the end of the test: the bridge and the
    listener are configured with it, and the broker is stopped and started again on it. A port
    found free and released at once (bind, close) could be taken by another program before
    mosquitto binds it, or while it is down. So a socket holds the port (see `reserve_port`) for
    the broker's whole life. A program that also sets SO_REUSEADDR could still bind it while no
    broker listens: at the first start that only costs a retry on a new port (nothing uses the port
    yet); at a restart the port cannot change, so that is a failure that says so.

    Whether our mosquitto is the one listening is read from its own log ("running", or "Address
    already in use" and an exit), never from a connection, which would succeed to a stranger too.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._holder = reserve_port()
        self.port = int(self._holder.getsockname()[1])
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._running = threading.Event()
        self._exited = threading.Event()

    def _write_config(self) -> Path:
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.folder}/\nautosave_interval 1\nlog_dest stderr\n"
        )
        return conf

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        # drains the pipe (a full pipe would block mosquitto) and marks its start or its exit; the
        # log goes to stderr, which is unbuffered (on stdout it would sit in a buffer)
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip())
            if line.rstrip().endswith(" running"):
                self._running.set()
        self._exited.set()

    def _launch(self) -> bool:
        """Start mosquitto on `self.port`: True once it listens, False if the port was in use."""
        assert MOSQUITTO is not None
        self.log, self._running, self._exited = [], threading.Event(), threading.Event()
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._write_config())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + HANG_S
        while not (self._running.is_set() or self._exited.is_set()):
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"mosquitto neither started nor exited in {HANG_S:g} s: {self.log}")
            self._exited.wait(0.02)
        if self._running.is_set() and proc.poll() is None:
            self.proc = proc
            return True
        proc.wait(HANG_S)
        self._exited.wait(HANG_S)
        if any("address already in use" in line.lower() for line in self.log):
            return False
        raise AssertionError(f"mosquitto exited with status {proc.returncode}: {self.log}")

    def start_first(self) -> None:
        """The first start: on a port taken after all, move to a new one (nothing uses it yet)."""
        for _ in range(FIRST_START_TRIES):
            if self._launch():
                return
            self._holder.close()
            self._holder = reserve_port()
            self.port = int(self._holder.getsockname()[1])
        raise AssertionError(f"mosquitto found its port in use {FIRST_START_TRIES} times in a row")

    def start(self) -> None:
        """Start again on the same port, which the bridge and the listener are configured with."""
        if not self._launch():
            pytest.fail(
                f"port {self.port} was taken by another program while the broker was down (it binds "
                f"with SO_REUSEADDR, so the socket held on the port could not keep it out): {self.log}"
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(HANG_S)
            self._exited.wait(HANG_S)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self._holder.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (scripts/setup.sh installs it)")
    b = Broker(tmp_path)
    try:
        b.start_first()
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources.load(
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
        self.arrived = asyncio.Event()

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
                        self.arrived.set()
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

    async def wait_for(self, pred: Any, timeout: float = HANG_S) -> tuple[str, bytes]:
        """The first message matching `pred`, waiting for each new arrival; fails after `timeout`."""

        async def match() -> tuple[str, bytes]:
            seen = 0
            while True:
                for item in self.got[seen:]:
                    if pred(item):
                        return item
                seen = len(self.got)
                self.arrived.clear()
                await self.arrived.wait()

        try:
            return await asyncio.wait_for(match(), timeout)
        except TimeoutError:
            topics = sorted({t for t, _ in self.got})
            raise AssertionError(f"nothing matching arrived in {timeout:g} s; got topics {topics}") from None


async def _until_offline(bridge: MqttBridge, timeout: float = HANG_S) -> None:
    """Wait until the bridge has noticed that the broker went away (a keepalive at the latest).

    The bridge has no event for losing its connection, only `connected` being cleared: this looks
    at it every 50 ms and fails (rather than hangs) if it stays set.
    """
    deadline = time.monotonic() + timeout
    while bridge.connected.is_set():
        assert time.monotonic() < deadline, (
            f"the bridge did not notice in {timeout:g} s that the broker had gone"
        )
        await asyncio.sleep(0.05)


async def publish(port: int, topic: str, payload: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.publish(topic, payload.encode(), qos=1)


@pytest.fixture
async def bridged(
    shared: SharedResources, broker: Broker
) -> AsyncIterator[tuple[SessionHub, MqttBridge, Listener]]:
    hub = SessionHub(shared)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="home/mio", queue=200), hub)
    listener = Listener(broker.port, "home/mio/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), HANG_S)
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
    await asyncio.wait_for(bridge.connected.wait(), HANG_S)
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
    await asyncio.wait_for(bridge.connected.wait(), HANG_S)  # its command subscription is in place
    await publish(listener.port, f"home/mio/{session.id}/command", '{"type": "dance"}')
    topic, payload = await listener.wait_for(lambda m: m[0] == f"home/mio/{session.id}/error")
    err = json.loads(payload)
    assert err["code"] == "mqtt.command" and "dance" in err["message"] and '"type": "text"' in err["message"]
    await publish(listener.port, f"home/mio/{session.id}/command", "not json")
    await listener.wait_for(lambda m: m[0] == topic and b"not json" in m[1])


async def test_events_while_the_broker_is_down_arrive_after_it_is_back(
    shared: SharedResources, broker: Broker
) -> None:
    hub = SessionHub(shared)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="p", queue=500), hub)
    listener = Listener(broker.port, "p/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), HANG_S)
    await bridge.start()
    session = await hub.open()
    try:
        await asyncio.wait_for(bridge.connected.wait(), HANG_S)
        broker.stop()
        await _until_offline(bridge)
        # the session goes on without the broker: a whole turn happens while it is away
        session.submit(TextIn(session=session.id, turn=0, text="are you there"))
        await session.idle(60)
        assert len(bridge.outbox) > 0
        broker.start()
        ended = await listener.wait_for(lambda m: m[0] == f"p/{session.id}/event/turn.ended", timeout=HANG_S)
        assert json.loads(ended[1])["reason"] == "completed"
        assert bridge.connections >= 2 and bridge.lost == 0
    finally:
        await listener.stop()
        await bridge.aclose()
        await hub.aclose()


async def test_loss_beyond_the_queue_is_reported(shared: SharedResources, broker: Broker) -> None:
    hub = SessionHub(shared)
    bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port, prefix="q", queue=5), hub)
    listener = Listener(broker.port, "q/#")
    listener.start()
    await asyncio.wait_for(listener.ready.wait(), HANG_S)
    await bridge.start()
    session = await hub.open()
    try:
        await asyncio.wait_for(bridge.connected.wait(), HANG_S)
        broker.stop()
        await _until_offline(bridge)
        session.submit(TextIn(session=session.id, turn=0, text="talk"))
        await session.idle(60)
        assert bridge.lost > 0
        lost = bridge.lost
        broker.start()
        _, payload = await listener.wait_for(
            lambda m: m[0] == f"q/{session.id}/error" and b"mqtt.lost" in m[1], HANG_S
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
    await asyncio.wait_for(listener.ready.wait(), HANG_S)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mio_agent.cli.main", "serve", "--port", "0", "--no-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await listener.wait_for(
            lambda m: m == ("will/status", b"online"), timeout=3 * HANG_S
        )  # a new process loads the model first
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await listener.wait_for(lambda m: m == ("will/status", b"offline"), timeout=HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        await listener.stop()
