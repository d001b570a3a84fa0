"""`mio-agent serve`: the WebSocket server (protocol in docs/protocol.md) and the browser page over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import mimetypes
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mio_agent import __version__
from mio_agent.config import ServerConfig
from mio_agent.engine import ReplyOptions
from mio_agent.events import (
    AudioIn,
    Event,
    ImageIn,
    Interrupt,
    InvokeCapability,
    Mute,
    PlaybackProgress,
    TextIn,
    VideoFrame,
)
from mio_agent.exceptions import ConfigError, MioAgentError, ProtocolError
from mio_agent.protocol import PROTOCOL_VERSION, ClientMessage, FrameKind, decode_client_message, unpack_frame
from mio_agent.protocol.messages import encode_json, welcome_message
from mio_agent.runtime.hub import SessionHub
from mio_agent.runtime.ws_channel import CLOSE_TOO_SLOW, Channel, Outbox

__all__ = ["LOOPBACK", "WEB_ROOT", "WS_PATH", "MioServer"]

log = logging.getLogger(__name__)

WS_PATH = "/ws"
"""Where clients open the WebSocket; every other path is the browser page's files."""
WEB_ROOT = Path(__file__).parent / "web"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
HELLO_TIMEOUT_S = 10.0
# a client may send audio this much faster than real time (a file) before it is refused
AUDIO_BURST = 4.0
AUDIO_BURST_S = 10.0
KEEP_DETACHED_S = 300.0
"""How long a session without a connection waits for its client to resume."""
_KEPT_IMAGES = 4
SEND_BUFFER = 64 * 1024


def _is_ws(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class _Connection:
    """One client connection bound to a session: its streams, uploads and limits."""

    def __init__(self, ws: ServerConnection, channel: Channel, outbox: Outbox) -> None:
        self.ws = ws
        self.channel = channel
        self.outbox = outbox
        self.session = channel.session
        self.audio: dict[int, tuple[int, int]] = {}
        self.video: dict[int, tuple[int, int]] = {}
        self.images_declared: dict[int, tuple[str, int, str | None]] = {}
        self.images: OrderedDict[int, bytes] = OrderedDict()
        self.started = time.monotonic()
        self.audio_s = 0.0

    def _ev(self, cls: type[Event], **fields: Any) -> Any:
        return cls(session=self.session.id, turn=0, **fields)

    def text(self, msg: ClientMessage) -> None:
        kind = msg.type
        if kind == "audio.start":
            fmt, rate, ch = msg.get("format", "pcm16"), msg.get("sample_rate"), msg.get("channels", 1)
            if fmt != "pcm16" or not 8000 <= rate <= 48000 or ch not in (1, 2):
                raise ProtocolError(
                    f"audio.start: unsupported format {fmt} at {rate} Hz x {ch}; send pcm16, 8000..48000 Hz, "
                    "1 or 2 channels",
                    code="audio.format",
                    ref=msg.id,
                )
            self.audio[msg.get("stream")] = (rate, ch)
        elif kind == "audio.end":
            self.audio.pop(msg.get("stream"), None)
        elif kind == "video.start":
            w, h = msg.get("width"), msg.get("height")
            if not (0 < w <= 1920 and 0 < h <= 1080):
                raise ProtocolError(
                    "video.start: width x height must be within 1920 x 1080", code="video.format", ref=msg.id
                )
            self.video[msg.get("stream")] = (w, h)
        elif kind == "video.end":
            self.video.pop(msg.get("stream"), None)
        elif kind == "text":
            self.session.submit(self._ev(TextIn, text=msg.get("text")))
        elif kind == "image":
            self.images_declared[msg.get("stream")] = (msg.get("name", ""), msg.get("bytes"), msg.id)
        elif kind == "invoke":
            image = None
            if msg.get("image_stream") is not None:
                image = self.images.get(msg.get("image_stream"))
                if image is None:
                    raise ProtocolError(
                        f"invoke: no image was uploaded on stream {msg.get('image_stream')}",
                        code="invoke.image",
                        ref=msg.id,
                    )
            self.session.submit(
                self._ev(InvokeCapability, name=msg.get("name"), text=msg.get("text", ""), image=image)
            )
        elif kind == "interrupt":
            self.session.submit(self._ev(Interrupt, reason="client"))
        elif kind == "playback":
            self.session.submit(
                PlaybackProgress(
                    session=self.session.id, turn=msg.get("turn"), played_ms=float(msg.get("played_ms"))
                )
            )
        elif kind == "mute":
            self.session.submit(self._ev(Mute, muted=msg.get("muted")))
        elif kind == "ping":
            self.channel.send({"type": "pong", "nonce": msg.get("nonce")})
        elif kind == "hello":
            raise ProtocolError("hello: the handshake was already made", code="protocol.order", ref=msg.id)

    def binary(self, data: bytes) -> None:
        frame = unpack_frame(data)
        if frame.kind == FrameKind.AUDIO_IN:
            fmt = self.audio.get(frame.stream)
            if fmt is None:
                raise ProtocolError(
                    f"audio frame on stream {frame.stream}, which no audio.start declared",
                    code="audio.stream",
                )
            rate, ch = fmt
            if len(frame.payload) % (2 * ch):
                raise ProtocolError(
                    f"audio frame of {len(frame.payload)} bytes is not whole pcm16 samples of {ch} channel(s)",
                    code="audio.format",
                )
            seconds = len(frame.payload) / (2 * ch * rate)
            allowed = (time.monotonic() - self.started) * AUDIO_BURST + AUDIO_BURST_S
            if self.audio_s + seconds > allowed:
                raise ProtocolError(
                    f"audio arrives faster than {AUDIO_BURST:g}x real time; this chunk was dropped",
                    code="audio.rate",
                )
            self.audio_s += seconds
            if frame.payload:
                self.session.submit(self._ev(AudioIn, pcm=frame.payload, sample_rate=rate, channels=ch))
        elif frame.kind == FrameKind.IMAGE_IN:
            declared = self.images_declared.pop(frame.stream, None)
            if declared is None:
                raise ProtocolError(
                    f"image frame on stream {frame.stream}, which no image message declared",
                    code="image.stream",
                )
            name, size, ref = declared
            if size != len(frame.payload):
                raise ProtocolError(
                    f"image {name or frame.stream}: declared {size} bytes, got {len(frame.payload)}",
                    code="image.size",
                    ref=ref,
                )
            self.images[frame.stream] = frame.payload
            while len(self.images) > _KEPT_IMAGES:
                self.images.popitem(last=False)
            self.session.submit(self._ev(ImageIn, data=frame.payload, name=name))
        elif frame.kind == FrameKind.VIDEO_IN:
            dims = self.video.get(frame.stream)
            if dims is None:
                raise ProtocolError(
                    f"video frame on stream {frame.stream}, which no video.start declared",
                    code="video.stream",
                )
            w, h = dims
            self.session.submit(self._ev(VideoFrame, width=w, height=h, rgb=frame.payload))
        else:
            raise ProtocolError(
                f"{frame.kind.name} frames go from the server to clients, not back", code="protocol.frame"
            )


class MioServer:
    """Serves many sessions over WebSocket on one model; `start()` returns the bound port."""

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
        self.web_root = web_root
        self.channels: dict[str, Channel] = {}
        self.reply_options = reply_options
        self._server: Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            max_size=self.cfg.max_message_bytes,
            max_queue=64,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        self._reaper = asyncio.create_task(self._reap())
        return self.port

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for sid, channel in list(self.channels.items()):
            await channel.close()
            await self.hub.close_session(sid)
        self.channels.clear()

    async def _reap(self) -> None:
        """Close sessions whose client left and did not come back in time."""
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for sid, channel in list(self.channels.items()):
                if channel.detached_at is not None and now - channel.detached_at > KEEP_DETACHED_S:
                    self.channels.pop(sid, None)
                    await channel.close()
                    await self.hub.close_session(sid)

    # -- HTTP: the browser page, and the checks before a WebSocket opens ---------------------
    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: the token (off loopback) is the check
        host = request.headers.get("Host", "")
        return origin.split("://", 1)[-1] == host or origin in self.cfg.allowed_origins

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if _is_ws(request):
            if path != WS_PATH:
                return connection.respond(http.HTTPStatus.NOT_FOUND, f"the WebSocket is at {WS_PATH}\n")
            if not self._origin_ok(request):
                return connection.respond(http.HTTPStatus.FORBIDDEN, "this Origin may not connect\n")
            if len(self.channels) >= self.cfg.max_sessions and "resume" not in request.path:
                return connection.respond(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, "too many sessions; try later\n"
                )
            return None
        return self._static(path)

    def _static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        file = (self.web_root / name).resolve()
        if self.web_root.resolve() not in file.parents or not file.is_file():
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"not found\n")
        body = file.read_bytes()
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        headers = Headers(
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
        )
        return Response(200, "OK", headers, body)

    # -- WebSocket ----------------------------------------------------------------------------
    async def _hello(self, ws: ServerConnection) -> ClientMessage:
        raw = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_S)
        if isinstance(raw, bytes):
            raise ProtocolError(
                "the first message must be a hello (a JSON text frame)", code="protocol.order"
            )
        msg = decode_client_message(raw)
        if msg.type != "hello":
            raise ProtocolError(
                f"the first message must be a hello, not {msg.type}", code="protocol.order", ref=msg.id
            )
        if msg.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {msg.get('protocol')} is not supported; this server speaks {PROTOCOL_VERSION}",
                code="protocol.version",
                ref=msg.id,
            )
        token = self.cfg.token
        if token and not hmac.compare_digest(str(msg.get("token") or ""), token):
            raise ProtocolError("a valid token is required (hello.token)", code="auth.token", ref=msg.id)
        return msg

    async def _channel_for(self, msg: ClientMessage, peer: str) -> tuple[Channel, bool]:
        resume = msg.get("resume")
        if resume is not None:
            channel = self.channels.get(resume["session"])
            if channel is None:
                raise ProtocolError(
                    f"session {resume['session']} is not open any more; start a new one (hello without resume)",
                    code="session.gone",
                    ref=msg.id,
                )
            return channel, True
        mine = sum(1 for c in self.channels.values() if c.peer == peer and c.detached_at is None)
        if mine >= self.cfg.max_sessions_per_client:
            raise ProtocolError(
                f"this client already has {mine} sessions open (server.max_sessions_per_client)",
                code="limit.sessions",
            )
        mode = msg.get("mode")
        if mode not in (None, "voice", "std"):
            raise ProtocolError(
                f"hello.mode must be voice or std, got {mode!r}", code="protocol.field", ref=msg.id
            )
        session = await self.hub.open(mode=mode, reply_options=self.reply_options)
        channel = Channel(session, self.cfg.replay_events)
        self.channels[session.id] = channel
        return channel, False

    async def _handle(self, ws: ServerConnection) -> None:
        peer = str(ws.remote_address[0]) if ws.remote_address else "?"
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            # a small kernel buffer makes a client that stopped reading show up in our bounded
            # queue within SEND_BUFFER bytes, instead of hiding behind megabytes of socket buffer
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            hello = await self._hello(ws)
            channel, resumed = await self._channel_for(hello, peer)
        except (ProtocolError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, ProtocolError) else "protocol.timeout"
            text = str(exc) or f"no hello within {HELLO_TIMEOUT_S:g} s"
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    encode_json({"type": "error", "seq": 0, "code": code, "message": text, "fatal": True})
                )
                await ws.close(4001 if code == "auth.token" else 4002, text[:120])
            return
        except ConnectionClosed:
            return
        outbox = Outbox(self.cfg.send_queue)
        last = hello.get("resume", {}).get("last_seq") if resumed else channel.seq
        caps = [
            {
                "name": c.name,
                "description": c.description,
                "inputs": list(c.inputs),
                "outputs": list(c.outputs),
            }
            for c in self.hub.res.capabilities()
        ]
        limits = {
            "max_message_bytes": self.cfg.max_message_bytes,
            "replay_events": self.cfg.replay_events,
            "audio_burst": AUDIO_BURST,
        }
        if channel.outbox is not None and channel.outbox is not outbox:
            channel.outbox.full.set()  # a resumed session leaves its old connection
        lost = channel.attach(outbox, peer, last)
        welcome = welcome_message(
            seq=channel.seq, session=channel.session.id, resumed=resumed, server=f"mio-agent {__version__}",
            capabilities=caps, limits=limits, missed=lost,
        )  # fmt: skip
        await ws.send(encode_json(welcome))
        if lost:
            channel.send_error(
                "replay.gap", f"{lost} message(s) were older than the replay buffer and are lost"
            )
        conn = _Connection(ws, channel, outbox)
        writer = asyncio.create_task(self._write(ws, outbox))
        try:
            async for raw in ws:
                try:
                    if isinstance(raw, bytes):
                        conn.binary(raw)
                    else:
                        conn.text(decode_client_message(raw))
                except ProtocolError as exc:
                    channel.send_error(exc.code, str(exc), ref=exc.ref)
                except MioAgentError as exc:
                    channel.send_error("input.invalid", str(exc))
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            channel.detach(outbox)

    async def _write(self, ws: ServerConnection, outbox: Outbox) -> None:
        full = asyncio.create_task(outbox.full.wait())
        try:
            while True:
                get = asyncio.create_task(outbox.queue.get())
                done, _ = await asyncio.wait({get, full}, return_when=asyncio.FIRST_COMPLETED)
                if full in done:
                    get.cancel()
                    await ws.close(CLOSE_TOO_SLOW, "client too slow: its queue filled; reconnect with resume")
                    return
                await ws.send(get.result())
        except ConnectionClosed:
            return
        finally:
            full.cancel()
