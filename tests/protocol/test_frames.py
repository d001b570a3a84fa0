"""Binary frames with exact bytes: the 20-byte header, its bounds and every refusal's message."""

from __future__ import annotations

import pytest

from mio_agent.exceptions import ProtocolError
from mio_agent.protocol.frames import (
    FRAME_VERSION,
    HEADER,
    MAX_STREAM,
    Frame,
    FrameKind,
    pack_frame,
    unpack_frame,
)

TOP = 2**32 - 1


def test_the_header_constants() -> None:
    assert HEADER.format == ">BBHIIQ" and HEADER.size == 20
    assert FRAME_VERSION == 1 and MAX_STREAM == 4294967295
    assert {k.name: k.value for k in FrameKind} == {
        "AUDIO_IN": 1,
        "IMAGE_IN": 2,
        "VIDEO_IN": 3,
        "AUDIO_OUT": 16,
        "IMAGE_OUT": 17,
    }


def test_pack_writes_the_exact_header_then_the_payload() -> None:
    got = pack_frame(Frame(FrameKind.VIDEO_IN, 0x01020304, 0x0A0B0C0D, 0x1122334455667788, b"xyz"))
    header = [
        b"\x01\x03\x00\x00",
        b"\x01\x02\x03\x04",
        b"\x0a\x0b\x0c\x0d",
        b"\x11\x22\x33\x44\x55\x66\x77\x88",
    ]
    assert got == b"".join(header) + b"xyz"


def test_pack_of_the_bounds_is_accepted() -> None:
    low = pack_frame(Frame(FrameKind.AUDIO_IN, 0, 0, 0, b""))
    assert low == b"\x01\x01" + bytes(18)
    high = pack_frame(Frame(FrameKind.IMAGE_OUT, TOP, TOP, 2**64 - 1, b"\x00"))
    assert high == b"\x01\x11\x00\x00" + b"\xff" * 16 + b"\x00"


def test_pack_clamps_the_timestamp_into_u64() -> None:
    assert pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 2, -5, b""))[12:20] == bytes(8)
    assert pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 2, 2**64, b""))[12:20] == b"\xff" * 8
    assert pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 2, 2**70, b""))[12:20] == b"\xff" * 8
    assert pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 2, 1, b""))[12:20] == b"\x00" * 7 + b"\x01"


@pytest.mark.parametrize(
    ("stream", "seq", "message"),
    [
        (-1, 0, "frame stream must be in 0..4294967295, got -1"),
        (TOP + 1, 0, "frame stream must be in 0..4294967295, got 4294967296"),
        (0, -1, "frame seq must be in 0..4294967295, got -1"),
        (0, TOP + 1, "frame seq must be in 0..4294967295, got 4294967296"),
        (-3, -4, "frame stream must be in 0..4294967295, got -3"),
    ],
)
def test_pack_refuses_a_stream_or_seq_out_of_range(stream: int, seq: int, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        pack_frame(Frame(FrameKind.AUDIO_IN, stream, seq, 0, b""))
    assert str(info.value) == message and info.value.code == "protocol.invalid"


def test_unpack_reads_every_field() -> None:
    data = b"\x01\x10\x00\x00\x00\x00\x00\x07\x00\x00\x01\x00" + (10**12).to_bytes(8, "big") + b"pcm"
    got = unpack_frame(data)
    assert got == Frame(FrameKind.AUDIO_OUT, 7, 256, 10**12, b"pcm")
    assert type(got.kind) is FrameKind and type(got.payload) is bytes


def test_unpack_of_an_exact_header_has_an_empty_payload() -> None:
    got = unpack_frame(b"\x01\x02\x00\x00" + b"\xff" * 16)
    assert got == Frame(FrameKind.IMAGE_IN, TOP, TOP, 2**64 - 1, b"")


def test_unpack_takes_a_memoryview_and_returns_bytes() -> None:
    got = unpack_frame(memoryview(b"\x01\x11" + bytes(18) + b"png"))
    assert got.kind is FrameKind.IMAGE_OUT and got.payload == b"png" and type(got.payload) is bytes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "binary frame of 0 bytes is shorter than its 20-byte header"),
        (b"\x01\x01" + bytes(17), "binary frame of 19 bytes is shorter than its 20-byte header"),
        (
            b"\x02\x01" + bytes(18),
            "binary frame version 2 is not supported (this server speaks 1)",
        ),
        (
            b"\x00\x01" + bytes(18),
            "binary frame version 0 is not supported (this server speaks 1)",
        ),
        (b"\x01\x01\x00\x01" + bytes(16), "binary frame: the reserved header bytes must be 0"),
        (b"\x01\x01\x80\x00" + bytes(16), "binary frame: the reserved header bytes must be 0"),
        (
            b"\x01\x04" + bytes(18),
            "binary frame kind 4 is unknown; kinds are 1 (AUDIO_IN), 2 (IMAGE_IN), 3 (VIDEO_IN),"
            " 16 (AUDIO_OUT), 17 (IMAGE_OUT)",
        ),
        (
            b"\x01\x00" + bytes(18),
            "binary frame kind 0 is unknown; kinds are 1 (AUDIO_IN), 2 (IMAGE_IN), 3 (VIDEO_IN),"
            " 16 (AUDIO_OUT), 17 (IMAGE_OUT)",
        ),
    ],
)
def test_unpack_refusals_say_exactly_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        unpack_frame(data)
    assert str(info.value) == message and info.value.code == "protocol.invalid"
    assert info.value.__cause__ is None


def test_an_unknown_kind_hides_the_enum_error() -> None:
    with pytest.raises(ProtocolError) as info:
        unpack_frame(b"\x01\x05" + bytes(18))
    assert info.value.__suppress_context__ and isinstance(info.value.__context__, ValueError)


def test_round_trip_of_each_kind() -> None:
    for i, kind in enumerate(FrameKind):
        frame = Frame(kind, i, i + 1, i * 1000, bytes([i]) * i)
        assert unpack_frame(pack_frame(frame)) == frame
