"""The server side of the protocol without sockets: client bytes in, the bytes the server sends (or the inputs it takes) out."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from mio_agent.events import (
    AudioIn,
    Event,
    ImageIn,
    Interrupt,
    InvokeCapability,
    Mute,
    PlaybackProgress,
    TextIn,
)
from mio_agent.events import VideoFrame as VideoFrameEvent
from mio_agent.exceptions import ProtocolError
from mio_agent.protocol import Frame, FrameKind, encode_json, error_message, pack_frame
from mio_agent.protocol.inbound import (
    HELLO_MODES,
    InputLimits,
    Outgoing,
    Problem,
    ServerProtocol,
    accept_hello,
    welcome_limits,
)


def wire(out: list[Outgoing]) -> list[str]:
    """What the server sends for these results (seq 0), or `input <type>` for what the session takes."""
    sent = []
    for item in out:
        if isinstance(item, Problem):
            sent.append(
                encode_json(error_message(0, item.code, item.message, ref=item.ref, extra=item.extra))
            )
        elif isinstance(item, dict):
            sent.append(encode_json(item))
        else:
            sent.append(f"input {item.type}")
    return sent


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def audio(stream: int, n_bytes: int, fill: int = 0) -> bytes:
    return pack_frame(Frame(FrameKind.AUDIO_IN, stream, 0, 0, bytes([fill]) * n_bytes))


def events(out: list[Outgoing]) -> list[Event]:
    return [item for item in out if isinstance(item, Event)]


# -- the hello -------------------------------------------------------------------------------------
def test_a_hello_of_this_version_is_accepted_with_its_fields() -> None:
    hello = accept_hello(msg(type="hello", protocol=1, client="t", mode="std", id="h1"), token=None)
    assert (hello.type, hello.id, hello.get("mode"), hello.get("client")) == ("hello", "h1", "std", "t")


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b'{"type": "hello", "protocol": 1}', "protocol.order", "JSON text frame"),
        (msg(type="text", text="hi", id="x"), "protocol.order", "not text"),
        (msg(type="hello", protocol=2, id="x"), "protocol.version", "speaks 1"),
        (msg(type="hello", protocol=1, mode="loud", token="s3cret", id="x"), "protocol.field", "'loud'"),
        (msg(type="hello", protocol=1, id="x"), "auth.token", "hello.token"),
        (msg(type="hello", protocol=1, token="wrong", id="x"), "auth.token", "hello.token"),
    ],
)
def test_a_bad_hello_names_what_was_wrong(raw: str | bytes, code: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        accept_hello(raw, token="s3cret")
    assert info.value.code == code and words in str(info.value)
    assert info.value.ref == (None if isinstance(raw, bytes) else "x")


def test_the_token_is_only_checked_when_one_is_set() -> None:
    assert accept_hello(msg(type="hello", protocol=1, token="s3cret"), token="s3cret").type == "hello"
    assert accept_hello(msg(type="hello", protocol=1, token="anything"), token=None).type == "hello"


def test_the_welcome_limits_are_what_the_connection_enforces() -> None:
    limits = InputLimits(audio_speed=2.0, audio_burst_s=3.0)
    got = welcome_limits(limits, max_message_bytes=1000, replay_events=50, send_queue=7)
    assert got == {
        "max_message_bytes": 1000, "max_text_chars": 20_000, "replay_events": 50, "send_queue": 7,
        "audio_speed": 2.0, "audio_burst_s": 3.0,
    }  # fmt: skip


# -- messages to inputs ----------------------------------------------------------------------------
def test_messages_become_inputs_and_replies_in_order() -> None:
    proto = ServerProtocol("s1", InputLimits(end_silence_s=0.5))
    assert proto.receive(msg(type="audio.start", stream=3, sample_rate=8000, channels=2), 0.0) == []
    out = proto.receive(audio(3, 640, fill=7), 0.0)
    (chunk,) = events(out)
    assert isinstance(chunk, AudioIn)
    assert (chunk.session, chunk.pcm, chunk.sample_rate, chunk.channels) == ("s1", bytes([7]) * 640, 8000, 2)
    # audio.end: the silence that ends the utterance now (0.5 s of 8 kHz stereo pcm16)
    (silence,) = proto.receive(msg(type="audio.end", stream=3), 0.0)
    assert isinstance(silence, AudioIn) and silence.pcm == bytes(2 * 2 * 4000)
    assert proto.receive(msg(type="audio.end", stream=3), 0.0) == []  # ended once
    out = proto.receive(msg(type="text", text="héllo 👋"), 0.0)
    assert isinstance(out[0], TextIn) and out[0].text == "héllo 👋"
    assert wire(proto.receive(msg(type="ping", nonce="n1"), 0.0)) == ['{"type":"pong","nonce":"n1"}']
    (stop,) = proto.receive(msg(type="interrupt"), 0.0)
    assert isinstance(stop, Interrupt) and stop.reason == "client"
    (mute,) = proto.receive(msg(type="mute", muted=True), 0.0)
    assert isinstance(mute, Mute) and mute.muted is True
    (played,) = proto.receive(msg(type="playback", turn=4, played_ms=250), 0.0)
    assert isinstance(played, PlaybackProgress) and (played.turn, played.played_ms) == (4, 250.0)


def test_errors_are_sent_as_error_messages_with_the_clients_id() -> None:
    proto = ServerProtocol("s1")
    cases = [
        (msg(type="hello", protocol=1, id="again"), "protocol.order", "again"),
        (msg(type="audio.start", stream=1, sample_rate=4000, id="a"), "audio.format", "a"),
        (msg(type="audio.start", stream=1, sample_rate=16000, channels=3, id="b"), "audio.format", "b"),
        (msg(type="audio.start", stream=1, sample_rate=16000, format="opus", id="c"), "audio.format", "c"),
        (msg(type="video.start", stream=2, width=1921, height=10, id="v"), "video.format", "v"),
        (msg(type="invoke", name="x", image_stream=9, id="i"), "invoke.image", "i"),
        (msg(type="dance", id="d"), "protocol.type", "d"),
        ("not json", "protocol.json", None),
        (audio(5, 10), "audio.stream", None),
        (pack_frame(Frame(FrameKind.VIDEO_IN, 1, 0, 0, b"")), "video.stream", None),
        (pack_frame(Frame(FrameKind.IMAGE_IN, 1, 0, 0, b"")), "image.stream", None),
        (pack_frame(Frame(FrameKind.AUDIO_OUT, 1, 0, 0, b"")), "protocol.frame", None),
        (b"\x01\x01", "protocol.invalid", None),  # shorter than a header
    ]
    for raw, code, ref in cases:
        (sent,) = wire(proto.receive(raw, 0.0))
        reply = json.loads(sent)
        assert (reply["type"], reply["code"], reply["ref"], reply["fatal"]) == ("error", code, ref, False), (
            raw
        )
    assert proto.receive(msg(type="audio.start", stream=1, sample_rate=16000, channels=2), 0.0) == []
    (sent,) = wire(proto.receive(audio(1, 6), 0.0))  # 6 bytes: not whole stereo pcm16 samples
    assert json.loads(sent)["code"] == "audio.format" and "6 bytes" in json.loads(sent)["message"]


def test_an_image_upload_is_checked_against_its_declaration_and_kept_for_invoke() -> None:
    proto = ServerProtocol("s1", InputLimits(kept_images=2))
    png = b"\x89PNG" + bytes(60)
    assert proto.receive(msg(type="image", stream=1, bytes=10, name="a.png", id="img"), 0.0) == []
    (sent,) = wire(proto.receive(pack_frame(Frame(FrameKind.IMAGE_IN, 1, 0, 0, png)), 0.0))
    assert json.loads(sent)["code"] == "image.size" and json.loads(sent)["ref"] == "img"
    for stream in (1, 2, 3):
        proto.receive(msg(type="image", stream=stream, bytes=len(png), name=f"{stream}.png"), 0.0)
        (image,) = proto.receive(pack_frame(Frame(FrameKind.IMAGE_IN, stream, 0, 0, png)), 0.0)
        assert isinstance(image, ImageIn) and (image.data, image.name) == (png, f"{stream}.png")
    (call,) = proto.receive(msg(type="invoke", name="edit_image", text="bluer", image_stream=3), 0.0)
    assert isinstance(call, InvokeCapability) and (call.name, call.text, call.image) == (
        "edit_image",
        "bluer",
        png,
    )
    # two images are kept: the first is gone
    (sent,) = wire(proto.receive(msg(type="invoke", name="edit_image", image_stream=1, id="old"), 0.0))
    assert json.loads(sent)["code"] == "invoke.image" and json.loads(sent)["ref"] == "old"


def test_a_video_frame_must_be_its_declared_size() -> None:
    proto = ServerProtocol("s1")
    proto.receive(msg(type="video.start", stream=4, width=2, height=3), 0.0)
    (sent,) = wire(proto.receive(pack_frame(Frame(FrameKind.VIDEO_IN, 4, 0, 0, bytes(17))), 0.0))
    assert json.loads(sent)["code"] == "video.format" and "18 bytes" in json.loads(sent)["message"]
    (frame,) = proto.receive(pack_frame(Frame(FrameKind.VIDEO_IN, 4, 0, 0, bytes(18))), 0.0)
    assert isinstance(frame, VideoFrameEvent) and (frame.width, frame.height) == (2, 3)
    proto.receive(msg(type="video.end", stream=4), 0.0)
    (sent,) = wire(proto.receive(pack_frame(Frame(FrameKind.VIDEO_IN, 4, 0, 0, bytes(18))), 0.0))
    assert json.loads(sent)["code"] == "video.stream"


# -- the audio rate --------------------------------------------------------------------------------
def test_audio_faster_than_allowed_is_dropped_and_reported_once_per_interval() -> None:
    limits = InputLimits(audio_speed=1.0, audio_burst_s=1.0, drop_report_s=2.0)
    proto = ServerProtocol("s1", limits, now=100.0)
    proto.receive(msg(type="audio.start", stream=1, sample_rate=16000), 100.0)
    chunk = audio(1, 3200)  # 100 ms
    # at t=0: the burst allows exactly 1.0 s (10 chunks)
    assert all(len(events(proto.receive(chunk, 100.0))) == 1 for _ in range(10))
    (first,) = wire(proto.receive(chunk, 100.0))  # the first drop is reported at once
    assert json.loads(first) == {
        "type": "error", "seq": 0, "code": "audio.rate", "ref": None, "fatal": False,
        "message": "1 audio chunk(s) (0.10 s of audio) were dropped: audio arrives faster than 1x real time "
        "(after a 1 s burst); send it closer to real time",
        "dropped": 1, "dropped_s": 0.1, "dropped_total": 1,
    }  # fmt: skip
    # 0.5 s later, 0.5 s more is allowed: 5 chunks, then drops again
    assert [len(events(proto.receive(chunk, 100.5))) for _ in range(5)] == [1] * 5
    assert proto.report_at is None
    for _ in range(4):
        assert proto.receive(chunk, 100.5) == [] and proto.report_at is not None
    assert proto.report_at == 102.0  # the interval from the first report
    (report,) = proto.flush(102.0)
    assert isinstance(report, Problem) and report.extra == {
        "dropped": 4,
        "dropped_s": 0.4,
        "dropped_total": 5,
    }
    assert proto.flush(102.0) == [] and proto.report_at is None
    # time passed: audio is allowed again, at real time
    assert len(events(proto.receive(chunk, 103.0))) == 1


def test_the_end_of_a_stream_reports_the_drops_pending() -> None:
    proto = ServerProtocol("s1", InputLimits(audio_speed=0.0, audio_burst_s=0.1, drop_report_s=60.0))
    proto.receive(msg(type="audio.start", stream=1, sample_rate=16000), 0.0)
    chunk = audio(1, 3200)
    assert len(proto.receive(chunk, 0.0)) == 1
    assert [p.code for p in proto.receive(chunk, 0.0) if isinstance(p, Problem)] == ["audio.rate"]
    assert proto.receive(chunk, 1.0) == [] and proto.receive(chunk, 1.0) == []
    out = proto.receive(msg(type="audio.end", stream=1), 1.0)
    assert [type(item).__name__ for item in out] == ["Problem", "AudioIn"]
    assert isinstance(out[0], Problem) and out[0].extra == {
        "dropped": 2,
        "dropped_s": 0.2,
        "dropped_total": 3,
    }


# -- a transport that takes commands only (MQTT) ---------------------------------------------------
def test_a_restricted_protocol_takes_only_its_commands() -> None:
    proto = ServerProtocol("s1", allowed=("text", "interrupt"), source="mqtt")
    (stop,) = proto.receive(msg(type="interrupt"), 0.0)
    assert isinstance(stop, Interrupt) and stop.reason == "mqtt"
    (sent,) = wire(proto.receive(msg(type="audio.start", stream=1, sample_rate=16000, id="a"), 0.0))
    assert json.loads(sent)["code"] == "protocol.type" and "interrupt, text" in json.loads(sent)["message"]
    (sent,) = wire(proto.receive(audio(1, 10), 0.0))
    assert json.loads(sent)["code"] == "protocol.frame"
    assert proto.audio == {}


# -- exact values ----------------------------------------------------------------------------------
def seen(out: list[Outgoing]) -> list[Any]:
    """The results with each event as (class name, its fields but `t`): comparable with ==."""
    got: list[Any] = []
    for item in out:
        if isinstance(item, Event):
            values = {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "t"}
            got.append((type(item).__name__, values))
        else:
            got.append(item)
    return got


def frame(kind: FrameKind, stream: int, payload: bytes) -> bytes:
    return pack_frame(Frame(kind, stream, 0, 0, payload))


def test_the_defaults() -> None:
    assert HELLO_MODES == (None, "voice", "std")
    assert InputLimits() == InputLimits(
        audio_speed=4.0,
        audio_burst_s=10.0,
        drop_report_s=1.0,
        end_silence_s=0.7,
        max_video=(1920, 1080),
        kept_images=4,
    )
    assert Problem("c", "m") == Problem("c", "m", None, None)
    proto = ServerProtocol("s1")
    assert (proto.session, proto.limits, proto.allowed, proto.source) == ("s1", InputLimits(), None, "client")
    assert (proto.started, proto.audio_s, proto.dropped, proto.dropped_s, proto.dropped_total) == (
        0.0,
        0.0,
        0,
        0.0,
        0,
    )
    assert proto.report_at is None and proto.audio == {} and proto.video == {} and proto.images == {}


def test_a_hello_in_each_mode_is_accepted() -> None:
    for mode in ("voice", "std"):
        assert accept_hello(msg(type="hello", protocol=1, mode=mode), token=None).get("mode") == mode
    hello = accept_hello(msg(type="hello", protocol=1, token="tok"), token="tok")
    assert (hello.type, hello.id, dict(hello.data)) == ("hello", None, {"protocol": 1, "token": "tok"})


@pytest.mark.parametrize(
    ("raw", "token", "code", "message", "ref"),
    [
        (b"{}", None, "protocol.order", "the first message must be a hello (a JSON text frame)", None),
        (
            msg(type="ping", id="p"),
            None,
            "protocol.order",
            "the first message must be a hello, not ping",
            "p",
        ),
        (
            msg(type="hello", protocol=2, id="h"),
            None,
            "protocol.version",
            "protocol version 2 is not supported; this server speaks 1",
            "h",
        ),
        (
            msg(type="hello", protocol=0),
            "tok",
            "protocol.version",
            "protocol version 0 is not supported; this server speaks 1",
            None,
        ),
        (
            msg(type="hello", protocol=1, id="h"),
            "tok",
            "auth.token",
            "a valid token is required (hello.token)",
            "h",
        ),
        (
            msg(type="hello", protocol=1, token="", id="h"),
            "tok",
            "auth.token",
            "a valid token is required (hello.token)",
            "h",
        ),
        (
            msg(type="hello", protocol=1, token="to"),
            "tok",
            "auth.token",
            "a valid token is required (hello.token)",
            None,
        ),
        (
            msg(type="hello", protocol=1, mode="", id="h"),
            None,
            "protocol.field",
            "hello.mode must be voice or std, got ''",
            "h",
        ),
        (
            msg(type="hello", protocol=1, mode="Voice"),
            None,
            "protocol.field",
            "hello.mode must be voice or std, got 'Voice'",
            None,
        ),
    ],
)
def test_a_bad_hello_gets_its_exact_error(
    raw: str | bytes, token: str | None, code: str, message: str, ref: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        accept_hello(raw, token=token)
    assert (info.value.code, str(info.value), info.value.ref) == (code, message, ref)


@pytest.mark.parametrize("token", ["s3cret", "XXXX", "None", "0"])
def test_a_hello_without_a_token_matches_no_token(token: str) -> None:
    # a missing or empty hello.token is compared as "": no filler can match the server's token
    for hello in (msg(type="hello", protocol=1), msg(type="hello", protocol=1, token="")):
        with pytest.raises(ProtocolError) as info:
            accept_hello(hello, token=token)
        assert info.value.code == "auth.token"
    assert accept_hello(msg(type="hello", protocol=1, token=""), token="").get("token") == ""


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            msg(type="hello", protocol=1, id="h"),
            Problem("protocol.order", "hello: the handshake was already made", "h"),
        ),
        (
            msg(type="audio.start", stream=1, sample_rate=7999, id="a"),
            Problem(
                "audio.format",
                "audio.start: unsupported format pcm16 at 7999 Hz x 1; send pcm16, 8000..48000 Hz, 1 or 2 channels",
                "a",
            ),
        ),
        (
            msg(type="audio.start", stream=1, sample_rate=48001),
            Problem(
                "audio.format",
                "audio.start: unsupported format pcm16 at 48001 Hz x 1; send pcm16, 8000..48000 Hz, 1 or 2 channels",
            ),
        ),
        (
            msg(type="audio.start", stream=1, sample_rate=16000, channels=0, format="pcm16"),
            Problem(
                "audio.format",
                "audio.start: unsupported format pcm16 at 16000 Hz x 0; send pcm16, 8000..48000 Hz, 1 or 2 channels",
            ),
        ),
        (
            msg(type="audio.start", stream=1, sample_rate=16000, format="PCM16"),
            Problem(
                "audio.format",
                "audio.start: unsupported format PCM16 at 16000 Hz x 1; send pcm16, 8000..48000 Hz, 1 or 2 channels",
            ),
        ),
        (
            msg(type="video.start", stream=1, width=0, height=10, id="v"),
            Problem("video.format", "video.start: width x height must be within 1920 x 1080", "v"),
        ),
        (
            msg(type="video.start", stream=1, width=10, height=0),
            Problem("video.format", "video.start: width x height must be within 1920 x 1080"),
        ),
        (
            msg(type="video.start", stream=1, width=10, height=1081),
            Problem("video.format", "video.start: width x height must be within 1920 x 1080"),
        ),
        (
            msg(type="invoke", name="x", image_stream=0, id="i"),
            Problem("invoke.image", "invoke: no image was uploaded on stream 0", "i"),
        ),
        (
            frame(FrameKind.AUDIO_IN, 5, b""),
            Problem("audio.stream", "audio frame on stream 5, which no audio.start declared"),
        ),
        (
            frame(FrameKind.IMAGE_IN, 6, b""),
            Problem("image.stream", "image frame on stream 6, which no image message declared"),
        ),
        (
            frame(FrameKind.VIDEO_IN, 7, b""),
            Problem("video.stream", "video frame on stream 7, which no video.start declared"),
        ),
        (
            frame(FrameKind.AUDIO_OUT, 1, b""),
            Problem("protocol.frame", "AUDIO_OUT frames go from the server to clients, not back"),
        ),
        (
            frame(FrameKind.IMAGE_OUT, 1, b""),
            Problem("protocol.frame", "IMAGE_OUT frames go from the server to clients, not back"),
        ),
    ],
)
def test_each_refusal_is_an_exact_problem(raw: str | bytes, problem: Problem) -> None:
    proto = ServerProtocol("s1")
    assert proto.receive(raw, 0.0) == [problem]


def test_the_bounds_of_audio_start_and_video_start_are_accepted() -> None:
    proto = ServerProtocol("s1", InputLimits(max_video=(4, 3)))
    for stream, rate, ch in ((1, 8000, 1), (2, 48000, 2)):
        assert proto.receive(msg(type="audio.start", stream=stream, sample_rate=rate, channels=ch), 0.0) == []
    assert proto.audio == {1: (8000, 1), 2: (48000, 2)}
    for stream, (w, h) in enumerate(((1, 1), (4, 3), (4, 1), (1, 3))):
        assert proto.receive(msg(type="video.start", stream=stream, width=w, height=h), 0.0) == []
    assert proto.video == {0: (1, 1), 1: (4, 3), 2: (4, 1), 3: (1, 3)}
    for w, h in ((5, 3), (4, 4)):
        assert proto.receive(msg(type="video.start", stream=9, width=w, height=h), 0.0) == [
            Problem("video.format", "video.start: width x height must be within 4 x 3")
        ]
    assert 9 not in proto.video


def test_events_carry_the_session_and_turn_0() -> None:
    proto = ServerProtocol("sess", InputLimits(end_silence_s=0.01), source="keys")
    proto.receive(msg(type="audio.start", stream=1, sample_rate=8000, channels=2), 0.0)
    proto.receive(msg(type="video.start", stream=2, width=1, height=2), 0.0)
    proto.receive(msg(type="image", stream=3, bytes=2), 0.0)
    got = []
    for raw in (
        frame(FrameKind.AUDIO_IN, 1, b"\x01\x02\x03\x04"),
        frame(FrameKind.VIDEO_IN, 2, b"abcdef"),
        frame(FrameKind.IMAGE_IN, 3, b"ok"),
        msg(type="text", text="hi"),
        msg(type="invoke", name="cap"),
        msg(type="invoke", name="cap", text="t", image_stream=3),
        msg(type="interrupt"),
        msg(type="mute", muted=False),
        msg(type="playback", turn=3, played_ms=7),
        msg(type="ping"),
        msg(type="audio.end", stream=1),
    ):
        got += seen(proto.receive(raw, 0.0))
    base = {"session": "sess", "turn": 0}
    assert got == [
        ("AudioIn", {**base, "pcm": b"\x01\x02\x03\x04", "sample_rate": 8000, "channels": 2}),
        ("VideoFrame", {**base, "width": 1, "height": 2, "rgb": b"abcdef"}),
        ("ImageIn", {**base, "data": b"ok", "name": ""}),
        ("TextIn", {**base, "text": "hi"}),
        ("InvokeCapability", {**base, "name": "cap", "text": "", "image": None}),
        ("InvokeCapability", {**base, "name": "cap", "text": "t", "image": b"ok"}),
        ("Interrupt", {**base, "reason": "keys"}),
        ("Mute", {**base, "muted": False}),
        ("PlaybackProgress", {"session": "sess", "turn": 3, "played_ms": 7.0}),
        {"type": "pong", "nonce": None},
        # 0.01 s of 8 kHz stereo: 80 frames of 4 bytes
        ("AudioIn", {**base, "pcm": bytes(320), "sample_rate": 8000, "channels": 2}),
    ]
    assert type(got[8][1]["played_ms"]) is float


def test_an_empty_audio_frame_gives_nothing_and_ends_of_unknown_streams_are_ignored() -> None:
    proto = ServerProtocol("s1")
    proto.receive(msg(type="audio.start", stream=1, sample_rate=16000), 0.0)
    assert proto.receive(frame(FrameKind.AUDIO_IN, 1, b""), 0.0) == []
    assert proto.receive(msg(type="video.end", stream=5), 0.0) == []
    assert proto.receive(msg(type="audio.end", stream=5), 0.0) == []
    assert proto.audio == {1: (16000, 1)}


def test_an_image_of_the_wrong_size_is_named_by_its_name_or_its_stream() -> None:
    proto = ServerProtocol("s1")
    proto.receive(msg(type="image", stream=5, bytes=3, id="up"), 0.0)
    proto.receive(msg(type="image", stream=6, bytes=3, name="cat.png"), 0.0)
    assert proto.receive(frame(FrameKind.IMAGE_IN, 5, b"ab"), 0.0) == [
        Problem("image.size", "image 5: declared 3 bytes, got 2", "up")
    ]
    assert proto.receive(frame(FrameKind.IMAGE_IN, 6, b"abcd"), 0.0) == [
        Problem("image.size", "image cat.png: declared 3 bytes, got 4")
    ]
    # a declaration is used once, right or wrong
    assert proto.images_declared == {} and proto.images == {}


def test_the_newest_images_are_kept() -> None:
    proto = ServerProtocol("s1", InputLimits(kept_images=2))
    for stream in (1, 2, 3):
        proto.receive(msg(type="image", stream=stream, bytes=1), 0.0)
        proto.receive(frame(FrameKind.IMAGE_IN, stream, bytes([stream])), 0.0)
    assert list(proto.images.items()) == [(2, b"\x02"), (3, b"\x03")]
    (call,) = proto.receive(msg(type="invoke", name="x", image_stream=2), 0.0)
    assert isinstance(call, InvokeCapability) and call.image == b"\x02"


def test_a_restricted_protocol_names_the_message_it_refuses() -> None:
    proto = ServerProtocol("s1", allowed=["text", "ping"])
    assert proto.allowed == frozenset({"text", "ping"})
    assert proto.receive(msg(type="mute", muted=True, id="m"), 0.0) == [
        Problem("protocol.type", "mute cannot be sent here; the messages accepted are: ping, text", "m")
    ]
    assert proto.receive(frame(FrameKind.AUDIO_IN, 1, b""), 0.0) == [
        Problem("protocol.frame", "binary frames cannot be sent here")
    ]
    assert ServerProtocol("s1", allowed=[]).receive(msg(type="ping"), 0.0) == [
        Problem("protocol.type", "ping cannot be sent here; the messages accepted are: ")
    ]


def test_an_event_that_refuses_its_fields_is_an_input_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from mio_agent import protocol
    from mio_agent.exceptions import EventError

    def refuse(**fields: Any) -> Event:
        raise EventError(f"text.in: refused {fields['text']}")

    monkeypatch.setattr(protocol.inbound, "TextIn", refuse)
    assert ServerProtocol("s1").receive(msg(type="text", text="x", id="t"), 0.0) == [
        Problem("input.invalid", "text.in: refused x")
    ]


# -- the audio rate, exactly -----------------------------------------------------------------------
def test_a_fresh_connection_allows_its_burst_at_once() -> None:
    proto = ServerProtocol("s1")  # starts at 0.0: 10 s of burst at t=0
    proto.receive(msg(type="audio.start", stream=1, sample_rate=8000), 0.0)
    second = frame(FrameKind.AUDIO_IN, 1, bytes(16000))  # 1 s of 8 kHz mono
    assert [len(events(proto.receive(second, 0.0))) for _ in range(10)] == [1] * 10
    assert proto.audio_s == 10.0
    (report,) = proto.receive(second, 0.0)
    assert isinstance(report, Problem) and report.code == "audio.rate"


def test_stereo_audio_counts_its_seconds_by_frames_of_4_bytes() -> None:
    proto = ServerProtocol("s1", InputLimits(audio_speed=0.0, audio_burst_s=1.0))
    proto.receive(msg(type="audio.start", stream=1, sample_rate=8000, channels=2), 0.0)
    assert len(events(proto.receive(frame(FrameKind.AUDIO_IN, 1, bytes(16000)), 0.0))) == 1  # 0.5 s
    assert proto.audio_s == 0.5
    assert len(events(proto.receive(frame(FrameKind.AUDIO_IN, 1, bytes(16000)), 0.0))) == 1
    assert proto.audio_s == 1.0
    assert proto.receive(frame(FrameKind.AUDIO_IN, 1, bytes(4)), 0.0)[0] == Problem(
        "audio.rate",
        "1 audio chunk(s) (0.00 s of audio) were dropped: audio arrives faster than 0x real time "
        "(after a 1 s burst); send it closer to real time",
        extra={"dropped": 1, "dropped_s": 0.0, "dropped_total": 1},
    )


def test_audio_that_reaches_the_limit_within_its_margin_is_accepted() -> None:
    # 0.1 s against a burst of 0.1 s less the 1e-9 margin: at the limit, not over it
    proto = ServerProtocol("s1", InputLimits(audio_speed=0.0, audio_burst_s=0.1 - 1e-9))
    proto.receive(msg(type="audio.start", stream=1, sample_rate=16000), 0.0)
    (chunk,) = proto.receive(frame(FrameKind.AUDIO_IN, 1, bytes(3200)), 0.0)
    assert isinstance(chunk, AudioIn) and proto.audio_s == 0.1
    (report,) = proto.receive(frame(FrameKind.AUDIO_IN, 1, bytes(2)), 0.0)
    assert isinstance(report, Problem) and report.code == "audio.rate"


def test_drops_are_reported_when_the_interval_ends_exactly() -> None:
    proto = ServerProtocol("s1", InputLimits(audio_speed=0.0, audio_burst_s=0.0, drop_report_s=1.5))
    proto.receive(msg(type="audio.start", stream=1, sample_rate=8000), 0.0)
    chunk = frame(FrameKind.AUDIO_IN, 1, bytes(200))  # 0.0125 s
    assert [p.extra for p in proto.receive(chunk, 2.0) if isinstance(p, Problem)] == [
        {"dropped": 1, "dropped_s": 0.013, "dropped_total": 1}  # 0.0125 s to 3 places
    ]
    assert proto.receive(chunk, 3.0) == [] and proto.report_at == 3.5
    (report,) = proto.receive(chunk, 3.5)  # the interval ends now: reported now
    assert isinstance(report, Problem) and report.extra == {
        "dropped": 2,
        "dropped_s": 0.025,
        "dropped_total": 3,
    }
    assert report.message.startswith("2 audio chunk(s) (0.03 s of audio) were dropped")
    assert proto.report_at is None


def test_the_report_at_a_streams_end_starts_the_next_interval() -> None:
    proto = ServerProtocol("s1", InputLimits(audio_speed=0.0, audio_burst_s=0.0, end_silence_s=0.0))
    proto.receive(msg(type="audio.start", stream=1, sample_rate=8000), 0.0)
    chunk = frame(FrameKind.AUDIO_IN, 1, bytes(160))  # 0.01 s
    assert [p.code for p in proto.receive(chunk, 5.0) if isinstance(p, Problem)] == ["audio.rate"]  # at once
    assert proto.receive(chunk, 5.5) == [] and proto.report_at == 6.0
    out = seen(proto.receive(msg(type="audio.end", stream=1), 5.75))
    assert out == [
        Problem(
            "audio.rate",
            "1 audio chunk(s) (0.01 s of audio) were dropped: audio arrives faster than 0x real time "
            "(after a 0 s burst); send it closer to real time",
            extra={"dropped": 1, "dropped_s": 0.01, "dropped_total": 2},
        ),
        ("AudioIn", {"session": "s1", "turn": 0, "pcm": b"", "sample_rate": 8000, "channels": 1}),
    ]
    assert proto.report_at is None
    proto.receive(msg(type="audio.start", stream=2, sample_rate=8000), 5.75)
    # the next report is due a drop_report_s after the one the end made
    assert proto.receive(frame(FrameKind.AUDIO_IN, 2, bytes(160)), 6.5) == [] and proto.report_at == 6.75
