"""The server side of the protocol, sans I/O: a client's bytes in, input events, replies and errors out."""

from __future__ import annotations

import hmac
import math
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

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
from mio_agent.exceptions import MioAgentError, ProtocolError
from mio_agent.protocol.frames import FrameKind, unpack_frame
from mio_agent.protocol.messages import MAX_TEXT_CHARS, PROTOCOL_VERSION, ClientMessage, decode_client_message

__all__ = [
    "HELLO_MODES",
    "InputLimits",
    "Outgoing",
    "Problem",
    "ServerProtocol",
    "accept_hello",
    "welcome_limits",
]

HELLO_MODES = (None, "voice", "std")
"""What `hello.mode` may be (None: the server's configured mode)."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one connection may send: how fast audio may come, what video may be, what is kept."""

    audio_speed: float = 4.0
    """Audio may arrive this many times faster than real time (a file being streamed)..."""
    audio_burst_s: float = 10.0
    """...plus this many seconds at once; beyond that, chunks are dropped and reported."""
    drop_report_s: float = 1.0
    """Dropped audio is reported at most once per this many seconds (with a count), and at its stream's end."""
    end_silence_s: float = 0.7
    """Silence that `audio.end` appends so the voice detector ends the utterance at once."""
    max_video: tuple[int, int] = (1920, 1080)
    kept_images: int = 4
    """Uploaded images kept for a later `invoke` (the oldest goes first)."""


def welcome_limits(
    limits: InputLimits, *, max_message_bytes: int, replay_events: int, send_queue: int
) -> dict[str, Any]:
    """The `limits` object of the welcome: everything a client must stay within."""
    return {
        "max_message_bytes": max_message_bytes,
        "max_text_chars": MAX_TEXT_CHARS,
        "replay_events": replay_events,
        "send_queue": send_queue,
        "audio_speed": limits.audio_speed,
        "audio_burst_s": limits.audio_burst_s,
    }


@dataclass(frozen=True, slots=True)
class Problem:
    """An error for the client (it becomes an `error` message with the next seq)."""

    code: str
    message: str
    ref: str | None = None
    extra: Mapping[str, Any] | None = None


Outgoing = Event | dict[str, Any] | Problem
"""What a received message gives: an input for the session, a message to send back, or a Problem."""


def accept_hello(raw: str | bytes, *, token: str | None) -> ClientMessage:
    """Check a connection's first message: a hello of this protocol version, with the token when one is set.

    Raises ProtocolError (`protocol.order`, `protocol.version`, `protocol.field`, `auth.token`)."""
    if isinstance(raw, bytes):
        raise ProtocolError("the first message must be a hello (a JSON text frame)", code="protocol.order")
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
    given = str(msg.get("token") or "")
    # compare_digest: how long the comparison takes says nothing about the token
    if token and not hmac.compare_digest(given.encode(), token.encode()):
        raise ProtocolError("a valid token is required (hello.token)", code="auth.token", ref=msg.id)
    if msg.get("mode") not in HELLO_MODES:
        raise ProtocolError(
            f"hello.mode must be voice or std, got {msg.get('mode')!r}", code="protocol.field", ref=msg.id
        )
    return msg


class ServerProtocol:
    """One connection after its hello: its audio, video and image streams, its uploads and its audio rate.

    `receive(data, now)` takes one WebSocket message (text: JSON, bytes: a binary frame) and returns
    what it gives, in order: events for the session, messages to send back (a `pong`), and
    Problems; it never raises for anything a client can send. Time is passed in (`now`, seconds
    on any monotonic clock), so the whole protocol runs, and is tested, without sockets or
    clocks. Dropped audio is reported at most once per `drop_report_s`: when `report_at` is not
    None, the caller calls `flush(now)` at that time (or later) to get the pending report.

    `allowed` restricts the message types (a transport that only takes commands, e.g. MQTT);
    `source` is the reason an `interrupt` gives.
    """

    def __init__(
        self,
        session: str,
        limits: InputLimits | None = None,
        *,
        now: float = 0.0,
        allowed: Collection[str] | None = None,
        source: str = "client",
    ) -> None:
        self.session = session
        self.limits = limits or InputLimits()
        self.allowed = frozenset(allowed) if allowed is not None else None
        self.source = source
        self.audio: dict[int, tuple[int, int]] = {}
        self.video: dict[int, tuple[int, int]] = {}
        self.images_declared: dict[int, tuple[str, int, str | None]] = {}
        self.images: OrderedDict[int, bytes] = OrderedDict()
        self.started = now
        self.audio_s = 0.0
        self.dropped = 0
        """Audio chunks dropped (too fast) since the last `audio.rate` error; `dropped_s` their seconds."""
        self.dropped_s = 0.0
        self.dropped_total = 0
        self._reported_at = -math.inf
        self.report_at: float | None = None
        """When the drops counted so far are due to be reported (None: nothing pending)."""

    def receive(self, data: str | bytes, now: float) -> list[Outgoing]:
        """What one message from the client gives (see the class)."""
        out: list[Outgoing] = []
        try:
            if isinstance(data, bytes):
                self._binary(data, now, out)
            else:
                self._text(decode_client_message(data), now, out)
        except ProtocolError as exc:
            out.append(Problem(exc.code, str(exc), exc.ref))
        except MioAgentError as exc:  # an event refused its fields
            out.append(Problem("input.invalid", str(exc)))
        return out

    def _ev(self, cls: type[Event], **fields: Any) -> Event:
        return cls(session=self.session, turn=0, **fields)

    def _text(self, msg: ClientMessage, now: float, out: list[Outgoing]) -> None:
        kind = msg.type
        if self.allowed is not None and kind not in self.allowed:
            raise ProtocolError(
                f"{kind} cannot be sent here; the messages accepted are: {', '.join(sorted(self.allowed))}",
                code="protocol.type",
                ref=msg.id,
            )
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
            fmt = self.audio.pop(msg.get("stream"), None)
            out.extend(self.flush(now))
            if fmt is not None:
                # the end of the stream ends the user's utterance at once: the voice detector gets
                # the silence it waits for, instead of the client having to send it
                rate, ch = fmt
                pcm = bytes(2 * ch * int(rate * self.limits.end_silence_s))
                out.append(self._ev(AudioIn, pcm=pcm, sample_rate=rate, channels=ch))
        elif kind == "video.start":
            w, h = msg.get("width"), msg.get("height")
            max_w, max_h = self.limits.max_video
            if not (0 < w <= max_w and 0 < h <= max_h):
                raise ProtocolError(
                    f"video.start: width x height must be within {max_w} x {max_h}", code="video.format",
                    ref=msg.id,
                )  # fmt: skip
            self.video[msg.get("stream")] = (w, h)
        elif kind == "video.end":
            self.video.pop(msg.get("stream"), None)
        elif kind == "text":
            out.append(self._ev(TextIn, text=msg.get("text")))
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
            out.append(
                self._ev(InvokeCapability, name=msg.get("name"), text=msg.get("text", ""), image=image)
            )
        elif kind == "interrupt":
            out.append(self._ev(Interrupt, reason=self.source))
        elif kind == "playback":
            out.append(
                PlaybackProgress(
                    session=self.session, turn=msg.get("turn"), played_ms=float(msg.get("played_ms"))
                )
            )
        elif kind == "mute":
            out.append(self._ev(Mute, muted=msg.get("muted")))
        elif kind == "ping":
            out.append({"type": "pong", "nonce": msg.get("nonce")})
        elif kind == "hello":
            raise ProtocolError("hello: the handshake was already made", code="protocol.order", ref=msg.id)

    def _binary(self, data: bytes, now: float, out: list[Outgoing]) -> None:
        if self.allowed is not None:
            raise ProtocolError("binary frames cannot be sent here", code="protocol.frame")
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
            allowed = (now - self.started) * self.limits.audio_speed + self.limits.audio_burst_s
            # (the margin: sums of chunk lengths in floating point must not refuse audio exactly at the limit)
            if self.audio_s + seconds > allowed + 1e-9:
                out.extend(self._drop(seconds, now))
                return
            self.audio_s += seconds
            if frame.payload:
                out.append(self._ev(AudioIn, pcm=frame.payload, sample_rate=rate, channels=ch))
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
            while len(self.images) > self.limits.kept_images:
                self.images.popitem(last=False)
            out.append(self._ev(ImageIn, data=frame.payload, name=name))
        elif frame.kind == FrameKind.VIDEO_IN:
            dims = self.video.get(frame.stream)
            if dims is None:
                raise ProtocolError(
                    f"video frame on stream {frame.stream}, which no video.start declared",
                    code="video.stream",
                )
            w, h = dims
            if len(frame.payload) != w * h * 3:
                raise ProtocolError(
                    f"video frame of {len(frame.payload)} bytes on stream {frame.stream}; its video.start "
                    f"({w}x{h}) makes a frame {w * h * 3} bytes of RGB24",
                    code="video.format",
                )
            out.append(self._ev(VideoFrame, width=w, height=h, rgb=frame.payload))
        else:
            raise ProtocolError(
                f"{frame.kind.name} frames go from the server to clients, not back", code="protocol.frame"
            )

    def _drop(self, seconds: float, now: float) -> list[Outgoing]:
        """Count a chunk dropped for arriving too fast: its report now, or when the interval ends."""
        self.dropped += 1
        self.dropped_s += seconds
        self.dropped_total += 1
        due = self._reported_at + self.limits.drop_report_s
        if due <= now:
            return self.flush(now)
        self.report_at = due
        return []

    def flush(self, now: float) -> list[Outgoing]:
        """One `audio.rate` Problem for every chunk dropped since the last one (none if none were)."""
        self.report_at = None
        if not self.dropped:
            return []
        n, seconds = self.dropped, self.dropped_s
        self.dropped, self.dropped_s = 0, 0.0
        self._reported_at = now
        limits = self.limits
        return [
            Problem(
                "audio.rate",
                f"{n} audio chunk(s) ({seconds:.2f} s of audio) were dropped: audio arrives faster than "
                f"{limits.audio_speed:g}x real time (after a {limits.audio_burst_s:g} s burst); send it closer "
                "to real time",
                extra={"dropped": n, "dropped_s": round(seconds, 3), "dropped_total": self.dropped_total},
            )
        ]
