"""The WebSocket protocol without sockets: frames, client messages, server messages and the replay buffer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mio_agent.events import TextDelta
from mio_agent.exceptions import ProtocolError
from mio_agent.protocol import (
    CLIENT_MESSAGES,
    HEADER,
    Frame,
    FrameKind,
    ReplayBuffer,
    decode_client_message,
    event_message,
    pack_frame,
    unpack_frame,
)


def test_frame_round_trip_and_header_layout() -> None:
    f = Frame(FrameKind.AUDIO_IN, 7, 42, 1_234_567, b"\x01\x00\x02\x00")
    data = pack_frame(f)
    assert HEADER.size == 20 and len(data) == 24
    # version 1, kind 1, reserved 0, stream 7, seq 42, timestamp: big-endian
    assert data[:4] == b"\x01\x01\x00\x00" and data[4:8] == (7).to_bytes(4, "big")
    assert data[8:12] == (42).to_bytes(4, "big") and data[12:20] == (1_234_567).to_bytes(8, "big")
    assert unpack_frame(data) == f


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x01", "shorter than its 20-byte header"),
        (b"\x02" + bytes(19), "version 2 is not supported"),
        (b"\x01\x09" + bytes(18), "kind 9 is unknown"),
        (b"\x01\x01\x00\x01" + bytes(16), "reserved header bytes"),
    ],
)
def test_bad_frames_say_what_is_wrong(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        unpack_frame(data)


@given(st.binary(max_size=64))
def test_any_bytes_are_a_frame_or_a_protocol_error(data: bytes) -> None:
    try:
        frame = unpack_frame(data)
    except ProtocolError:
        return
    assert pack_frame(frame) == data


def test_every_client_message_decodes() -> None:
    samples = {
        "hello": {
            "protocol": 1,
            "client": "x",
            "token": "t",
            "mode": "voice",
            "resume": {"session": "s", "last_seq": 3},
        },
        "audio.start": {"stream": 1, "sample_rate": 48000, "channels": 2, "format": "pcm16"},
        "audio.end": {"stream": 1},
        "video.start": {"stream": 2, "width": 64, "height": 48},
        "video.end": {"stream": 2},
        "text": {"text": "hi"},
        "image": {"stream": 3, "bytes": 10, "name": "a.png"},
        "invoke": {"name": "generate_image", "text": "a cat", "image_stream": 3},
        "interrupt": {},
        "playback": {"turn": 2, "played_ms": 1250.5},
        "mute": {"muted": True},
        "ping": {"nonce": "n"},
    }
    assert set(samples) == set(CLIENT_MESSAGES)
    for kind, fields in samples.items():
        msg = decode_client_message(json.dumps({"type": kind, "id": "m1", **fields}))
        assert msg.type == kind and msg.id == "m1" and dict(msg.data) == fields


@pytest.mark.parametrize(
    ("text", "code", "match"),
    [
        ("not json", "protocol.json", "one JSON object"),
        ("[1, 2]", "protocol.json", "got list"),
        ('{"type": "dance", "id": "m9"}', "protocol.type", "unknown message type 'dance'"),
        ('{"type": "text", "id": "m2"}', "protocol.field", "missing field 'text'"),
        ('{"type": "text", "text": 5, "id": "m3"}', "protocol.field", "text.text: expected a string"),
        (
            '{"type": "playback", "turn": -1, "played_ms": 3}',
            "protocol.field",
            "expected an integer of 0 or more",
        ),
        ('{"type": "playback", "turn": 1, "played_ms": NaN}', "protocol.field", "expected a number"),
        ('{"type": "ping", "colour": "red"}', "protocol.field", "unknown field"),
        ('{"type": "hello", "protocol": 1, "resume": {"session": 3}}', "protocol.field", "hello.resume"),
        ('{"type": "ping", "id": 7}', "protocol.field", "`id` must be a string"),
    ],
)
def test_bad_messages_name_the_problem_and_the_message(text: str, code: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        decode_client_message(text)
    assert info.value.code == code
    if '"id": "m' in text:
        assert info.value.ref == json.loads(text)["id"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["type", "id", "text", "stream", "turn", "played_ms", "protocol"]), json_values
    )
)
def test_fuzzed_messages_are_accepted_or_refused_cleanly(obj: dict[str, object]) -> None:
    try:
        msg = decode_client_message(json.dumps(obj))
    except ProtocolError as exc:
        assert str(exc) and exc.code.startswith("protocol.")
    else:
        assert msg.type in CLIENT_MESSAGES


@given(st.binary(max_size=40))
def test_random_text_bytes_are_refused_cleanly(data: bytes) -> None:
    try:
        msg = decode_client_message(data)
    except ProtocolError as exc:
        assert exc.code.startswith("protocol.")
    else:
        assert msg.type in CLIENT_MESSAGES


def test_event_message_carries_the_event() -> None:
    msg = event_message(5, TextDelta(session="s", turn=2, text="hé"))
    assert msg["seq"] == 5 and msg["event"]["type"] == "text.delta" and msg["event"]["text"] == "hé"


def test_replay_buffer_returns_what_was_missed_and_counts_what_is_lost() -> None:
    buf = ReplayBuffer(3)
    for seq in range(1, 6):
        buf.add(seq, f"m{seq}")
    assert buf.since(5) == ([], 0)
    assert buf.since(3) == (["m4", "m5"], 0)
    assert buf.since(1) == (["m3", "m4", "m5"], 1)  # m2 is gone
    with pytest.raises(ValueError, match="must grow"):
        buf.add(5, "again")
