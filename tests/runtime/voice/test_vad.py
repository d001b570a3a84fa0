"""The VAD segmenter on espeak-ng speech, silence and noise bursts: pre-roll, false starts, pauses, end of turn."""

from __future__ import annotations

import numpy as np
import pytest

from mio_agent.exceptions import ConfigError
from mio_agent.runtime.audio import frames_of
from mio_agent.runtime.voice import vad as vad_module
from mio_agent.runtime.voice.vad import (
    SileroDetector,
    SpeechEnded,
    SpeechEvent,
    SpeechFrame,
    SpeechStarted,
    VadSegmenter,
    make_detector,
)

RATE = 16000


def test_all_names_exist() -> None:
    for name in vad_module.__all__:
        assert hasattr(vad_module, name), name


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return _noise(seconds, -75.0, seed=int(seconds * 1000))


def _onset_and_end(speech: np.ndarray) -> tuple[float, float]:
    loud = np.nonzero(np.abs(speech) > 0.02)[0]
    return loud[0] / RATE, (loud[-1] + 1) / RATE


def _run(segmenter: VadSegmenter, signal: np.ndarray, *, flush: bool = True) -> list[SpeechEvent]:
    events: list[SpeechEvent] = []
    for frame in frames_of(signal):
        events += segmenter.push(frame)
    if flush:
        events += segmenter.flush()
    return events


def _of(events: list[SpeechEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def test_an_utterance_keeps_its_first_syllable_and_ends_after_the_silence(user_speech: np.ndarray) -> None:
    signal = np.concatenate([_silence(1.0), user_speech, _silence(1.5)])
    onset, end = _onset_and_end(user_speech)
    segmenter = VadSegmenter(end_silence_ms=600, pre_roll_ms=300, hangover_ms=150)
    events = _run(segmenter, signal, flush=False)
    (started,) = _of(events, SpeechStarted)
    (ended,) = _of(events, SpeechEnded)
    # the pre-roll reaches back before the first sound, so nothing of it is lost
    assert started.t <= 1.0 + onset - 0.2
    assert started.detected_at - (1.0 + onset) < 0.5
    assert started.frames[0].t == started.t
    # the utterance's audio holds all of the speech
    first = round(started.t * RATE)
    kept = signal[first : first + ended.audio.size]
    assert np.allclose(ended.audio / 32768, kept, atol=1.5 / 32768)
    assert first <= round((1.0 + onset) * RATE) and first + ended.audio.size >= round((1.0 + end) * RATE)
    # the turn ends end_silence_ms after the speech does
    assert ended.speech_end == pytest.approx(1.0 + end, abs=0.1)
    assert ended.detected_at - ended.speech_end == pytest.approx(0.6, abs=0.03)
    assert ended.reason == "silence" and ended.duration_s == ended.audio.size / RATE
    frames = _of(events, SpeechFrame)
    assert len(started.frames) + len(frames) >= ended.audio.size // 320
    assert not segmenter.in_speech


def test_a_cough_is_a_false_start_not_an_utterance(user_speech: np.ndarray) -> None:
    cough = _noise(0.1, -15.0, seed=3)
    signal = np.concatenate([_silence(0.8), cough, _silence(1.0), user_speech, _silence(1.0)])
    segmenter = VadSegmenter(min_speech_ms=200)
    events = _run(segmenter, signal)
    starts = _of(events, SpeechStarted)
    assert len(starts) == 1
    assert starts[0].t > 0.9 + 0.2  # the speech, not the cough
    assert segmenter.false_starts >= 1
    # and without a minimum length the cough would have counted
    assert len(_of(_run(VadSegmenter(min_speech_ms=20), signal), SpeechStarted)) == 2


def test_a_short_pause_does_not_end_the_turn_but_a_long_one_does(user_speech: np.ndarray) -> None:
    _, end = _onset_and_end(user_speech)
    words = user_speech[: int(end * RATE)]
    signal = np.concatenate([_silence(0.5), words, _silence(0.35), words, _silence(1.0)])
    assert len(_of(_run(VadSegmenter(end_silence_ms=600), signal), SpeechEnded)) == 1
    assert len(_of(_run(VadSegmenter(end_silence_ms=250), signal), SpeechEnded)) == 2


def test_end_of_turn_silence_can_change_between_frames(user_speech: np.ndarray) -> None:
    signal = np.concatenate([_silence(0.5), user_speech, _silence(2.0)])
    segmenter = VadSegmenter(end_silence_ms=1500)
    events: list[SpeechEvent] = []
    for frame in frames_of(signal):
        if segmenter.in_speech:
            segmenter.end_silence_ms = 300
        events += segmenter.push(frame)
    (ended,) = _of(events, SpeechEnded)
    assert ended.detected_at - ended.speech_end == pytest.approx(0.3, abs=0.03)


def test_long_speech_is_capped_and_a_stream_end_flushes(reply_speech: np.ndarray) -> None:
    capped = _run(VadSegmenter(max_speech_s=2.0), np.concatenate([_silence(0.3), reply_speech]), flush=False)
    first = _of(capped, SpeechEnded)[0]
    assert first.reason == "max_length" and first.duration_s == pytest.approx(2.0, abs=0.03)
    flushed = _run(VadSegmenter(), np.concatenate([_silence(0.3), reply_speech[: 2 * RATE]]))
    (ended,) = _of(flushed, SpeechEnded)
    assert ended.reason == "flush"


def test_frames_below_the_level_floor_are_silence(user_speech: np.ndarray) -> None:
    whisper = user_speech * 10 ** (-50 / 20)  # peaks near -52 dBFS
    signal = np.concatenate([_silence(0.5), whisper, _silence(1.0)])
    assert not _of(_run(VadSegmenter(min_level_dbfs=-50), signal), SpeechStarted)
    assert _of(
        _run(VadSegmenter(min_level_dbfs=-90, detector=make_detector(aggressiveness=0)), signal),
        SpeechStarted,
    )


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="aggressiveness"):
        make_detector(aggressiveness=5)
    with pytest.raises(ConfigError, match="unknown voice detector"):
        make_detector("energy")
    with pytest.raises(ConfigError, match="end_silence_ms"):
        VadSegmenter(end_silence_ms=-1)
    with pytest.raises(ConfigError, match="max_speech_s"):
        VadSegmenter(max_speech_s=0.1, min_speech_ms=200)


def test_silero_detector_segments_the_same_way(user_speech: np.ndarray) -> None:
    signal = np.concatenate([_silence(0.8), user_speech, _silence(1.2)])
    onset, end = _onset_and_end(user_speech)
    detector = SileroDetector()
    events = _run(VadSegmenter(detector=detector), signal, flush=False)
    (started,) = _of(events, SpeechStarted)
    (ended,) = _of(events, SpeechEnded)
    assert started.t <= 0.8 + onset
    assert ended.speech_end == pytest.approx(0.8 + end, abs=0.15)
    detector.reset()
    assert detector.probability == 0.0
