"""An async client of the WebSocket protocol: connect, send audio, text, images and commands, read events."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mio_agent.events import BINARY_EVENT_TYPES, EVENT_TYPES, AudioOut, Event, event_from_dict
from mio_agent.exceptions import ProtocolError
from mio_agent.protocol import PROTOCOL_VERSION, Frame, FrameKind, encode_json, pack_frame, unpack_frame

__all__ = ["MioClient", "ServerError", "Welcome"]

_KEPT_UPLOADS = 16
"""Images (by stream, for `invoke`) and unanswered echoes this client keeps the bytes of."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's answer to the handshake."""

    session: str
    resumed: bool
    missed: int
    capabilities: tuple[dict[str, Any], ...]
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServerError:
    """An `error` message: a stable code, a message for people, the id of the message it is about."""

    code: str
    message: str
    ref: str | None
    fatal: bool


class MioClient:
    """One connection to `mio-agent serve`, bound to one session.

    `async for item in client` yields Events (AudioOut rebuilt from binary frames, ImageOut with
    its PNG), ServerErrors and pongs (dicts). `last_seq` is the newest sequence number received;
    `reconnect()` resumes the session with it, so nothing within the replay buffer is lost.

    The server echoes accepted uploads (`image.in`, `capability.invoke` with an image) with their
    bytes left out (`{"bytes": n}`): this client fills in the bytes it sent. An echo whose bytes it
    does not hold (an upload made by another client of the session) is yielded as the raw message dict.
    """

    def __init__(
        self, url: str, *, token: str | None = None, mode: str | None = None, origin: str | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.mode = mode
        self.origin = origin
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        self.last_seq = 0
        self._ids = itertools.count(1)
        self._streams = itertools.count(1)
        self._pending_image: dict[str, Any] | None = None
        self._images: OrderedDict[int, bytes] = OrderedDict()
        """Uploaded images by stream (what `invoke(image_stream=...)` refers to)."""
        self._echoes: deque[tuple[str, str, bytes]] = deque(maxlen=_KEPT_UPLOADS)
        """(event type, field, bytes) of uploads whose echo has not arrived yet, oldest first."""

    @property
    def session(self) -> str:
        if self.welcome is None:
            raise ProtocolError("not connected: call connect() first")
        return self.welcome.session

    async def connect(self, *, resume: str | None = None) -> Welcome:
        """Open the connection and make the handshake; ProtocolError with the server's reason if refused."""
        headers = {"Origin": self.origin} if self.origin else None
        self.ws = await connect(self.url, max_size=None, additional_headers=headers)
        hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "client": "mio-agent-python"}
        if self.token:
            hello["token"] = self.token
        if self.mode:
            hello["mode"] = self.mode
        if resume:
            hello["resume"] = {"session": resume, "last_seq": self.last_seq}
        try:
            await self.ws.send(encode_json(hello))
            reply = json.loads(await self.ws.recv())
        except ConnectionClosed as exc:
            self.ws = None
            close = exc.rcvd
            reason = f"{close.reason} (close code {close.code})" if close else "no close frame"
            raise ProtocolError(
                f"the server closed the connection during the handshake: {reason}",
                code="auth.token" if close and close.code == 4001 else "protocol.invalid",
            ) from None
        if reply.get("type") == "error":
            await self.ws.close()
            self.ws = None
            raise ProtocolError(f"the server refused the connection: {reply['message']}", code=reply["code"])
        if resume is None:
            self.last_seq = int(reply["seq"])
        self.welcome = Welcome(
            session=reply["session"],
            resumed=bool(reply["resumed"]),
            missed=int(reply.get("missed", 0)),
            capabilities=tuple(reply["capabilities"]),
            raw=reply,
        )
        return self.welcome

    async def reconnect(self) -> Welcome:
        """Close (if open) and resume the same session from `last_seq`."""
        session = self.session
        await self.close()
        return await self.connect(resume=session)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def __aenter__(self) -> MioClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------------------
    def _conn(self) -> ClientConnection:
        if self.ws is None:
            raise ProtocolError("not connected")
        return self.ws

    async def send(self, message: dict[str, Any]) -> str:
        """Send one JSON message (an `id` is added); returns its id (errors about it carry it as `ref`)."""
        mid = message.get("id") or f"c{next(self._ids)}"
        await self._conn().send(encode_json({**message, "id": mid}))
        return str(mid)

    async def send_text(self, text: str) -> str:
        return await self.send({"type": "text", "text": text})

    async def send_audio(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        channels: int = 1,
        chunk_ms: int = 20,
        realtime: float | None = None,
    ) -> int:
        """Stream PCM16 as one audio stream (start, chunks, end); `realtime` paces it (1.0 = real time)."""
        stream = next(self._streams)
        await self.send(
            {"type": "audio.start", "stream": stream, "sample_rate": sample_rate, "channels": channels}
        )
        step = max(2 * channels, sample_rate * chunk_ms // 1000 * 2 * channels)
        for i in range(0, len(pcm), step):
            await self.send_frame(FrameKind.AUDIO_IN, stream, pcm[i : i + step])
            if realtime:
                await asyncio.sleep(chunk_ms / 1000 / realtime)
        await self.send({"type": "audio.end", "stream": stream})
        return stream

    async def send_frame(self, kind: FrameKind, stream: int, payload: bytes) -> None:
        await self._conn().send(pack_frame(Frame(kind, stream, 0, 0, payload)))

    async def send_image(self, data: bytes, name: str = "") -> int:
        """Upload an image (PNG/JPEG); it joins the next turn. Returns its stream id (for `invoke`)."""
        stream = next(self._streams)
        data = bytes(data)
        self._images[stream] = data
        while len(self._images) > _KEPT_UPLOADS:
            self._images.popitem(last=False)
        # before sending: a task reading meanwhile may decode the echo as soon as it arrives
        self._echoes.append(("image.in", "data", data))
        await self.send({"type": "image", "stream": stream, "bytes": len(data), "name": name})
        await self.send_frame(FrameKind.IMAGE_IN, stream, data)
        return stream

    async def invoke(self, name: str, text: str = "", *, image_stream: int | None = None) -> str:
        msg: dict[str, Any] = {"type": "invoke", "name": name, "text": text}
        if image_stream is not None:
            msg["image_stream"] = image_stream
            image = self._images.get(image_stream)
            if image is not None:
                self._echoes.append(("capability.invoke", "image", image))
        return await self.send(msg)

    async def interrupt(self) -> str:
        return await self.send({"type": "interrupt"})

    async def playback(self, turn: int, played_ms: float) -> str:
        return await self.send({"type": "playback", "turn": turn, "played_ms": played_ms})

    async def mute(self, muted: bool) -> str:
        return await self.send({"type": "mute", "muted": muted})

    async def ping(self, nonce: str = "") -> str:
        return await self.send({"type": "ping", "nonce": nonce})

    # -- receiving ----------------------------------------------------------------------------
    def _own_payloads(self, d: Mapping[str, Any]) -> dict[str, bytes] | None:
        """The bytes of an echoed upload's fields (`{"bytes": n}` in `d`), taken from what this
        client sent; None when it holds none of that type and size."""
        payloads: dict[str, bytes] = {}
        for name, value in d.items():
            if not (isinstance(value, dict) and set(value) == {"bytes"}):
                continue
            match = next(
                (
                    e
                    for e in self._echoes
                    if e[0] == d["type"] and e[1] == name and len(e[2]) == value["bytes"]
                ),
                None,
            )
            if match is None:
                return None
            self._echoes.remove(match)
            payloads[name] = match[2]
        return payloads

    def _decode(self, raw: str | bytes) -> Event | ServerError | dict[str, Any] | None:
        if isinstance(raw, bytes):
            frame = unpack_frame(raw)
            self.last_seq = max(self.last_seq, frame.seq)
            if frame.kind == FrameKind.AUDIO_OUT:
                return AudioOut(
                    session=self.session, turn=frame.stream, t=frame.timestamp_us / 1e6, pcm=frame.payload,
                    sample_rate=16000, seq=frame.seq,
                )  # fmt: skip
            if frame.kind == FrameKind.IMAGE_OUT and self._pending_image is not None:
                d, self._pending_image = self._pending_image, None
                return event_from_dict(d, payloads={"png": frame.payload})
            return None
        msg = json.loads(raw)
        self.last_seq = max(self.last_seq, int(msg.get("seq", 0)))
        if msg["type"] == "event":
            d = msg["event"]
            if d["type"] == "image.out" and isinstance(d.get("png"), dict):
                self._pending_image = d  # its PNG follows in the next binary frame
                return None
            if d.get("type") not in EVENT_TYPES:
                # a newer server's event type: as the protocol says, clients pass over what they
                # do not know (the raw message is handed on for who wants it)
                return dict(msg)
            # fields a newer server added are ignored, for the same reason
            known = {f.name for f in dataclasses.fields(EVENT_TYPES[d["type"]])}
            d = {k: v for k, v in d.items() if k in known or k == "type"}
            if d["type"] in BINARY_EVENT_TYPES:
                # no frame follows an echoed upload: its bytes are the ones this client sent
                payloads = self._own_payloads(d)
                return dict(msg) if payloads is None else event_from_dict(d, payloads=payloads)
            return event_from_dict(d)
        if msg["type"] == "error":
            return ServerError(msg["code"], msg["message"], msg.get("ref"), bool(msg.get("fatal")))
        return dict(msg)

    async def __aiter__(self) -> AsyncIterator[Event | ServerError | dict[str, Any]]:
        ws = self._conn()
        try:
            async for raw in ws:
                item = self._decode(raw)
                if item is not None:
                    yield item
        except ConnectionClosed:
            return

    async def next(self, timeout: float | None = None) -> Event | ServerError | dict[str, Any]:
        """The next item (waits at most `timeout` seconds); ConnectionClosed when the server closed."""
        while True:
            raw = await asyncio.wait_for(self._conn().recv(), timeout)
            item = self._decode(raw)
            if item is not None:
                return item
