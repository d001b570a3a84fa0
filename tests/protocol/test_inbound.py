"""The server side of the protocol without sockets: client bytes in, the bytes the server sends (or the inputs it takes) out."""

from __future__ import annotations

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
