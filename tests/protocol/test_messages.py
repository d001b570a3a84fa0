"""JSON messages with exact values: what a client message decodes to, every refusal's code, ref and
message, and the server's messages as the dicts they are sent as."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest

from mio_agent.events import TextDelta, event_to_dict
from mio_agent.exceptions import ProtocolError
from mio_agent.fieldcheck import AtLeast, Finite
from mio_agent.protocol import messages
from mio_agent.protocol.messages import (
    CLIENT_MESSAGES,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    Amount,
    ClientMessage,
    Count,
    Resume,
    decode_client_message,
    encode_json,
    error_message,
    event_message,
    welcome_message,
)

TYPES = "hello, audio.start, audio.end, video.start, video.end, text, image, invoke, interrupt, playback, mute, ping"
SURROGATE = "not valid Unicode: a lone surrogate at character {} (a UTF-16 surrogate that is not half of a pair); strings must be valid Unicode"


def refused(text: str | bytes) -> tuple[str, str, str | None]:
    """(code, message, ref) of the ProtocolError that decoding `text` raises."""
    with pytest.raises(ProtocolError) as info:
        decode_client_message(text)
    return info.value.code, str(info.value), info.value.ref


def decoded(text: str | bytes) -> tuple[str, str | None, dict[str, Any]]:
    msg = decode_client_message(text)
    return msg.type, msg.id, dict(msg.data)


# -- the constants ---------------------------------------------------------------------------------
def test_the_constants() -> None:
    assert (PROTOCOL_VERSION, MAX_TEXT_CHARS, MAX_ID_CHARS) == (1, 20_000, 128)
    assert Count == Annotated[int, AtLeast(0)]
    assert Amount == Annotated[float, Finite(), AtLeast(0)]
    assert Resume == dict[str, Any]


def test_the_client_messages_and_their_fields() -> None:
    expected = {
        "hello": {
            "protocol": (Count, True),
            "client": (str, False),
            "token": (str, False),
            "mode": (str, False),
            "resume": (Resume, False),
        },
        "audio.start": {
            "stream": (Count, True),
            "sample_rate": (Count, True),
            "channels": (Count, False),
            "format": (str, False),
        },
        "audio.end": {"stream": (Count, True)},
        "video.start": {"stream": (Count, True), "width": (Count, True), "height": (Count, True)},
        "video.end": {"stream": (Count, True)},
        "text": {"text": (str, True)},
        "image": {"stream": (Count, True), "bytes": (Count, True), "name": (str, False)},
        "invoke": {"name": (str, True), "text": (str, False), "image_stream": (Count, False)},
        "interrupt": {},
        "playback": {"turn": (Count, True), "played_ms": (Amount, True)},
        "mute": {"muted": (bool, True)},
        "ping": {"nonce": (str, False)},
    }
    assert expected == CLIENT_MESSAGES
    assert ", ".join(CLIENT_MESSAGES) == TYPES


def test_a_client_message_has_no_id_nor_data_by_default() -> None:
    msg = ClientMessage("ping")
    assert (msg.type, msg.id, msg.data) == ("ping", None, {})
    assert msg.get("nonce") is None and msg.get("nonce", 3) == 3
    assert ClientMessage("ping", "i", {"nonce": "n"}).get("nonce", 3) == "n"


# -- decoding what is valid ------------------------------------------------------------------------
def test_a_message_decodes_to_its_type_id_and_fields() -> None:
    assert decoded('{"type": "text", "text": "héllo", "id": "m1"}') == ("text", "m1", {"text": "héllo"})
    assert decoded(b'{"type": "interrupt"}') == ("interrupt", None, {})
    assert decoded('{"type": "interrupt", "id": null}') == ("interrupt", None, {})
    assert decoded('{"type": "ping", "nonce": null}') == ("ping", None, {})  # null is absent
    got = decoded('{"type": "playback", "turn": 0, "played_ms": 0}')
    assert got == ("playback", None, {"turn": 0, "played_ms": 0})
    assert type(got[2]["played_ms"]) is int  # checked only: JSON's type is kept
    assert decoded('{"type": "mute", "muted": false}') == ("mute", None, {"muted": False})


def test_a_hello_decodes_with_its_resume() -> None:
    assert decoded('{"type": "hello", "protocol": 1}') == ("hello", None, {"protocol": 1})
    text = json.dumps(
        {
            "type": "hello",
            "protocol": 1,
            "client": "c",
            "token": "t",
            "mode": "std",
            "resume": {"session": "s", "last_seq": 0},
        }
    )
    assert decoded(text) == (
        "hello",
        None,
        {
            "protocol": 1,
            "client": "c",
            "token": "t",
            "mode": "std",
            "resume": {"session": "s", "last_seq": 0},
        },
    )


def test_the_longest_id_and_text_are_accepted() -> None:
    msg = decode_client_message(json.dumps({"type": "text", "text": "x" * 20_000, "id": "i" * 128}))
    assert msg.id == "i" * 128 and len(msg.get("text")) == 20_000


def test_surrogate_pairs_are_valid_unicode() -> None:
    assert decoded('{"type": "text", "text": "\\ud83d\\ude00"}') == ("text", None, {"text": "😀"})


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "a text frame must be one JSON object: Expecting value: line 1 column 1 (char 0)"),
        ("", "a text frame must be one JSON object: Expecting value: line 1 column 1 (char 0)"),
        (
            b"\xff",
            "a text frame must be one JSON object: 'utf-8' codec can't decode byte 0xff in position 0:"
            " invalid start byte",
        ),
        ("[1, 2]", "a text frame must be a JSON object, got list"),
        ('"hi"', "a text frame must be a JSON object, got str"),
        ("null", "a text frame must be a JSON object, got NoneType"),
    ],
)
def test_what_is_not_a_json_object_is_refused(text: str | bytes, message: str) -> None:
    assert refused(text) == ("protocol.json", message, None)


def test_json_too_deep_to_parse_is_refused() -> None:
    code, message, ref = refused("[" * 100_000 + "]" * 100_000)
    assert (code, ref) == ("protocol.json", None)
    assert message.startswith("a text frame must be one JSON object: maximum recursion depth exceeded")


def test_a_json_error_hides_its_cause() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message("{")
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "raw_id",
    [5, "i" * 129, ["a"], {"a": 1}, True, 1.5],
)
def test_an_id_that_is_not_a_short_string_is_refused(raw_id: object) -> None:
    text = json.dumps({"type": "ping", "id": raw_id})
    assert refused(text) == ("protocol.field", "`id` must be a string of at most 128 characters", None)


def test_an_id_with_a_lone_surrogate_is_refused_without_a_ref() -> None:
    assert refused('{"type": "ping", "id": "ab\\udc00"}') == (
        "protocol.field",
        "id: " + SURROGATE.format(2),
        None,
    )


@pytest.mark.parametrize(
    ("text", "path", "at", "ref"),
    [
        ('{"type": "text", "text": "\\ud800", "id": "m"}', "text.text", 0, "m"),
        ('{"type": "text", "text": "ok \\ud800 \\udfff"}', "text.text", 3, None),
        ('{"type": "text", "text": "\\ud800", "\\udc01x": 1}', "text: a field name", 0, None),
        ('{"type": "dance", "x": {"y": [1, "a", "bc\\ud800"]}, "id": "d"}', "message.x.y[2]", 2, "d"),
        ('{"type": "\\ud800", "id": "d"}', "message.type", 0, "d"),
        ('{"type": 5, "a": ["\\ud800"]}', "message.a[0]", 0, None),
        (
            '{"type": "hello", "protocol": 1, "resume": {"session": "s\\udfff", "last_seq": 1}}',
            "hello.resume.session",
            1,
            None,
        ),
        (
            '{"type": "hello", "protocol": 1, "resume": {"\\udfffs": 1}}',
            "hello.resume: a field name",
            0,
            None,
        ),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_with_its_path(
    text: str, path: str, at: int, ref: str | None
) -> None:
    assert refused(text) == ("protocol.field", f"{path}: " + SURROGATE.format(at), ref)


def test_the_first_lone_surrogate_in_document_order_is_named() -> None:
    text = '{"type": "dance", "a": ["\\ud800", "x\\ud800"], "b": "yy\\ud800", "c": {"d": "zzz\\ud800"}}'
    assert refused(text)[1] == "message.a[0]: " + SURROGATE.format(0)
    text = '{"type": "dance", "a": ["ok", "x\\ud800"], "b": "yy\\ud800"}'
    assert refused(text)[1] == "message.a[1]: " + SURROGATE.format(1)
    text = '{"type": "dance", "a": [], "b": "yy\\ud800", "c": "zzz\\ud800"}'
    assert refused(text)[1] == "message.b: " + SURROGATE.format(2)
    text = '{"type": "dance", "a": {"k": "v"}, "b": {"\\ud800": 1}}'
    assert refused(text)[1] == "message.b: a field name: " + SURROGATE.format(0)
    text = '{"type": "dance", "a": {"x\\ud800": 1, "\\ud800": 2}}'
    assert refused(text)[1] == "message.a: a field name: " + SURROGATE.format(1)


def test_a_deeply_nested_value_is_searched_without_recursion() -> None:
    text = '{"type": "dance", "a": ' + "[" * 900 + '"\\ud800"' + "]" * 900 + "}"
    assert refused(text)[1] == "message.a" + "[0]" * 900 + ": " + SURROGATE.format(0)


@pytest.mark.parametrize(
    ("text", "message", "ref"),
    [
        ('{"type": "dance", "id": "d"}', f"unknown message type 'dance'; client messages are: {TYPES}", "d"),
        ('{"id": "d"}', f"unknown message type None; client messages are: {TYPES}", "d"),
        ('{"type": 5}', f"unknown message type 5; client messages are: {TYPES}", None),
        ('{"type": ["text"]}', f"unknown message type ['text']; client messages are: {TYPES}", None),
        ('{"type": "Text"}', f"unknown message type 'Text'; client messages are: {TYPES}", None),
    ],
)
def test_an_unknown_type_is_refused(text: str, message: str, ref: str | None) -> None:
    assert refused(text) == ("protocol.type", message, ref)


@pytest.mark.parametrize(
    ("text", "message", "ref"),
    [
        (
            '{"type": "ping", "b": 1, "a": 2, "id": "p"}',
            "ping: unknown field(s) a, b; its fields are: nonce",
            "p",
        ),
        ('{"type": "interrupt", "x": null}', "interrupt: unknown field(s) x; its fields are: none", None),
        (
            '{"type": "video.start", "stream": 1, "width": 2, "height": 3, "depth": 4}',
            "video.start: unknown field(s) depth; its fields are: stream, width, height",
            None,
        ),
        ('{"type": "text", "id": "t"}', "text: missing field 'text'", "t"),
        ('{"type": "text", "text": null}', "text: missing field 'text'", None),
        ('{"type": "video.start", "stream": 1, "height": 3}', "video.start: missing field 'width'", None),
        ('{"type": "text", "text": 5, "id": "t"}', "text.text: expected a string, got 5", "t"),
        ('{"type": "mute", "muted": 1}', "mute.muted: expected true or false, got 1", None),
        (
            '{"type": "audio.end", "stream": -1}',
            "audio.end.stream: expected an integer of 0 or more, got -1",
            None,
        ),
        (
            '{"type": "audio.end", "stream": 1.0}',
            "audio.end.stream: expected an integer of 0 or more, got 1.0",
            None,
        ),
        (
            '{"type": "audio.end", "stream": true}',
            "audio.end.stream: expected an integer of 0 or more, got true",
            None,
        ),
        (
            '{"type": "playback", "turn": 0, "played_ms": -0.5}',
            "playback.played_ms: expected a number of 0 or more, got -0.5",
            None,
        ),
        (
            '{"type": "playback", "turn": 0, "played_ms": Infinity}',
            "playback.played_ms: expected a number of 0 or more, got Infinity",
            None,
        ),
        (
            '{"type": "playback", "turn": 0, "played_ms": "1"}',
            'playback.played_ms: expected a number of 0 or more, got "1"',
            None,
        ),
        (
            '{"type": "hello", "protocol": 1, "resume": [1]}',
            "hello.resume: expected an object, got [1]",
            None,
        ),
        (
            '{"type": "text", "text": ["' + "a" * 50 + '"]}',
            'text.text: expected a string, got ["' + "a" * 38,
            None,
        ),
    ],
)
def test_a_field_is_refused_naming_the_message_and_the_field(
    text: str, message: str, ref: str | None
) -> None:
    assert refused(text) == ("protocol.field", message, ref)


def test_a_mistyped_field_hides_the_check_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_message('{"type": "text", "text": 5}')
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_value_too_deep_to_show_is_named_by_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    # json.dumps nests no deeper than json.loads, so this stands in for a value it cannot print
    class DeepJson:
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(value: object) -> str:
            raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(messages, "json", DeepJson)
    assert refused('{"type": "text", "text": [[1]], "id": "t"}') == (
        "protocol.field",
        "text.text: expected a string, got list",
        "t",
    )


@pytest.mark.parametrize("name", ["text", "client"])
def test_a_text_over_the_limit_is_refused(name: str) -> None:
    kind = "text" if name == "text" else "hello"
    obj: dict[str, Any] = {"type": kind, name: "é" * 20_001, "id": "long"}
    if kind == "hello":
        obj["protocol"] = 1
    assert refused(json.dumps(obj)) == (
        "protocol.field",
        f"{kind}.{name}: 20,001 characters is over the limit of 20,000 characters for a text field",
        "long",
    )


@pytest.mark.parametrize(
    "resume",
    [
        {"session": 3, "last_seq": 1},
        {"last_seq": 1},
        {"session": "s"},
        {"session": "s", "last_seq": -1},
        {"session": "s", "last_seq": True},
        {"session": "s", "last_seq": 1.0},
        {"session": "s", "last_seq": "1"},
        {},
    ],
)
def test_a_bad_resume_is_refused(resume: dict[str, Any]) -> None:
    text = json.dumps({"type": "hello", "protocol": 1, "resume": resume, "id": "h"})
    assert refused(text) == (
        "protocol.field",
        'hello.resume: expected {"session": "<id>", "last_seq": <integer of 0 or more>}',
        "h",
    )


def test_a_resume_of_another_message_is_not_a_field() -> None:
    assert (
        refused('{"type": "ping", "resume": {}}')[1] == "ping: unknown field(s) resume; its fields are: nonce"
    )


# -- what the server sends -------------------------------------------------------------------------
def test_encode_json_is_compact_and_keeps_unicode() -> None:
    assert (
        encode_json({"a": "é 😀", "b": [1, None, True], "c": {}}) == '{"a":"é 😀","b":[1,null,true],"c":{}}'
    )


def test_encode_json_replaces_a_lone_surrogate_and_joins_a_pair() -> None:
    assert encode_json({"a": "x\ud800y"}) == '{"a":"x\ufffdy"}'
    assert encode_json({"a": "\udfff"}) == '{"a":"\ufffd"}'
    assert encode_json({"a": "\ud83d\ude00", "b": "\ud800"}) == '{"a":"😀","b":"\ufffd"}'
    assert encode_json({"x\udc00": 1}) == '{"x\ufffd":1}'


def test_the_welcome_message() -> None:
    caps = ({"name": "generate_image"},)
    limits = {"send_queue": 3}
    got = welcome_message(
        seq=4, session="s1", resumed=True, server="mio/1", capabilities=caps, limits=limits, missed=2
    )
    assert got == {
        "type": "welcome",
        "seq": 4,
        "protocol": 1,
        "server": "mio/1",
        "session": "s1",
        "resumed": True,
        "missed": 2,
        "capabilities": [{"name": "generate_image"}],
        "audio_out": {"format": "pcm16", "sample_rate": 16000, "channels": 1},
        "audio_in": {"formats": ["pcm16"], "channels": [1, 2], "sample_rate": "8000..48000"},
        "limits": {"send_queue": 3},
    }
    assert list(got) == [
        "type", "seq", "protocol", "server", "session", "resumed", "missed", "capabilities", "audio_out",
        "audio_in", "limits",
    ]  # fmt: skip
    assert type(got["capabilities"]) is list and got["limits"] is not limits
    default = welcome_message(seq=1, session="s", resumed=False, server="x", capabilities=[], limits={})
    assert default["missed"] == 0 and default["resumed"] is False


def test_the_event_message() -> None:
    ev = TextDelta(session="s", turn=2, text="hé")
    assert event_message(7, ev) == {"type": "event", "seq": 7, "event": event_to_dict(ev)}
    assert event_message(7, ev)["event"]["text"] == "hé"


def test_the_error_message() -> None:
    assert error_message(3, "audio.rate", "too fast") == {
        "type": "error",
        "seq": 3,
        "code": "audio.rate",
        "message": "too fast",
        "ref": None,
        "fatal": False,
    }
    got = error_message(4, "replay.gap", "lost", ref="r", fatal=True, extra={"lost": 5})
    assert got == {
        "type": "error",
        "seq": 4,
        "code": "replay.gap",
        "message": "lost",
        "ref": "r",
        "fatal": True,
        "lost": 5,
    }
    assert list(got) == ["type", "seq", "code", "message", "ref", "fatal", "lost"]
