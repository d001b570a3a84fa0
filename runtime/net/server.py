"""`mio-agent serve`: the WebSocket server (protocol in docs/protocol.md) and the browser page over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mio_agent import __version__
from mio_agent.config import ServerConfig
from mio_agent.engine import ReplyOptions
from mio_agent.exceptions import ConfigError, ProtocolError
from mio_agent.model.batch_scheduler import BatchFull, BatchTooSlow
from mio_agent.protocol import ClientMessage
from mio_agent.protocol.inbound import (
    InputLimits,
    Outgoing,
    Problem,
    ServerProtocol,
    accept_hello,
    welcome_limits,
)
from mio_agent.protocol.messages import encode_json, welcome_message
from mio_agent.runtime.net.http_gate import LOOPBACK, WEB_ROOT, WS_PATH, HttpGate, close_reason
from mio_agent.runtime.net.ws_channel import Channel, Outbox
from mio_agent.runtime.voice.hub import SessionHub
from mio_agent.runtime.voice.session import Session

__all__ = ["LOOPBACK", "WEB_ROOT", "WS_PATH", "MioServer"]

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
KEEP_DETACHED_S = 300.0
"""How long a session without a connection waits for its client to resume (unless its room is needed
sooner by a new session: then the oldest such session is closed)."""
SEND_BUFFER = 64 * 1024


class _Connection:
    """One client connection bound to a session: the protocol's state, and what its results go to."""

    def __init__(self, channel: Channel, limits: InputLimits) -> None:
        self.channel = channel
        self.session = channel.session
        self.protocol = ServerProtocol(self.session.id, limits, now=time.monotonic())
        self._report: asyncio.TimerHandle | None = None

    def receive(self, data: str | bytes) -> None:
        self._deliver(self.protocol.receive(data, time.monotonic()))
        due = self.protocol.report_at
        if due is not None and self._report is None:
            # dropped audio is reported when its interval ends, even if the client sends nothing more
            self._report = asyncio.get_running_loop().call_later(
                max(0.0, due - time.monotonic()), self.report_drops
            )

    def _deliver(self, out: list[Outgoing]) -> None:
        for item in out:
            if isinstance(item, Problem):
                self.channel.send_error(item.code, item.message, ref=item.ref, extra=item.extra)
            elif isinstance(item, dict):
                self.channel.send(item)
            else:
                self.session.submit(item)

    def report_drops(self) -> None:
        """Send the pending `audio.rate` report (if any)."""
        if self._report is not None:
            self._report.cancel()
            self._report = None
        self._deliver(self.protocol.flush(time.monotonic()))

    def close(self) -> None:
        """The connection ended: report the last drops (kept for a resume) and stop the timer."""
        self.report_drops()


class MioServer:
    """Serves many sessions over WebSocket on one model; `start()` returns the bound port.

    Sessions are admitted when their hello arrives, in one step with no await between the count
    and the reservation, so a rush of handshakes cannot pass the limits: `max_sessions_per_client`
    and `max_sessions` count sessions with a connection (and those being opened). A session whose
    client left (detached, resumable) counts for neither; it is kept for `KEEP_DETACHED_S`, or
    until a new session needs its room (there are at most `max_sessions` in all): then the oldest
    detached session is closed."""

    def __init__(
        self,
        hub: SessionHub,
        cfg: ServerConfig,
        *,
        web_root: Path = WEB_ROOT,
        reply_options: ReplyOptions | None = None,
    ) -> None:
        if cfg.host not in LOOPBACK and not cfg.token:
            raise ConfigError(
                f"server.host {cfg.host} is not a loopback address, so clients must send a token: set server.token "
                "(or MIO_AGENT__SERVER__TOKEN), or bind 127.0.0.1"
            )
        self.hub = hub
        self.cfg = cfg
        self.gate = HttpGate(cfg, web_root)
        self.channels: dict[str, Channel] = {}
        self.reply_options = reply_options
        self._server: Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._opening: Counter[str] = Counter()
        """New sessions being opened now, by client address (they count as connected)."""
        self.port = 0
        # audio.end appends the silence that ends an utterance, with a margin over the detector's wait
        self.input_limits = InputLimits(end_silence_s=hub.shared.config.audio.end_silence_ms / 1000 + 0.1)
        """What each connection may send (audio rate, video size, kept images)."""

    async def start(self) -> int:
        self._server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            process_request=self.gate.process_request,
            max_size=self.cfg.max_message_bytes,
            max_queue=64,
            # no permessage-deflate: websockets 15 passes a compressed message a few bytes over
            # max_size on, cut to max_size, instead of refusing it (1009); media is not worth deflating
            compression=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = self.gate.port = int(sock.getsockname()[1])
        self._reaper = asyncio.create_task(self._reap(), name="ws-reaper")
        return self.port

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            try:
                await self._close_channel(channel)
            except Exception:
                log.exception("session %s could not be closed", channel.session.id)

    async def _close_channel(self, channel: Channel) -> None:
        await channel.close()
        await self.hub.close_session(channel.session.id)

    async def _reap(self) -> None:
        """Close sessions whose client left and did not come back in time."""
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for sid, channel in list(self.channels.items()):
                if (
                    channel.detached_at is not None
                    and now - channel.detached_at > KEEP_DETACHED_S
                    and self.channels.pop(sid, None) is not None
                ):
                    try:
                        await self._close_channel(channel)
                    except Exception:  # one session that cannot close must not stop the reaping of the rest
                        log.exception("session %s could not be closed", sid)

    # -- WebSocket ----------------------------------------------------------------------------
    async def _hello(self, ws: ServerConnection) -> ClientMessage:
        return accept_hello(await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_S), token=self.cfg.token)

    def _connected(self, peer: str | None = None, *, besides: Channel | None = None) -> int:
        """Sessions with a connection or being opened: of client `peer`, or of all (None)."""
        attached = sum(
            1
            for c in self.channels.values()
            if c.attached and c is not besides and (peer is None or c.peer == peer)
        )
        return attached + (self._opening[peer] if peer is not None else sum(self._opening.values()))

    def _check_client(self, peer: str, ref: str | None, besides: Channel | None = None) -> None:
        mine = self._connected(peer, besides=besides)
        if mine >= self.cfg.max_sessions_per_client:
            raise ProtocolError(
                f"this client already has {mine} sessions open (server.max_sessions_per_client)",
                code="limit.sessions",
                ref=ref,
            )

    async def _admit(
        self, msg: ClientMessage, peer: str, outbox: Outbox
    ) -> tuple[Channel, bool, list[str | bytes], int]:
        """The session for this hello, attached to `outbox`: (channel, resumed, what it missed, lost).

        Every check and the reservation it grants happen before the first await."""
        resume = msg.get("resume")
        if resume is not None:
            sid, last = resume["session"], resume["last_seq"]
            channel = self.channels.get(sid)
            if channel is None:
                raise ProtocolError(
                    f"session {sid} is not open any more; start a new one (hello without resume)",
                    code="session.gone",
                    ref=msg.id,
                )
            if last > channel.seq:
                raise ProtocolError(
                    f"hello.resume.last_seq {last} is beyond the newest message of session {sid} "
                    f"(seq {channel.seq}); send the seq of the last message you received",
                    code="protocol.field",
                    ref=msg.id,
                )
            self._check_client(peer, msg.id, besides=channel)
            missed, lost = channel.attach(outbox, peer, last)
            return channel, True, missed, lost
        mode = msg.get("mode")
        self._check_client(peer, msg.id)
        if self._connected() >= self.cfg.max_sessions:
            raise ProtocolError(
                f"the server has {self.cfg.max_sessions} sessions with clients connected "
                "(server.max_sessions); try later",
                code="limit.server",
                ref=msg.id,
            )
        evicted = None
        if len(self.channels) + sum(self._opening.values()) >= self.cfg.max_sessions:
            # fewer than max_sessions are connected, so a detached session holds the room: the oldest goes
            evicted = min(
                (c for c in self.channels.values() if not c.attached),
                key=lambda c: c.detached_at if c.detached_at is not None else math.inf,
            )
            del self.channels[evicted.session.id]
        self._opening[peer] += 1
        try:
            if evicted is not None:
                log.info("closing detached session %s to make room for a new one", evicted.session.id)
                await self._close_channel(evicted)
            session = await self._open_session(mode, msg.id)
            channel = Channel(session, self.cfg.replay_events)
            channel.attach(outbox, peer, None)
            self.channels[session.id] = channel
        finally:
            self._opening[peer] -= 1
            if self._opening[peer] <= 0:
                del self._opening[peer]
        return channel, False, [], 0

    async def _open_session(self, mode: Any, ref: str | None) -> Session:
        """A new session; when every row of the batched decode is taken, a detached session's row is
        freed (the oldest), and without one the client is refused now rather than everyone slowed."""
        while True:
            try:
                return await self.hub.open(mode=mode, reply_options=self.reply_options)
            except BatchTooSlow as exc:
                # freeing a row would not make the decode faster
                raise ProtocolError(f"the server is busy: {exc}", code="limit.server", ref=ref) from None
            except BatchFull as exc:
                detached = [c for c in self.channels.values() if not c.attached]
                if not detached:
                    raise ProtocolError(
                        f"the server is full: {exc}; try later", code="limit.server", ref=ref
                    ) from None
                oldest = min(detached, key=lambda c: c.detached_at if c.detached_at is not None else math.inf)
                del self.channels[oldest.session.id]
                log.info("closing detached session %s: its decode row is needed", oldest.session.id)
                await self._close_channel(oldest)

    async def _handle(self, ws: ServerConnection) -> None:
        peer = str(ws.remote_address[0]) if ws.remote_address else "?"
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            # a small kernel buffer makes a client that stopped reading show up in our bounded
            # queue within SEND_BUFFER bytes, instead of hiding behind megabytes of socket buffer
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        outbox = Outbox(self.cfg.send_queue)
        try:
            hello = await self._hello(ws)
            channel, resumed, missed, lost = await self._admit(hello, peer, outbox)
        except (ProtocolError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, ProtocolError) else "protocol.timeout"
            text = str(exc) or f"no hello within {HELLO_TIMEOUT_S:g} s"
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    encode_json({"type": "error", "seq": 0, "code": code, "message": text, "fatal": True})
                )
                await ws.close(4001 if code == "auth.token" else 4002, close_reason(text))
            return
        except ConnectionClosed:
            return
        # from here to the writer's start nothing awaits: the welcome, then what was missed, then
        # (numbered after them) the gap and every new message, in the order of their seq
        caps = [
            {
                "name": c.name,
                "description": c.description,
                "inputs": list(c.inputs),
                "outputs": list(c.outputs),
            }
            for c in self.hub.shared.capabilities()
        ]
        limits = welcome_limits(
            self.input_limits,
            max_message_bytes=self.cfg.max_message_bytes,
            replay_events=self.cfg.replay_events,
            send_queue=self.cfg.send_queue,
        )
        welcome = welcome_message(
            seq=channel.seq, session=channel.session.id, resumed=resumed, server=f"mio-agent {__version__}",
            capabilities=caps, limits=limits, missed=lost,
        )  # fmt: skip
        outbox.preload([encode_json(welcome), *missed])
        if lost:
            first = hello.get("resume")["last_seq"] + 1
            channel.send_error(
                "replay.gap",
                f"{lost} message(s), seq {first} to {first + lost - 1}, were older than the replay buffer "
                f"(server.replay_events: {self.cfg.replay_events}) and are lost",
                extra={"lost": lost, "lost_from": first, "lost_to": first + lost - 1},
            )
        conn = _Connection(channel, self.input_limits)
        writer = asyncio.create_task(self._write(ws, outbox), name=f"ws-writer-{channel.session.id}")
        try:
            async for raw in ws:
                conn.receive(raw)
        except ConnectionClosed:
            pass
        finally:
            conn.close()
            channel.detach(outbox)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, ws: ServerConnection, outbox: Outbox) -> None:
        """Send what the outbox holds, in order; close the connection when the outbox stops."""
        try:
            while (data := await outbox.get()) is not None:
                await ws.send(data)
            await ws.close(outbox.close_code or 1000, outbox.close_reason)
        except ConnectionClosed:
            return
        except Exception:  # must not leave a connection that reads but never writes
            log.exception("connection %s: cannot send", ws.remote_address)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(1011, "internal error")
