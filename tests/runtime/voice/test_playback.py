"""What the user heard of a reply: `heard_parts` cuts at the played content code; where playback
stands: remote players (reports win over the real-time estimate) and the local speaker."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from mio_agent.conversation import ImagePart, SpeechPart, TextPart
from mio_agent.runtime.audio.files import FileSpeakerSink
from mio_agent.runtime.audio.jitter import BufferedSink
from mio_agent.runtime.voice import playback as playback_module
from mio_agent.runtime.voice.playback import CODE_MS, LocalPlayback, ReportedPlayback, heard_parts

IMAGE = ImagePart(tuple(range(32)))


def speech(*content: int, timbre: bool = True) -> SpeechPart:
    """A block of the given content codes, with (by default) three timbre layers derived from them."""
    if not timbre:
        return SpeechPart(tuple(content))
    layers = tuple(tuple(c + k for c in content) for k in (100, 200, 300))
    return SpeechPart(tuple(content), layers)  # type: ignore[arg-type]


def test_one_content_code_is_twenty_ms() -> None:
    assert CODE_MS == 20.0


@pytest.mark.parametrize(
    ("played_ms", "content"),
    [
        (0.0, None),
        (19.999, None),
        (20.0, (1,)),
        (39.9, (1,)),
        (40.0, (1, 2)),
        (59.0, (1, 2)),
    ],
)
def test_played_ms_are_floored_to_whole_content_codes(
    played_ms: float, content: tuple[int, ...] | None
) -> None:
    parts = (TextPart("hi "), speech(1, 2, 3, 4))
    expected = (TextPart("hi "),) if content is None else (TextPart("hi "), SpeechPart(content))
    assert heard_parts(parts, played_ms) == expected


def test_a_cut_block_keeps_its_played_content_codes_only() -> None:
    heard = heard_parts((speech(7, 8, 9),), 2 * CODE_MS)
    assert heard == (SpeechPart((7, 8)),)
    assert heard[0].timbre is None  # type: ignore[union-attr]


def test_a_block_played_to_its_last_code_stays_whole_with_its_timbre() -> None:
    block = speech(7, 8, 9)
    assert heard_parts((block,), 3 * CODE_MS) == (block,)
    assert heard_parts((block,), 3 * CODE_MS + 19) == (block,)
    assert heard_parts((block,), 10_000.0) == (block,)


def test_the_budget_carries_across_blocks_and_stops_at_the_cut() -> None:
    first, second, third = speech(1, 2), speech(3, 4, 5), speech(6)
    parts = (TextPart("a"), first, TextPart("b"), second, IMAGE, TextPart("c"), third)
    # 2 codes of the first block, 2 of the second: cut inside the second, nothing after it
    assert heard_parts(parts, 4 * CODE_MS) == (TextPart("a"), first, TextPart("b"), SpeechPart((3, 4)))
    # the first block exactly: what follows it up to the next speech was shown, the next block unheard
    assert heard_parts(parts, 2 * CODE_MS) == (TextPart("a"), first, TextPart("b"))
    # 5 codes: both blocks whole, the image and text after them, the third block not reached
    assert heard_parts(parts, 5 * CODE_MS) == (
        TextPart("a"),
        first,
        TextPart("b"),
        second,
        IMAGE,
        TextPart("c"),
    )
    # everything played
    assert heard_parts(parts, 6 * CODE_MS) == parts
    # one code of the first block only
    assert heard_parts(parts, CODE_MS) == (TextPart("a"), SpeechPart((1,)))


def test_content_only_blocks_and_replies_without_speech() -> None:
    plain = speech(4, 5, timbre=False)
    assert heard_parts((plain,), 2 * CODE_MS) == (plain,)
    assert heard_parts((plain,), CODE_MS) == (SpeechPart((4,)),)
    # nothing to play: text and images were all shown
    assert heard_parts((TextPart("x"), IMAGE, TextPart("y")), 0.0) == (TextPart("x"), IMAGE, TextPart("y"))
    assert heard_parts((), 500.0) == ()
    # speech first and nothing played: nothing at all was heard
    assert heard_parts((speech(1), TextPart("later")), 0.0) == ()


def test_reports_win_capped_at_what_was_produced() -> None:
    p = ReportedPlayback()
    assert p.played_ms(0) == 0.0
    assert not p.playing()
    p.produced(1, 300.0)
    p.produced(1, 200.0)
    p.report(1, 120.0)
    assert p.played_ms(1) == 120.0
    assert p.playing()
    # a report never moves playback back
    p.report(1, 80.0)
    assert p.played_ms(1) == 120.0
    # nor past the audio that exists
    p.report(1, 900.0)
    assert p.played_ms(1) == 500.0
    assert not p.playing()
    # another turn's position is not this one's
    assert p.played_ms(0) == 0.0
    assert p.played_ms(2) == 0.0


def test_a_late_report_of_an_older_turn_is_ignored_and_a_newer_turn_resets() -> None:
    p = ReportedPlayback()
    p.produced(2, 400.0)
    p.report(2, 100.0)
    p.report(1, 350.0)
    assert p.played_ms(2) == 100.0
    # a report of a turn not produced yet starts that turn: nothing of it exists yet
    p.report(3, 60.0)
    assert p.played_ms(2) == 0.0
    assert p.played_ms(3) == 0.0
    p.produced(3, 40.0)
    assert p.played_ms(3) == 40.0
    p.produced(3, 100.0)
    assert p.played_ms(3) == 60.0


class Clock:
    """The wall clock that runtime/voice/playback.py alone reads (the event loop keeps the real one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(playback_module, "time", types.SimpleNamespace(monotonic=lambda: self.now))

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


def test_the_estimate_runs_in_real_time_from_the_first_audio_up_to_what_was_produced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    p = ReportedPlayback()
    p.produced(1, 100.0)
    assert p.played_ms(1) == 0.0
    assert p.playing()
    clock.advance_ms(40)
    # more audio later does not restart the clock of the turn
    p.produced(1, 100.0)
    clock.advance_ms(25)
    assert p.played_ms(1) == pytest.approx(65.0)
    assert p.playing()
    clock.advance_ms(500)
    assert p.played_ms(1) == 200.0
    assert not p.playing()
    # a new turn starts its own clock
    p.produced(2, 80.0)
    clock.advance_ms(30)
    assert p.played_ms(2) == pytest.approx(30.0)
    assert p.played_ms(1) == 0.0


def test_clear_freezes_the_position_until_a_report_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    p = ReportedPlayback()
    p.clear()
    assert p.played_ms(-1) == 0.0
    p.produced(1, 500.0)
    clock.advance_ms(120)
    p.clear()
    assert p.played_ms(1) == pytest.approx(120.0)
    assert not p.playing()
    # the position stays where the clear stopped it, however long it has been since
    clock.advance_ms(300)
    assert p.played_ms(1) == pytest.approx(120.0)
    # a second clear keeps the first position
    p.clear()
    assert p.played_ms(1) == pytest.approx(120.0)
    # the client's report is what the user actually heard
    p.report(1, 90.0)
    assert p.played_ms(1) == 90.0
    assert not p.playing()
    # a new turn is not cleared
    p.produced(2, 100.0)
    assert p.playing()


def test_a_report_may_come_before_the_audio_and_zero_means_nothing_heard() -> None:
    p = ReportedPlayback()
    p.report(0, 50.0)
    # nothing of turn 0 was produced yet: nothing can have been heard
    assert p.played_ms(0) == 0.0
    p.produced(0, 100.0)
    assert p.played_ms(0) == 50.0
    q = ReportedPlayback()
    q.produced(4, 100.0)
    q.report(4, 0.0)
    assert q.played_ms(4) == 0.0
    assert q.playing()


async def test_local_playback_is_the_speakers_jitter_buffer(tmp_path: Path) -> None:
    # the jitter buffer with no device draining it: what is queued stays queued
    sink = BufferedSink(16000)
    local = LocalPlayback(sink)
    assert not local.playing()
    local.produced(1, 0.5)
    await sink.play(np.zeros(8, np.int16).tobytes(), 16000, turn=1)
    assert sink.buffered_ms == 0.5
    assert local.playing()
    assert local.played_ms(1) == 0.0
    local.clear()
    assert sink.buffered_ms == 0.0
    assert not local.playing()
    # a file speaker in fast mode hands every sample to its file at once
    speaker = FileSpeakerSink(tmp_path / "out.wav", rate=16000, fast=True)
    local = LocalPlayback(speaker)
    try:
        await speaker.play(np.ones(1600, np.int16).tobytes(), 16000, turn=2)
        assert local.played_ms(2) == 100.0
        assert local.played_ms(3) == 0.0
        assert not local.playing()
    finally:
        await speaker.close()
