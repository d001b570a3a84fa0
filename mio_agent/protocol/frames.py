"""Binary frames: a fixed 20-byte header (version, kind, stream, sequence, timestamp) then raw bytes."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from mio_agent.exceptions import ProtocolError

__all__ = ["HEADER", "MAX_STREAM", "Frame", "FrameKind", "pack_frame", "unpack_frame"]

HEADER = struct.Struct(">BBHIIQ")
"""Big-endian: version (u8), kind (u8), reserved (u16, 0), stream (u32), seq (u32), timestamp in µs (u64)."""
FRAME_VERSION = 1
MAX_STREAM = 2**32 - 1


class FrameKind(enum.IntEnum):
    """What a binary frame carries."""

    AUDIO_IN = 1
    """Client → server: PCM16 little-endian of an audio stream declared by `audio.start`."""
    IMAGE_IN = 2
    """Client → server: the bytes (PNG or JPEG) of an image declared by an `image` message."""
    VIDEO_IN = 3
    """Client → server: one RGB24 frame of a video stream declared by `video.start`."""
    AUDIO_OUT = 16
    """Server → client: PCM16 little-endian, 16 kHz mono, of the reply of turn `stream`."""
    IMAGE_OUT = 17
    """Server → client: a PNG the agent made in turn `stream`."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One binary frame: `stream` is the client's stream id (in) or the turn (out); `seq` counts
    the sender's messages (the server's sequence numbers are shared with its JSON messages)."""

    kind: FrameKind
    stream: int
    seq: int
    timestamp_us: int
    payload: bytes


def pack_frame(frame: Frame) -> bytes:
    """Header + payload."""
    for name, value, top in (("stream", frame.stream, MAX_STREAM), ("seq", frame.seq, MAX_STREAM)):
        if not 0 <= value <= top:
            raise ProtocolError(f"frame {name} must be in 0..{top}, got {value}")
    ts = max(0, min(frame.timestamp_us, 2**64 - 1))
    return HEADER.pack(FRAME_VERSION, int(frame.kind), 0, frame.stream, frame.seq, ts) + frame.payload


def unpack_frame(data: bytes) -> Frame:
    """Parse a binary frame; ProtocolError says what is wrong with it."""
    if len(data) < HEADER.size:
        raise ProtocolError(
            f"binary frame of {len(data)} bytes is shorter than its {HEADER.size}-byte header"
        )
    version, kind, reserved, stream, seq, ts = HEADER.unpack_from(data)
    if version != FRAME_VERSION:
        raise ProtocolError(
            f"binary frame version {version} is not supported (this server speaks {FRAME_VERSION})"
        )
    if reserved != 0:
        raise ProtocolError("binary frame: the reserved header bytes must be 0")
    try:
        fk = FrameKind(kind)
    except ValueError:
        known = ", ".join(f"{k.value} ({k.name})" for k in FrameKind)
        raise ProtocolError(f"binary frame kind {kind} is unknown; kinds are {known}") from None
    return Frame(fk, stream, seq, ts, bytes(data[HEADER.size :]))
