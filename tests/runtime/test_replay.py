"""Replay's summary and comparison as units: content makes a difference, timings never do."""

from __future__ import annotations

from mio_agent.events import (
    AudioOut,
    ErrorEvent,
    Event,
    ImageOut,
    Metrics,
    RouteDecided,
    SpeechCodes,
    TextDelta,
    Transcript,
    TurnEnded,
    TurnStarted,
    UserTurn,
)
from mio_agent.runtime.replay import compare, summarize


def _turn(
    *,
    codes: tuple[int, ...] = (5, 6, 7),
    text: str = "hi",
    first_audio: float = 0.1,
    audio_samples: int = 1600,
    route: str = "",
    reason: str = "completed",
) -> list[Event]:
    s = "s"
    return [
        UserTurn(session=s, turn=1, text="", speech_s=1.25),
        Transcript(session=s, turn=1, text="hello there"),
        RouteDecided(session=s, turn=1, capability=route, reason="no trigger"),
        TurnStarted(session=s, turn=1, mode="voice"),
        TextDelta(session=s, turn=1, text=text),
        SpeechCodes(session=s, turn=1, layer=0, codes=codes),
        ImageOut(session=s, turn=1, codes=tuple(range(32))),
        AudioOut(session=s, turn=1, pcm=b"\0\0" * audio_samples, sample_rate=16000, seq=0),
        Metrics(session=s, turn=1, stage="first_audio", seconds=first_audio),
        TurnEnded(session=s, turn=1, reason=reason, tokens=len(codes)),  # type: ignore[arg-type]
    ]


def test_summary_collects_what_a_turn_said_and_produced() -> None:
    (t,) = summarize(_turn())
    assert t.turn == 1 and t.speech_s == 1.25 and t.transcript == "hello there"
    assert t.route == "reply" and t.kind == "reply" and t.reason == "completed" and t.tokens == 3
    assert t.text == "hi" and t.codes == {0: [5, 6, 7]} and t.images == [tuple(range(32))]
    assert abs(t.audio_s - 0.1) < 1e-9 and t.timings == {"first_audio": 0.1}


def test_summary_reads_logged_binary_events_as_dicts() -> None:
    logged = [
        {"type": "audio.out", "turn": 1, "pcm": {"bytes": 3200}, "sample_rate": 16000},
        {"type": "image.out", "turn": 1, "codes": [1, 2, 3]},
        TurnEnded(session="s", turn=1, reason="completed", tokens=0),
    ]
    (t,) = summarize(logged)
    assert abs(t.audio_s - 0.1) < 1e-9 and t.images == [(1, 2, 3)]


def test_timings_never_make_a_difference() -> None:
    assert compare(summarize(_turn(first_audio=0.05)), summarize(_turn(first_audio=30.0))) == []


def test_changed_content_is_reported() -> None:
    base = summarize(_turn())
    assert any("codes" in d for d in compare(base, summarize(_turn(codes=(5, 6, 8)))))
    assert any("text" in d for d in compare(base, summarize(_turn(text="ho"))))
    assert any("route" in d for d in compare(base, summarize(_turn(route="haiku"))))
    assert any("reason" in d for d in compare(base, summarize(_turn(reason="interrupted"))))
    errors = [*_turn()[:-1], ErrorEvent(session="s", turn=1, code="x.y", message="m"), _turn()[-1]]
    assert any("errors" in d for d in compare(base, summarize(errors)))
    assert compare(base, []) == ["1 turn(s) recorded but 0 in the replay"]


def test_audio_length_is_compared_within_50_ms() -> None:
    base = summarize(_turn(audio_samples=1600))
    assert compare(base, summarize(_turn(audio_samples=1600 + 480))) == []  # 30 ms longer
    (diff,) = compare(base, summarize(_turn(audio_samples=1600 + 1600)))  # 100 ms longer
    assert "reply audio was 0.10 s, now 0.20 s" in diff
