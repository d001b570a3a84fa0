"""The soak's MQTT side: a real broker, a bridge that notes what it queues, a subscriber, their tally."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import socket
import subprocess
import threading
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from mio_agent.config import MqttConfig
from mio_agent.runtime.net.mqtt import MqttBridge
from mio_agent.runtime.voice.hub import SessionHub

__all__ = ["Broker", "CountingBridge", "Subscriber", "mosquitto", "mqtt_tally"]


def mosquitto() -> str | None:
    """The broker's executable, or None (Debian installs it in /usr/sbin, often not on PATH)."""
    exe = shutil.which("mosquitto")
    if exe is None and Path("/usr/sbin/mosquitto").exists():
        exe = "/usr/sbin/mosquitto"
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """mosquitto on a free loopback port, persistent (a restart keeps queued QoS 1 messages)."""

    def __init__(self, exe: str, folder: Path) -> None:
        self.exe = exe
        self.port = _free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\n"
            # a subscriber away during the restart must not lose what queued for it meanwhile
            "max_queued_messages 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def _key(topic: str, payload: bytes) -> int:
    return hash((topic, payload))


class CountingBridge(MqttBridge):
    """The bridge, noting every message it queues (a 64-bit hash of topic and payload), how many it
    dropped past its queue (`lost` is reset when reported, so it is summed here), and its bus
    subscriptions (events dropped there never reach the queue)."""

    def __init__(self, cfg: MqttConfig, hub: SessionHub) -> None:
        super().__init__(cfg, hub)
        self.queued = array("q")
        self.dropped = array("q")
        self.subscriptions: list[Any] = []

    def _put(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        # the queue drops its oldest messages past `mqtt.queue`: note which
        excess = len(self.outbox) + 1 - self.cfg.queue
        doomed = [_key(m.topic, m.payload) for m in itertools.islice(self.outbox, max(0, excess))]
        lost = self.lost
        super()._put(topic, payload, retain=retain)
        self.dropped.extend(doomed[: self.lost - lost])
        data = payload.encode() if isinstance(payload, str) else payload
        self.queued.append(_key(f"{self.prefix}/{topic}", data))

    async def _pump(self, sid: str, sub: Any) -> None:
        self.subscriptions.append(sub)  # its `dropped`: events the bus dropped before the bridge saw them
        await super()._pump(sid, sub)


class Subscriber:
    """A persistent MQTT session (QoS 1) on `prefix/#` noting what arrives, standing for a home
    automation system: paho's own network thread, so nothing of it runs on the server's loop."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port, self.prefix = port, prefix
        self.got = array("q")
        self.connections = 0
        self.ready = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="mio-soak-subscriber", clean_session=False
        )
        client.reconnect_delay_set(1, 2)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self.ready.set()
        client.on_disconnect = lambda *_: self.ready.clear()
        client.on_message = lambda _c, _u, m: self.got.append(_key(m.topic, bytes(m.payload)))
        self._client = client

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not reason.is_failure:
            self.connections += 1
            client.subscribe(f"{self.prefix}/#", qos=1)

    def start(self) -> None:
        self._client.connect_async("127.0.0.1", self.port, keepalive=10)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def mqtt_tally(queued: array[int], got: array[int], dropped: array[int]) -> dict[str, int]:
    """What the subscriber got against what the bridge queued and did not drop (as multisets of
    topic and payload: identical messages, e.g. a state said twice, are told apart by count only)."""
    q, g = Counter(queued), Counter(got)
    q.subtract(Counter(dropped))
    return {
        "mqtt_queued": len(queued),
        "mqtt_dropped_by_bridge": len(dropped),
        "mqtt_delivered": sum(min(n, g[k]) for k, n in q.items()),
        "mqtt_lost": sum(max(0, n - g[k]) for k, n in q.items()),
        "mqtt_duplicates": sum(max(0, n - max(0, q[k])) for k, n in g.items()),
    }
