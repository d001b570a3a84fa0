"""Events: registry, immutability, control flags, dict round trips and the errors of malformed dicts."""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from typing import Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mio_agent import events
from mio_agent.conversation import Mode
from mio_agent.events import (
    BINARY_EVENT_TYPES,
    EVENT_TYPES,
    AudioIn,
    AudioOut,
    CapabilityProgress,
    ErrorEvent,
    Event,
    EventError,
    ImageOut,
    Interrupt,
    Metrics,
    PlaybackClear,
    SpeechCodes,
    TextDelta,
    TextIn,
    TurnEnded,
    TurnStarted,
    UserSpeechEnded,
    UserSpeechStarted,
    VideoFrame,
    binary_payloads,
    event_from_dict,
    event_to_dict,
)


class _Ids(TypedDict):
    session: str
    turn: int


S: _Ids = {"session": "s1", "turn": 3}


def samples() -> list[Event]:
    """One event of every type, with non-default values where there are any."""
    return [
        AudioIn(**S, pcm=bytes(range(8)) * 40, sample_rate=16000, channels=2),
        VideoFrame(**S, width=4, height=2, rgb=bytes(range(24))),
        TextIn(**S, text="héllo"),
        UserSpeechStarted(**S),
        UserSpeechEnded(**S, duration_s=1.25),
        TurnStarted(**S, mode="std", kind="storytelling"),
        TextDelta(**S, text=" wor"),
        SpeechCodes(**S, layer=2, codes=(5, 1023, 0)),
        AudioOut(**S, pcm=b"\x01\x00" * 100, sample_rate=24000, seq=7),
        ImageOut(**S, codes=tuple(range(32)), png=b"\x89PNG..."),
        TurnEnded(**S, reason="interrupted", tokens=41),
        PlaybackClear(**S),
        CapabilityProgress(**S, name="edit", step=2, total=5, message="denoising"),
        Metrics(**S, stage="prefill", seconds=0.031, extra={"tokens": 120, "device": "cpu", "cached": True}),
        ErrorEvent(**S, code="codec", message="bad audio", recoverable=False),
        Interrupt(**S, reason="barge-in"),
        events.ImageIn(**S, data=b"\x89PNG...", name="cat.png"),
        events.InvokeCapability(**S, name="image_editing", text="winter", image=b"\xff\xd8jpeg"),
        events.PlaybackProgress(**S, played_ms=1234.5),
        events.UserTurn(**S, text="hi", speech_s=1.5, images=1, keyframes=(3, 9)),
        events.Transcript(**S, text="make it winter"),
        events.RouteDecided(**S, capability="image_editing", reason="trigger 'winter'"),
        events.SessionState(**S, state="speaking"),
        events.InputLevel(**S, dbfs=-23.5, speech=True),
        events.Mute(**S, muted=True),
    ]


def test_every_event_class_is_registered_once_under_its_type() -> None:
    concrete = {ev.__class__ for ev in samples()}
    assert set(EVENT_TYPES.values()) == concrete
    for name, cls in EVENT_TYPES.items():
        assert cls.type == name
        assert name == name.lower() and " " not in name
    assert len(samples()) == len(EVENT_TYPES)


def test_all_is_complete() -> None:
    for name in events.__all__:
        assert hasattr(events, name), name


def test_only_interrupt_mute_and_playback_clear_are_control() -> None:
    control = {name for name, cls in EVENT_TYPES.items() if cls.control}
    assert control == {"interrupt", "playback.clear", "mute"}
    assert Interrupt.family == "control"
    assert TextIn.family == "input" and AudioIn.family == "input" and VideoFrame.family == "input"
    assert TextDelta.family == "output" and TurnEnded.family == "output"


def test_events_are_frozen_slotted_and_timestamped() -> None:
    before = time.monotonic()
    ev = TextDelta(session="a", turn=1, text="x")
    after = time.monotonic()
    assert before <= ev.t <= after
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.text = "y"  # type: ignore[misc]
    assert not hasattr(ev, "__dict__")
    later = TextDelta(session="a", turn=1, text="x")
    assert later.t >= ev.t


def test_fields_are_keyword_only() -> None:
    positional: Any = TextDelta
    with pytest.raises(TypeError):
        positional("a", 1, "x")


def test_turn_mode_mirrors_conversation_mode() -> None:
    assert set(typing.get_args(events.TurnMode)) == set(typing.get_args(Mode))


def test_binary_event_types() -> None:
    assert set(BINARY_EVENT_TYPES) == {
        "audio.in",
        "video.frame",
        "audio.out",
        "image.out",
        "image.in",
        "capability.invoke",
    }


@pytest.mark.parametrize("ev", samples(), ids=lambda ev: ev.type)
def test_dict_is_json_safe_and_round_trips(ev: Event) -> None:
    d = event_to_dict(ev)
    text = json.dumps(d)
    assert d["type"] == ev.type and d["session"] == "s1" and d["turn"] == 3 and d["t"] == ev.t
    back = event_from_dict(json.loads(text), payloads=binary_payloads(ev))
    assert back == ev
    assert type(back) is type(ev)


def test_bytes_become_their_length() -> None:
    ev = AudioOut(**S, pcm=b"\0\0" * 480, sample_rate=24000, seq=0)
    d = event_to_dict(ev)
    assert d["pcm"] == {"bytes": 960}
    assert "\\u0000" not in json.dumps(d)
    assert binary_payloads(ev) == {"pcm": ev.pcm}


def test_image_without_png_needs_no_payload() -> None:
    ev = ImageOut(**S, codes=(1, 2, 3))
    d = event_to_dict(ev)
    assert d["png"] is None
    assert binary_payloads(ev) == {}
    assert event_from_dict(d) == ev


def test_missing_t_defaults_to_now_and_int_becomes_float() -> None:
    ev = event_from_dict({"type": "text.in", "session": "s", "turn": 0, "text": "hi"})
    assert isinstance(ev, TextIn) and abs(ev.t - time.monotonic()) < 5
    ev2 = event_from_dict({"type": "user.speech.ended", "session": "s", "turn": 0, "t": 3, "duration_s": 2})
    assert isinstance(ev2, UserSpeechEnded)
    assert isinstance(ev2.t, float) and isinstance(ev2.duration_s, float) and ev2.duration_s == 2.0


@pytest.mark.parametrize(
    ("d", "fragments"),
    [
        ({"type": "text.out", "session": "s", "turn": 0}, ["unknown event type 'text.out'", "text.in"]),
        ({"session": "s", "turn": 0}, ["unknown event type None"]),
        ({"type": "text.in", "session": "s", "turn": 0}, ["text.in: missing field 'text'"]),
        ({"type": "text.in", "turn": 0, "text": "x"}, ["missing field 'session'"]),
        (
            {"type": "text.in", "session": "s", "turn": 0, "text": "x", "colour": 1},
            ["unknown field(s) colour"],
        ),
        (
            {"type": "text.in", "session": "s", "turn": "0", "text": "x"},
            ["text.in.turn", "expected an integer"],
        ),
        ({"type": "text.in", "session": "s", "turn": True, "text": "x"}, ["text.in.turn", "True (bool)"]),
        (
            {"type": "turn.ended", "session": "s", "turn": 0, "reason": "bored"},
            ["turn.ended.reason", "'completed'", "'bored'"],
        ),
        (
            {"type": "speech.codes", "session": "s", "turn": 0, "layer": 0, "codes": [1, "2"]},
            ["speech.codes.codes", "list of integers"],
        ),
        (
            {"type": "capability.progress", "session": "s", "turn": 0, "name": "x", "step": 1, "total": "5"},
            ["capability.progress.total", "an integer or null"],
        ),
        (
            {"type": "metrics", "session": "s", "turn": 0, "stage": "x", "seconds": 1, "extra": {"a": [1]}},
            ["metrics.extra"],
        ),
        (
            {"type": "audio.out", "session": "s", "turn": 0, "pcm": "AAAA", "sample_rate": 16000, "seq": 0},
            ["audio.out.pcm", '{"bytes": <length>}'],
        ),
        (
            {
                "type": "audio.out",
                "session": "s",
                "turn": 0,
                "pcm": {"bytes": 4},
                "sample_rate": 16000,
                "seq": 0,
            },
            ["audio.out.pcm", "payloads"],
        ),
    ],
)
def test_malformed_dicts_name_type_and_field(d: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(EventError) as info:
        event_from_dict(d)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_payload_length_must_match() -> None:
    d = {"type": "audio.out", "session": "s", "turn": 0, "pcm": {"bytes": 4}, "sample_rate": 16000, "seq": 0}
    with pytest.raises(EventError, match="says 4 bytes but the payload holds 6"):
        event_from_dict(d, payloads={"pcm": b"\0" * 6})
    ev = event_from_dict(d, payloads={"pcm": b"\x01\x00\x02\x00"})
    assert isinstance(ev, AudioOut) and ev.pcm == b"\x01\x00\x02\x00" and ev.sample_rate == 16000


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: AudioIn(**S, pcm=b"\0" * 3, sample_rate=16000), "not a whole number of int16 frames"),
        (lambda: AudioIn(**S, pcm=b"\0" * 2, sample_rate=16000, channels=2), "of 2 channel(s)"),
        (lambda: AudioIn(**S, pcm=b"", sample_rate=0), "sample_rate must be a positive"),
        (lambda: AudioOut(**S, pcm=b"\0", sample_rate=24000, seq=0), "audio.out: pcm holds 1 bytes"),
        (lambda: VideoFrame(**S, width=2, height=2, rgb=b"\0" * 11), "expected 2×2×3 = 12"),
        (lambda: VideoFrame(**S, width=0, height=2, rgb=b""), "width and height must be positive"),
        (lambda: TurnEnded(**S, reason="bored"), "reason must be one of completed"),  # type: ignore[arg-type]
        (lambda: SpeechCodes(**S, layer=-1, codes=()), "layer must be 0 or more"),
    ],
)
def test_invalid_events_raise_when_built(build: Any, fragment: str) -> None:
    with pytest.raises(EventError) as info:
        build()
    assert fragment in str(info.value)


def test_event_error_is_a_project_error_and_a_value_error() -> None:
    from mio_agent.exceptions import MioAgentError

    assert issubclass(EventError, MioAgentError) and issubclass(EventError, ValueError)


def test_metrics_extra_is_a_read_only_copy() -> None:
    extra: dict[str, int | float | str | bool] = {"tokens": 3}
    ev = Metrics(**S, stage="decode", seconds=0.5, extra=extra)
    extra["tokens"] = 99
    assert ev.extra["tokens"] == 3
    with pytest.raises(TypeError):
        ev.extra["tokens"] = 4  # type: ignore[index]


def test_durations_and_shapes() -> None:
    assert AudioIn(**S, pcm=b"\0" * 640, sample_rate=16000).duration_s == pytest.approx(0.02)
    assert AudioIn(**S, pcm=b"\0" * 640, sample_rate=16000, channels=2).duration_s == pytest.approx(0.01)
    assert AudioOut(**S, pcm=b"\0" * 4800, sample_rate=24000, seq=0).duration_s == pytest.approx(0.1)
    assert VideoFrame(**S, width=4, height=2, rgb=bytes(24)).shape == (2, 4, 3)


def test_repr_leaves_out_raw_bytes() -> None:
    text = repr(AudioIn(**S, pcm=b"\x7f" * 3200, sample_rate=16000))
    assert "\\x7f" not in text and "sample_rate=16000" in text


@given(
    text=st.text(max_size=50), codes=st.lists(st.integers(0, 8191), max_size=40), turn=st.integers(0, 10**6)
)
def test_text_and_codes_round_trip_through_json(text: str, codes: list[int], turn: int) -> None:
    for ev in (
        TextDelta(session="s", turn=turn, text=text),
        SpeechCodes(session="s", turn=turn, layer=0, codes=tuple(codes)),
    ):
        assert event_from_dict(json.loads(json.dumps(event_to_dict(ev)))) == ev
