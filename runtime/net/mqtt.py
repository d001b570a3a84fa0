"""The MQTT bridge: session events published under a topic prefix, commands read back, across broker outages."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mio_agent.config import MqttConfig
from mio_agent.events import AudioOut, Event, ImageOut, SessionState, TextDelta, TurnEnded, event_to_dict
from mio_agent.exceptions import SubscriptionClosed
from mio_agent.protocol.inbound import Problem, ServerProtocol

if TYPE_CHECKING:
    from mio_agent.runtime.voice.hub import SessionHub
    from mio_agent.runtime.voice.session import Session

__all__ = ["BACKOFF_MAX_S", "MqttBridge"]

log = logging.getLogger(__name__)

SEND_WINDOW = 32
"""QoS 1 messages in flight at once (MQTT's usual receive maximum is far larger)."""

BACKOFF_MAX_S = 10.0
"""Longest wait between two reconnection attempts (it doubles from 0.5 s)."""
# not for MQTT: raw microphone frames, camera frames and the level meter (ten a second)
COMMANDS = ("text", "invoke", "interrupt", "mute")
"""The protocol's messages that MQTT takes as commands (docs/mqtt.md)."""
_ACCEPTED = (
    'Commands are {"type": "text", "text": ...}, {"type": "invoke", "name": ..., "text": ...}, '
    '{"type": "interrupt"} and {"type": "mute", "muted": true|false}'
)
_SKIPPED = frozenset({"audio.in", "video.frame", "input.level", "audio.out", "speech.codes"})


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    retain: bool = False


class MqttBridge:
    """Publishes every session of `hub` to the broker of `cfg` and runs the commands it receives.

    Topics (P = `mqtt.prefix`, S = a session id):
    `P/status` "online"/"offline" (retained; the last will says "offline"), `P/S/state` (retained),
    `P/S/event/<type>` (each event as JSON), `P/S/reply` (a turn's whole text at its end),
    `P/S/image` (PNG bytes), `P/S/audio` (PCM16 16 kHz mono, only with `mqtt.publish_audio`),
    `P/S/error`. Commands are JSON on `P/S/command`, or `P/command` for the newest session.

    While the broker is away, messages wait in a queue of `mqtt.queue`; past it the oldest are
    dropped, counted, and reported on `P/S/error` (code `mqtt.lost`) once the broker is back.
    Everything is published with QoS 1, removed from the queue only once the broker took it.
    """

    def __init__(self, cfg: MqttConfig, hub: SessionHub | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix.rstrip("/")
        self.outbox: deque[_Message] = deque()
        self.lost = 0
        self.connected = asyncio.Event()
        self.connections = 0
        self._wake = asyncio.Event()
        self._sessions: dict[str, Session] = {}
        self._newest: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._reply: dict[tuple[str, int], list[str]] = {}
        self._protocols: dict[str, ServerProtocol] = {}
        self._loss_reported_at = float("-inf")
        if hub is not None:
            hub.on_open.append(self.watch)
            for session in hub.sessions:
                self.watch(session)

    # -- outgoing ---------------------------------------------------------------------------
    def _put(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.outbox.append(_Message(f"{self.prefix}/{topic}", data, retain))
        while len(self.outbox) > self.cfg.queue:
            self.outbox.popleft()
            self.lost += 1
        self._wake.set()

    def watch(self, session: Session) -> None:
        """Publish `session`'s events and take commands for it."""
        self._sessions[session.id] = session
        self._newest = session.id
        sub = session.bus.subscribe("mqtt", maxsize=2048, filter=self._wanted)
        self._tasks.append(asyncio.create_task(self._pump(session.id, sub), name=f"mqtt-{session.id}"))

    def _wanted(self, ev: Event) -> bool:
        if isinstance(ev, AudioOut):
            return self.cfg.publish_audio
        return ev.type not in _SKIPPED

    async def _pump(self, sid: str, sub: Any) -> None:
        while True:
            try:
                ev = await sub.get()
            except SubscriptionClosed:
                self._sessions.pop(sid, None)
                self._protocols.pop(sid, None)
                return
            try:
                self._publish_event(sid, ev)
            except Exception:  # one odd event must not stop the bridge
                log.exception("mqtt: cannot publish %s", ev.type)

    def _publish_event(self, sid: str, ev: Event) -> None:
        if isinstance(ev, AudioOut):
            self._put(f"{sid}/audio", ev.pcm)
            return
        self._put(f"{sid}/event/{ev.type}", json.dumps(event_to_dict(ev), separators=(",", ":")))
        if isinstance(ev, SessionState):
            self._put(f"{sid}/state", ev.state, retain=True)
        elif isinstance(ev, TextDelta):
            self._reply.setdefault((sid, ev.turn), []).append(ev.text)
        elif isinstance(ev, ImageOut) and ev.png is not None:
            self._put(f"{sid}/image", ev.png)
        elif isinstance(ev, TurnEnded):
            text = "".join(self._reply.pop((sid, ev.turn), []))
            reply = {"turn": ev.turn, "text": text, "reason": ev.reason}
            self._put(f"{sid}/reply", json.dumps(reply, ensure_ascii=False))
        elif ev.type == "error":
            self._put(f"{sid}/error", json.dumps(event_to_dict(ev), ensure_ascii=False))

    # -- commands -----------------------------------------------------------------------------
    def _command(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self.prefix) + 1 :].split("/")
        sid = parts[0] if len(parts) == 2 else self._newest
        session = self._sessions.get(sid or "")
        where = sid or "-"
        if session is None:
            self._put(
                f"{where}/error", json.dumps({"code": "mqtt.session", "message": f"no open session {sid!r}"})
            )
            return
        protocol = self._protocols.get(session.id)
        if protocol is None:
            # the WebSocket server's own decoder, limited to the commands: the two cannot drift
            protocol = ServerProtocol(session.id, allowed=COMMANDS, source="mqtt")
            self._protocols[session.id] = protocol
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems: list[str] = [f"a command is UTF-8 JSON: {exc}"]
        else:
            problems = []
            for item in protocol.receive(text, 0.0):
                if isinstance(item, Problem):
                    problems.append(item.message)
                elif isinstance(item, Event):
                    session.submit(item)
        for problem in problems:
            shown = payload[:80].decode("utf-8", "replace")
            message = f"bad command {shown!r} on {topic}: {problem}. {_ACCEPTED}"
            self._put(f"{where}/error", json.dumps({"code": "mqtt.command", "message": message}))

    # -- the connection ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._put("status", "online", retain=True)
        self._runner = asyncio.create_task(self._run(), name="mqtt")

    async def _run(self) -> None:
        import aiomqtt

        backoff = 0.5
        while True:
            will = aiomqtt.Will(f"{self.prefix}/status", b"offline", qos=1, retain=True)
            try:
                async with aiomqtt.Client(
                    self.cfg.host,
                    self.cfg.port,
                    username=self.cfg.username,
                    password=self.cfg.password,
                    identifier=self.cfg.client_id,
                    will=will,
                    keepalive=10,
                ) as client:
                    self.connections += 1
                    backoff = 0.5
                    await client.subscribe(f"{self.prefix}/command", qos=1)
                    await client.subscribe(f"{self.prefix}/+/command", qos=1)
                    if self.connections > 1:
                        self._put("status", "online", retain=True)
                    if self.lost:
                        self._report_loss()
                    self.connected.set()
                    reader = asyncio.create_task(self._read(client), name="mqtt-read")
                    sender = asyncio.create_task(self._send(client), name="mqtt-send")
                    try:
                        # whichever ends first ends this connection: a publish failed, or the reader saw
                        # the broker go (an idle bridge publishes nothing, so only the reader notices)
                        await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        reader.cancel()
                        sender.cancel()
                        await asyncio.wait({reader, sender})
                    for task in (reader, sender):
                        error = None if task.cancelled() else task.exception()
                        if isinstance(error, aiomqtt.MqttError):
                            raise error
                        if error is not None:
                            log.error("mqtt: %s failed; reconnecting", task.get_name(), exc_info=error)
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt: broker %s:%d unavailable (%s); retrying in %.1f s",
                    self.cfg.host,
                    self.cfg.port,
                    exc,
                    backoff,
                )
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _report_loss(self) -> None:
        lost, self.lost = self.lost, 0
        log.warning(
            "mqtt: %d message(s) were dropped: the queue of %d was full (broker away or too slow)",
            lost,
            self.cfg.queue,
        )
        for sid in list(self._sessions) or ["-"]:
            report = {
                "code": "mqtt.lost",
                "lost": lost,
                "message": f"{lost} message(s) dropped: the bridge's queue was full",
            }
            self._put(f"{sid}/error", json.dumps(report))

    async def _send(self, client: Any) -> None:
        while True:
            if not self.outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            # a window of messages in flight at once (sent in order, acknowledged in any order):
            # waiting for each acknowledgement alone made a busy machine's queue overflow
            window = list(itertools.islice(self.outbox, SEND_WINDOW))
            results = await asyncio.gather(
                *(client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in window),
                return_exceptions=True,
            )
            for msg, result in zip(window, results, strict=True):
                if isinstance(result, BaseException):
                    # the rest stays queued for the next connection, in order
                    raise result
                # only now is it the broker's (the queue may have dropped it meanwhile: then it is gone)
                if self.outbox and self.outbox[0] is msg:
                    self.outbox.popleft()
            now = asyncio.get_running_loop().time()
            if self.lost and now - self._loss_reported_at >= 1.0:
                # drops with the broker up are said at once (at most once a second), not only after
                # the next outage
                self._loss_reported_at = now
                self._report_loss()

    async def _read(self, client: Any) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self._command(str(message.topic), payload)

    async def aclose(self) -> None:
        """Say "offline" (retained) if connected, then stop."""
        for task in self._tasks:
            task.cancel()
        if self._runner is not None:
            if self.connected.is_set():
                self._put("status", "offline", retain=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        while self.outbox and self.connected.is_set():
                            await asyncio.sleep(0.02)
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await asyncio.gather(*self._tasks, return_exceptions=True)
