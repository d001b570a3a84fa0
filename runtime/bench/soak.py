"""`mio-agent bench soak`: many WebSocket sessions for many minutes on one real server, with the MQTT
bridge on a real broker; every kind of turn, failing and hanging capabilities, barge-ins, dropped
connections resumed, a broker restart. Reports what must not happen (lost or duplicated messages,
tracebacks, leaks) rather than speed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import itertools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from mio_agent import hookimpl
from mio_agent.capability import Capability, CapabilityContext
from mio_agent.config import MqttConfig, ServerConfig, load_config
from mio_agent.engine import ReplyOptions
from mio_agent.events import OutputEvent
from mio_agent.plugin import PluginManager
from mio_agent.protocol import FrameKind, unpack_frame
from mio_agent.runtime.net.client import MioClient
from mio_agent.runtime.net.mqtt import MqttBridge
from mio_agent.runtime.net.server import MioServer
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.resources import Resources

__all__ = ["KINDS", "bench_soak", "bench_soak_cli"]

log = logging.getLogger(__name__)

KINDS = ("spoken", "typed", "image", "invoke", "invoke_raises", "invoke_hangs", "barge_in", "resume")
"""What a client does, one action at a time: every kind once per round, each round in a seeded order."""

TIMEOUT_S = 8.0
"""`plugins.timeout_s` of the soak: the hanging capability is stopped after this (it applies to
every capability: a normal one on a loaded machine takes seconds)."""
ACTION_TIMEOUT_S = 180.0
"""How long one action may wait for its turn to end before it counts as timed out (a loaded machine)."""
REAP_S = 1.0
"""How long the server keeps sessions whose client left, once every client has left (see `_reaped`)."""

SPOKEN_LINES = (
    "could you tell me what the weather will be like later today",
    "hello, I would like to know when the next train leaves",
    "please remind me what we were talking about a moment ago",
)
TYPED_LINES = (
    "hello there, how are you today",
    "what time do the shops close on sundays",
    "tell me something nice about the sea",
    "can you help me plan a quiet weekend",
    "which fruit has the most vitamin c",
)
IMAGE_LINE = "tell me about this one"
LONG_LINE = "please talk for a long while about mountains and rivers"
INVOKE_LINE = "write two lines about rain"


# -- the two misbehaving capabilities ------------------------------------------------------
class _Raises(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield ctx.progress(0, 1, "about to fail")
        raise RuntimeError("the soak's capability fails on purpose")


class _Hangs(Capability):
    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        yield ctx.progress(0, 1, "about to hang")
        await asyncio.sleep(3600)  # stopped at plugins.timeout_s


class SoakPlugin:
    """`soak_raises` raises after its first event; `soak_hangs` waits until it is stopped."""

    @hookimpl
    def mio_agent_capabilities(self) -> list[Capability]:
        def cap(cls: type[Capability], name: str) -> Capability:
            return cls(
                name=name, description=f"{name} (bench soak)", inputs=("text",), outputs=("text",),
                mode="std", preset="text", prompt="{text}",
            )  # fmt: skip

        return [cap(_Raises, "soak_raises"), cap(_Hangs, "soak_hangs")]


# -- what the run logs ---------------------------------------------------------------------
class _LogTally(logging.Handler):
    """Counts, from every logger, ERROR records that carry a traceback, and warnings by logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.tracebacks = 0
        self.samples: list[str] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.warnings: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{record.name}: {record.getMessage()}"[:300])
            if record.exc_info:
                self.tracebacks += 1
                if len(self.samples) < 5:
                    exc = record.exc_info[1]
                    self.samples.append(f"{record.name}: {record.getMessage()[:200]} ({exc!r})"[:400])
        else:
            self.warnings[record.name] += 1


# -- a real broker, and a subscriber that checks what it passed on ----------------------------
def _mosquitto() -> str | None:
    exe = shutil.which("mosquitto")
    if exe is None and Path("/usr/sbin/mosquitto").exists():
        exe = "/usr/sbin/mosquitto"
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Broker:
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


class _CountingBridge(MqttBridge):
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


class _Subscriber:
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


def _mqtt_tally(queued: array[int], got: array[int], dropped: array[int]) -> dict[str, int]:
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


# -- one client --------------------------------------------------------------------------------
@dataclass
class _Tallies:
    """What every client adds to (one event loop: no locks)."""

    attempted: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    resumes: int = 0
    missed: int = 0
    gap_lost: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    audio_bytes: int = 0
    text_deltas: int = 0
    leave_seq: dict[str, int] = field(default_factory=dict)
    """The newest seq of each session when its client left."""

    def outcome(self, kind: str, what: str, ok: bool) -> None:
        self.outcomes.setdefault(kind, Counter())[what] += 1
        if ok:
            self.completed[kind] += 1


class _Soaker:
    """One client: a session it keeps across its own dropped connections, acting until time is up."""

    def __init__(
        self,
        index: int,
        url: str,
        *,
        seed: int,
        mode: str,
        speech: list[bytes],
        server_seq: Callable[[str], int],
        tallies: _Tallies,
    ) -> None:
        self.index = index
        self.rng = random.Random(f"soak:{seed}:{index}")
        self.client = MioClient(url, mode=mode)
        self.speech = speech
        self.server_seq = server_seq
        self.t = tallies
        self.seen = bytearray()
        """How many times each seq arrived (index = seq), across every connection of the session."""
        self.last = 0
        """The newest seq processed (what a resume asks after)."""
        self.user_turns: list[int] = []
        self.ended: dict[int, str] = {}
        self.output: set[int] = set()
        self.turn_errors: dict[int, list[str]] = {}
        self.audio_bytes: Counter[int] = Counter()
        self.speaking = 0
        self.speech_ended = 0
        self.levels = 0
        self.pongs: set[str] = set()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._conn_last = 0

    # -- connection ---------------------------------------------------------------------------
    async def connect(self, *, resume: bool = False) -> None:
        if resume:
            self.client.last_seq = self.last
            welcome = await self.client.connect(resume=self.client.session)
            if not welcome.resumed:
                raise AssertionError("a resume was answered as a new session")
            self.t.resumes += 1
            self.t.missed += welcome.missed
        else:
            welcome = await self.client.connect()
            self.last = self.client.last_seq
        self._conn_last = int(welcome.raw["seq"]) if not resume else self.last
        self._reader = asyncio.create_task(self._read(), name=f"soak-reader-{self.index}")

    def _note_seq(self, seq: int) -> None:
        if seq >= len(self.seen):
            self.seen.extend(bytes(seq + 1024 - len(self.seen)))
        self.seen[seq] = min(255, self.seen[seq] + 1)
        if seq != self._conn_last + 1:
            self.t.out_of_order += 1
        self._conn_last = seq
        self.last = max(self.last, seq)
        self.t.received += 1

    async def _read(self) -> None:
        ws = self.client.ws
        assert ws is not None
        try:
            while True:
                raw = await ws.recv()
                self._handle(raw)
                self._changed.set()
        except Exception as exc:  # ConnectionClosed, or the transport we aborted
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            if not self._closing:
                self.t.closes[str(code or type(exc).__name__)] += 1
        finally:
            self._changed.set()

    def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            frame = unpack_frame(raw)
            self._note_seq(frame.seq)
            if frame.kind == FrameKind.AUDIO_OUT:
                self.output.add(frame.stream)
                self.audio_bytes[frame.stream] += len(frame.payload)
                self.t.audio_bytes += len(frame.payload)
            return
        msg = json.loads(raw)
        self._note_seq(int(msg["seq"]))
        if msg["type"] == "error":
            self.t.errors[msg["code"]] += 1
            if msg["code"] == "replay.gap":
                self.t.gap_lost += int(msg.get("lost", 0))
        elif msg["type"] == "pong":
            self.pongs.add(str(msg.get("nonce")))
        elif msg["type"] == "event":
            ev = msg["event"]
            kind, turn = ev["type"], int(ev.get("turn", 0))
            if kind == "user.turn":
                self.user_turns.append(turn)
            elif kind == "turn.ended":
                self.ended[turn] = str(ev.get("reason"))
            elif kind in ("text.delta", "speech.codes"):
                self.output.add(turn)
                self.t.text_deltas += kind == "text.delta"
            elif kind == "user.speech.started":
                self.speaking += 1
            elif kind == "user.speech.ended":
                self.speaking -= 1
                self.speech_ended += 1
            elif kind == "input.level":
                self.levels += 1
            elif kind == "error":
                self.t.errors[ev["code"]] += 1
                self.turn_errors.setdefault(turn, []).append(ev["code"])

    async def _until(self, cond: Callable[[], bool], timeout: float = ACTION_TIMEOUT_S) -> None:
        """Wait for `cond`; a connection that dropped on its own is resumed meanwhile."""
        async with asyncio.timeout(timeout):
            while not cond():
                if self._reader is not None and self._reader.done():
                    await self._resume_after(0.1)
                    continue
                self._changed.clear()
                await self._changed.wait()

    async def _resume_after(self, pause: float) -> None:
        if self._reader is not None:
            await asyncio.wait({self._reader})
        self.client.ws = None
        await asyncio.sleep(pause)
        await self.connect(resume=True)

    async def _drop(self) -> None:
        """Close the TCP socket without a close frame (a cable pulled), then resume after a pause."""
        ws = self.client.ws
        assert ws is not None
        self._closing = True
        ws.transport.abort()
        if self._reader is not None:
            await asyncio.wait({self._reader})
        self._closing = False
        await self._resume_after(self.rng.uniform(0.05, 0.5))

    # -- actions ------------------------------------------------------------------------------
    async def _turn(self, send: Callable[[], Any]) -> int:
        """Send, then the number of the user turn it made."""
        k = len(self.user_turns)
        await send()
        await self._until(lambda: len(self.user_turns) > k)
        return self.user_turns[k]

    async def _played(self, n: int) -> None:
        """Say the turn's audio was heard to the end (as a client that played it would)."""
        ms = self.audio_bytes.pop(n, 0) / 32.0
        if ms and self.client.ws is not None:
            await self.client.playback(n, ms)

    async def _ended(self, n: int) -> str:
        await self._until(lambda: n in self.ended)
        await self._played(n)
        return self.ended[n]

    async def act(self, kind: str) -> None:
        self.t.attempted[kind] += 1
        try:
            what, ok = await getattr(self, f"_{kind}")()
        except TimeoutError:
            what, ok = "timed out", False
        except (ConnectionClosed, OSError) as exc:  # a send on a connection that dropped by itself
            what, ok = f"connection lost: {type(exc).__name__}", False
            await self._resume_after(0.1)
        self.t.outcome(kind, what, ok)

    async def _typed(self) -> tuple[str, bool]:
        n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
        reason = await self._ended(n)
        return reason, reason in ("completed", "length")

    async def _image(self) -> tuple[str, bool]:
        from PIL import Image

        pixels = np.random.default_rng(self.rng.getrandbits(32)).integers(0, 256, (48, 64, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")

        async def send() -> None:
            await self.client.send_image(buf.getvalue(), "soak.png")
            await self.client.send_text(IMAGE_LINE)

        reason = await self._ended(await self._turn(send))
        return reason, reason in ("completed", "length")

    async def _invoke_as(self, name: str, text: str) -> tuple[str, list[str]]:
        n = await self._turn(lambda: self.client.invoke(name, text))
        return await self._ended(n), self.turn_errors.get(n, [])

    async def _invoke(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("text_generation", INVOKE_LINE)
        shown = f"{reason} ({', '.join(errors)})" if errors else reason
        return shown, reason in ("completed", "length") and not errors

    async def _invoke_raises(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("soak_raises", "go")
        return reason, reason == "error" and errors == ["capability.error"]

    async def _invoke_hangs(self) -> tuple[str, bool]:
        reason, errors = await self._invoke_as("soak_hangs", "go")
        return reason, reason == "error" and errors == ["capability.timeout"]

    async def _spoken(self) -> tuple[str, bool]:
        pcm = self.rng.choice(self.speech)
        k, ended0, levels0 = len(self.user_turns), self.speech_ended, self.levels
        # the session sends one input.level per 5 frames of 20 ms it has processed
        levels = len(pcm) // 640 // 5
        sender = asyncio.create_task(self.client.send_audio(pcm, 16000, realtime=4.0))
        sender.add_done_callback(lambda _: self._changed.set())
        try:
            # all of it sent and processed, and the speech in it over
            await self._until(
                lambda: (
                    sender.done()
                    and self.levels - levels0 >= levels
                    and self.speech_ended > ended0
                    and self.speaking == 0
                )
            )
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        try:
            await self._until(lambda: len(self.user_turns) > k, 30)
        except TimeoutError:
            return "no turn was heard", False
        reasons = [await self._ended(n) for n in list(self.user_turns[k:])]
        shown = reasons[-1] if len(reasons) == 1 else f"{reasons[-1]} ({len(reasons)} turns)"
        return shown, reasons[-1] in ("completed", "length")

    async def _barge_in(self) -> tuple[str, bool]:
        n = await self._turn(lambda: self.client.send_text(LONG_LINE))
        await self._until(lambda: n in self.output or n in self.ended)
        if n in self.ended:
            reason = await self._ended(n)
            return f"ended before the interrupt ({reason})", True
        await self.client.interrupt()
        reason = await self._ended(n)
        return reason, reason in ("interrupted", "completed", "length")

    async def _resume(self) -> tuple[str, bool]:
        if self.rng.random() < 0.5:
            await self._drop()  # while idle
            n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
        else:
            n = await self._turn(lambda: self.client.send_text(self.rng.choice(TYPED_LINES)))
            await self._until(lambda: n in self.output or n in self.ended)
            await self._drop()  # mid-reply
        reason = await self._ended(n)
        return reason, reason in ("completed", "length")

    # -- the whole life ---------------------------------------------------------------------------
    async def run(self, deadline: float) -> None:
        await self.connect()
        rounds = 0
        try:
            while rounds == 0 or time.monotonic() < deadline:
                order = list(KINDS)
                self.rng.shuffle(order)
                for kind in order:
                    if rounds > 0 and time.monotonic() >= deadline:
                        break
                    await self.act(kind)
                rounds += 1
            await self._leave()
        finally:
            self._closing = True
            if self.client.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.close(), 10)
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)

    async def _leave(self) -> None:
        """Read everything the server numbered for this session, then close cleanly, and count what
        never arrived or arrived twice."""
        nonce = f"bye-{self.index}"
        await self.client.ping(nonce)
        await self._until(lambda: nonce in self.pongs, 60)
        sid = self.client.session
        await self._until(lambda: self.last >= self.server_seq(sid), 60)
        newest = self.server_seq(sid)
        self._closing = True
        await self.client.close()
        counts = self.seen[1 : newest + 1].ljust(newest, b"\0")
        self.t.lost += counts.count(0)
        self.t.duplicated += sum(c - 1 for c in counts if c > 1)
        self.t.leave_seq[sid] = newest


# -- the run --------------------------------------------------------------------------------------
def _speech_pcm(folder: Path) -> list[bytes]:
    from mio_agent.runtime.bench.voice import _pcm, _speech

    silence = bytes(16000 * 2)  # a second: the turn ends after the VAD's end-of-turn silence
    return [_pcm(_speech(line, folder)) + silence for line in SPOKEN_LINES]


def _warm_default_executor(loop: asyncio.AbstractEventLoop, workers: int) -> None:
    """Give the loop a default executor with all its threads started, so the idle thread count
    already holds the ones that stay (a ThreadPoolExecutor keeps idle workers)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soak-default")
    barrier = threading.Barrier(workers)
    for f in [pool.submit(barrier.wait, 30) for _ in range(workers)]:
        f.result()
    loop.set_default_executor(pool)


def _tasks() -> int:
    current = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not current and not t.done())


@contextlib.contextmanager
def _tally_logs() -> Iterator[_LogTally]:
    tally = _LogTally()
    root = logging.getLogger()
    root.addHandler(tally)
    try:
        yield tally
    finally:
        root.removeHandler(tally)


async def _until_true(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def _settle(step: str, closing: Awaitable[Any], errors: list[str]) -> None:
    """Await one step of the teardown; a failure is noted (a figure), and the next step runs."""
    try:
        await closing
    except Exception as exc:
        errors.append(f"{step}: {type(exc).__name__}: {exc}"[:400])


async def _reaped(server: MioServer, timeout: float) -> bool:
    """Let the server's own reaper close the sessions whose clients left, after `REAP_S` instead
    of minutes (the bench lowers the module's keep time once every client has left)."""
    from mio_agent.runtime.net import server as server_module

    kept = server_module.KEEP_DETACHED_S
    server_module.KEEP_DETACHED_S = REAP_S
    try:
        return await _until_true(lambda: not server.channels, timeout)
    finally:
        server_module.KEEP_DETACHED_S = kept


async def bench_soak(*, minutes: float = 10.0, sessions: int = 8, seed: int = 0) -> dict[str, Any]:
    """`sessions` clients act for `minutes` on one server (and broker); one dict of figures."""
    import psutil

    proc = psutil.Process()
    loop = asyncio.get_running_loop()
    _warm_default_executor(loop, min(32, (os.cpu_count() or 1) + 4))
    cfg = load_config(
        None,
        overrides={"engine.max_new_tokens": 200, "engine.seed": seed, "plugins.timeout_s": TIMEOUT_S},
    )
    plugins = PluginManager(autoload=False, disabled=cfg.plugins.disabled)
    plugins.register(SoakPlugin(), "soak")
    plugins.load(cfg)
    res = await asyncio.to_thread(Resources.load, cfg, plugins=plugins)
    figures: dict[str, Any] = {
        "bench": "soak",
        "minutes": minutes,
        "sessions": sessions,
        "seed": seed,
        "cpu_threads": os.cpu_count() or 0,
    }
    with (
        tempfile.TemporaryDirectory(prefix="mio-soak-") as tmp,
        _tally_logs() as logs,
        contextlib.ExitStack() as cleanup,
    ):
        folder = Path(tmp)
        speech = await asyncio.to_thread(_speech_pcm, folder)
        figures["speech"] = "espeak-ng" if shutil.which("espeak-ng") else "synthetic"
        exe = _mosquitto()
        broker = _Broker(exe, folder) if exe is not None else None
        hub = SessionHub(res, log_root=folder / "sessions")
        server = MioServer(
            hub,
            ServerConfig(port=0, max_sessions=sessions + 4, max_sessions_per_client=sessions + 2),
            # a voice reply is one speech block of 16 to 40 frames: it must fit engine.max_new_tokens
            # (4 layers of codes and 3 markers), or the reply ends at once, empty
            reply_options=ReplyOptions(min_speech_codes=16, max_speech_codes=40, allow_image=False),
        )
        port = await server.start()
        await res.plugins.startup(server)
        bridge: _CountingBridge | None = None
        subscriber: _Subscriber | None = None
        if broker is not None:
            cleanup.callback(broker.stop)  # also when the run fails
            await asyncio.to_thread(broker.start)
            subscriber = _Subscriber(broker.port, "soak")
            cleanup.callback(subscriber.stop)
            subscriber.start()
            await _until_true(subscriber.ready.is_set, 30)
            bridge = _CountingBridge(MqttConfig(enabled=True, port=broker.port, prefix="soak"), hub)
            await bridge.start()
            await asyncio.wait_for(bridge.connected.wait(), 30)
            figures["mqtt"] = "mosquitto"
        else:
            figures["mqtt"] = "skipped: mosquitto is not installed (apt-get install mosquitto)"
        threads_idle, tasks_idle = threading.active_count(), _tasks()

        url = f"ws://127.0.0.1:{port}/ws"
        tallies = _Tallies()

        def server_seq(sid: str) -> int:
            channel = server.channels.get(sid)
            return channel.seq if channel is not None else 0

        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        deadline = time.monotonic() + minutes * 60

        rss_by_tenth: list[float] = []
        mqtt_by_tenth: list[list[int]] = []

        async def watch() -> None:
            for tenth in range(1, 10):
                await asyncio.sleep(max(0.0, t0 + minutes * 6 * tenth - time.perf_counter()))
                rss_by_tenth.append(round(proc.memory_info().rss / 2**20, 1))
                if bridge is not None and subscriber is not None:
                    # queued, dropped, still waiting in the bridge, received by the subscriber
                    mqtt_by_tenth.append(
                        [len(bridge.queued), len(bridge.dropped), len(bridge.outbox), len(subscriber.got)]
                    )
                if tenth == 1:
                    marks["rss_mb_at_10pct"] = rss_by_tenth[0]
                    marks["fds_at_10pct"] = proc.num_fds()

        async def restart_broker() -> None:
            if broker is None:
                return
            await asyncio.sleep(minutes * 60 / 2)
            if bridge is not None:
                figures["mqtt_dropped_before_restart"] = len(bridge.dropped)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(broker.start)
            figures["mqtt_broker_restarts"] = 1

        soakers = [
            _Soaker(
                i,
                url,
                seed=seed,
                mode="voice" if i % 2 == 0 else "std",
                speech=speech,
                server_seq=server_seq,
                tallies=tallies,
            )
            for i in range(sessions)
        ]
        helpers = [asyncio.create_task(watch()), asyncio.create_task(restart_broker())]
        results = await asyncio.gather(*(s.run(deadline) for s in soakers), return_exceptions=True)
        await asyncio.gather(*helpers)
        wall = time.perf_counter() - t0
        failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        figures["rss_mb_at_10pct"] = marks.get("rss_mb_at_10pct")
        figures["fds_at_10pct"] = marks.get("fds_at_10pct")
        figures["rss_mb_at_end"] = round(proc.memory_info().rss / 2**20, 1)
        figures["fds_at_end"] = proc.num_fds()
        figures["rss_mb_by_tenth"] = [*rss_by_tenth, figures["rss_mb_at_end"]]

        # every client has left: the sessions are reaped, the bridge and subscriber are back
        after_leave = sum(max(0, server_seq(sid) - seq) for sid, seq in tallies.leave_seq.items())
        teardown_errors: list[str] = []
        reaped = await _reaped(server, 60)
        if bridge is not None and subscriber is not None:
            await _until_true(lambda: bridge.connected.is_set() and subscriber.ready.is_set(), 60)
            assert bridge is not None and subscriber is not None

            def delivered() -> bool:
                assert bridge is not None and subscriber is not None
                return (
                    not bridge.outbox
                    and _mqtt_tally(bridge.queued, subscriber.got, bridge.dropped)["mqtt_lost"] == 0
                )

            await _until_true(delivered, 30, step=0.5)
        back = await _until_true(
            lambda: threading.active_count() <= threads_idle and _tasks() <= tasks_idle, 60
        )
        threads_after, tasks_after = threading.active_count(), _tasks()
        gc.collect()
        figures["rss_mb_after_reap"] = round(proc.memory_info().rss / 2**20, 1)
        mqtt: dict[str, Any] = {}
        if bridge is not None and subscriber is not None:
            mqtt = {**_mqtt_tally(bridge.queued, subscriber.got, bridge.dropped)}
            mqtt["mqtt_dropped_on_bus"] = sum(sub.dropped for sub in bridge.subscriptions)
            mqtt["mqtt_bridge_connections"] = bridge.connections
            mqtt["mqtt_queued_dropped_waiting_received_by_tenth"] = mqtt_by_tenth
            mqtt.setdefault("mqtt_broker_restarts", figures.pop("mqtt_broker_restarts", 0))
            mqtt["mqtt_dropped_before_restart"] = figures.pop("mqtt_dropped_before_restart", None)
            await _settle("mqtt bridge close", bridge.aclose(), teardown_errors)
        await _settle("plugins shutdown", res.plugins.shutdown(server), teardown_errors)
        await _settle("server close", server.close(), teardown_errors)
        await _settle("hub close", hub.aclose(), teardown_errors)

    kinds = {
        k: {
            "attempted": tallies.attempted[k],
            "completed": tallies.completed[k],
            "outcomes": dict(tallies.outcomes.get(k, {})),
        }
        for k in KINDS
    }
    figures |= {
        "turns_attempted": sum(tallies.attempted.values()),
        "turns_completed": sum(tallies.completed.values()),
        "kinds": kinds,
        "errors_by_code": dict(sorted(tallies.errors.items())),
        "resumes": tallies.resumes,
        "resume_missed": tallies.missed,
        "unasked_disconnects": dict(tallies.closes),
        "messages_received": tallies.received,
        "reply_audio_s": round(tallies.audio_bytes / 32000, 1),
        "text_deltas": tallies.text_deltas,
        "events_lost": tallies.lost,
        "events_duplicated": tallies.duplicated,
        "replay_gap_lost": tallies.gap_lost,
        "seq_out_of_order": tallies.out_of_order,
        "messages_after_leave": after_leave,
        "client_failures": failures,
        "tracebacks": logs.tracebacks,
        "traceback_samples": logs.samples,
        "log_errors": logs.errors,
        "log_error_samples": logs.error_samples,
        "log_warnings": dict(logs.warnings),
        "sessions_reaped": reaped,
        "teardown_errors": teardown_errors,
        "threads_idle": threads_idle,
        "threads_after": threads_after,
        "tasks_idle": tasks_idle,
        "tasks_after": tasks_after,
        "back_to_idle": back,
        **mqtt,
        "wall_s": round(wall, 1),
    }
    return figures


def bench_soak_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Entry point of `mio-agent bench soak [--minutes N] [--sessions N] [--seed S]` (`--quick`:
    half a minute, 3 sessions)."""
    quick = bool(getattr(args, "quick", False))
    minutes = getattr(args, "minutes", None)
    sessions = getattr(args, "sessions", None)
    if isinstance(sessions, str):  # `--sessions` is text (bench serve takes a list): soak takes one count
        if not sessions.isdigit():
            from mio_agent.exceptions import ConfigError

            raise ConfigError(f"bench soak: --sessions takes one count (e.g. 8), not a list ({sessions!r})")
        sessions = int(sessions)

    async def main() -> dict[str, Any]:
        # SIGTERM stops the run through its cleanup (the broker it started goes too)
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench_soak(
            minutes=float(minutes if minutes is not None else 0.5 if quick else 10.0),
            sessions=int(sessions if sessions is not None else 3 if quick else 8),
            seed=int(getattr(args, "seed", 0) or 0),
        )

    return asyncio.run(main())
