"""The WebSocket protocol without sockets: frames, client messages, server messages and the replay buffer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
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
from mio_agent.protocol.messages import Amount, Count, Resume


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


PROPERTY = settings(
    derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300
)

frames = st.builds(
    Frame,
    st.sampled_from(list(FrameKind)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=32),
)


@PROPERTY
@given(frames)
def test_every_frame_round_trips(frame: Frame) -> None:
    assert unpack_frame(pack_frame(frame)) == frame


@PROPERTY
@given(frames, st.integers(0, 19), st.integers(1, 255))
def test_a_damaged_header_is_a_frame_or_a_protocol_error(frame: Frame, at: int, flip: int) -> None:
    data = bytearray(pack_frame(frame))
    data[at] ^= flip
    try:
        got = unpack_frame(bytes(data))
    except ProtocolError as exc:
        # only the version, kind and reserved bytes can make a header invalid
        assert at < 4 and str(exc)
        event("refused")
        return
    event("accepted")
    # stream, seq and timestamp bytes carry any value: the frame reads back as it was written
    assert at >= 4 or (at == 1 and got.kind != frame.kind)
    assert pack_frame(got) == bytes(data)


@PROPERTY
@given(st.binary(max_size=64))
def test_any_bytes_are_a_frame_or_a_protocol_error(data: bytes) -> None:
    try:
        frame = unpack_frame(data)
    except ProtocolError as exc:
        assert str(exc)
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


_VALUES: dict[Any, Any] = {
    Count: st.integers(0, 2**31),
    Amount: st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
    str: st.text(max_size=30),
    bool: st.booleans(),
    Resume: st.fixed_dictionaries({"session": st.text(max_size=8), "last_seq": st.integers(0, 99)}),
}
# a value of the wrong type for each type of field
_WRONG: dict[Any, Any] = {Count: "7", Amount: "1.5", str: 5, bool: 1, Resume: [1]}


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, object]:
    """A message exactly as docs/protocol.md describes one: its type, its required fields, some optional ones."""
    kind = draw(st.sampled_from(sorted(CLIENT_MESSAGES)))
    msg: dict[str, object] = {"type": kind}
    for name, (hint, required) in CLIENT_MESSAGES[kind].items():
        if required or draw(st.booleans()):
            msg[name] = draw(_VALUES[hint])
    if draw(st.booleans()):
        msg["id"] = draw(st.text(max_size=12))
    return msg


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, object], str]:
    """A well-formed message with one thing wrong, and what is wrong."""
    msg = draw(well_formed())
    fields = CLIENT_MESSAGES[str(msg["type"])]
    required = [n for n, (_, req) in fields.items() if req]
    present = [n for n in fields if n in msg]
    choices = ["unknown field", "unknown type", "bad id"]
    if required:
        choices.append("missing field")
    if present:
        choices.append("wrong type")
    what = draw(st.sampled_from(choices))
    if what == "unknown field":
        msg["zz_" + draw(st.text("abc", min_size=1, max_size=4))] = 1
    elif what == "unknown type":
        msg["type"] = "zz." + str(msg["type"])
    elif what == "bad id":
        msg["id"] = draw(st.sampled_from([5, "x" * 129, ["a"], {"a": 1}]))  # (null is the same as no id)
    elif what == "missing field":
        del msg[draw(st.sampled_from(required))]
    else:
        name = draw(st.sampled_from(present))
        msg[name] = _WRONG[fields[name][0]]
    return msg, what


@PROPERTY
@given(well_formed())
def test_well_formed_messages_decode_to_their_fields(msg: dict[str, object]) -> None:
    got = decode_client_message(json.dumps(msg))
    assert got.type == msg["type"] and got.id == msg.get("id")
    assert dict(got.data) == {k: v for k, v in msg.items() if k not in ("type", "id")}


@PROPERTY
@given(mutated())
def test_mutated_messages_are_refused_naming_what_is_wrong(case: tuple[dict[str, object], str]) -> None:
    msg, what = case
    with pytest.raises(ProtocolError) as refused:
        decode_client_message(json.dumps(msg))
    code = {"unknown type": "protocol.type"}.get(what, "protocol.field")
    assert refused.value.code == code, (what, str(refused.value))
    assert str(refused.value)


@PROPERTY
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
        return
    assert msg.type in CLIENT_MESSAGES


@PROPERTY
@given(well_formed(), st.binary(max_size=40))
def test_any_bytes_in_a_text_frame_are_a_message_or_a_clean_refusal(
    msg: dict[str, object], noise: bytes
) -> None:
    raw = json.dumps(msg).encode()
    for data in (raw, noise, raw[: len(raw) // 2] + noise):
        try:
            got = decode_client_message(data)
        except ProtocolError as exc:
            assert exc.code.startswith("protocol.") and data is not raw
            continue
        assert got.type in CLIENT_MESSAGES
        if data is raw:
            assert got.type == msg["type"]


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
