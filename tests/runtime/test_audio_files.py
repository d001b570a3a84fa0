"""File-backed microphone and speaker: conversion, real-time pacing, fast mode, clear, errors."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from mio_agent.codecs.speech import load_audio, write_wav
from mio_agent.runtime.audio import DeviceError, FileMicSource, FileSpeakerSink


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.4) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


async def test_file_mic_converts_a_44k_stereo_file_and_runs_fast(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    left = _tone(700, 44100, 1.0)
    write_wav(path, np.stack([left, left]), 44100)
    async with FileMicSource(path, fast=True, pad_s=0.2) as mic:
        started = time.monotonic()
        frames = [frame async for frame in mic]
        elapsed = time.monotonic() - started
    assert (mic.file_rate, mic.file_channels) == (44100, 2)
    assert mic.duration_s == pytest.approx(1.0, abs=0.001)
    assert len(frames) == 60  # 1.0 s of file plus 0.2 s of silence, 20 ms each
    assert elapsed < 0.5
    assert np.allclose(np.diff([f.t for f in frames]), 0.02)
    audio = np.concatenate([f.samples for f in frames[:50]]).astype(np.float64)
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / audio.size
    assert peak == pytest.approx(700, abs=3)
    assert not np.concatenate([f.samples for f in frames[51:]]).any()


async def test_file_mic_is_paced_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    write_wav(path, _tone(300, 16000, 0.4), 16000)
    mic = FileMicSource(path)
    await mic.start()
    frames = [frame async for frame in mic]
    now = time.monotonic()
    assert len(frames) == 20
    # the last frame is delivered when it would have been captured, not before
    assert now >= frames[-1].t + 0.02 - 0.005
    assert 0.4 - 0.005 <= now - frames[0].t < 1.5


async def test_file_mic_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        await FileMicSource(tmp_path / "nope.wav").start()


async def test_file_speaker_fast_writes_exactly_what_was_played(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    async with FileSpeakerSink(out, fast=True) as speaker:
        await speaker.play(_tone(500, 24000, 0.5), 24000, turn=1)
        speaker.end_turn(1)
        await speaker.play((_tone(200, 16000, 0.25) * 32767).astype(np.int16), 16000, turn=2)
        speaker.end_turn(2)
        assert await speaker.drain(timeout=0.1)
        assert speaker.played_ms(1) == pytest.approx(500, abs=1)
        assert speaker.played_ms(2) == pytest.approx(250, abs=1)
    audio, rate = load_audio(out)
    assert rate == 16000 and audio.shape == (1, 12000)
    first = audio[0, :8000].astype(np.float64)
    assert np.argmax(np.abs(np.fft.rfft(first))) * 16000 / first.size == pytest.approx(500, abs=3)


async def test_file_speaker_real_time_keeps_the_timeline_and_clear_cuts_it(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    speaker = FileSpeakerSink(out)
    await speaker.start()
    started = time.monotonic()
    await asyncio.sleep(0.1)  # silence before the reply is part of the timeline
    queued = time.monotonic()
    await speaker.play(_tone(400, 16000, 2.0), 16000, turn=1)
    await asyncio.sleep(0.3)
    dropped = speaker.clear()
    played = speaker.played_ms(1)
    cleared = time.monotonic()
    await asyncio.sleep(0.1)
    await speaker.close()
    elapsed = time.monotonic() - started
    with wave.open(str(out)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    # the file is the wall-clock timeline, silence included
    assert pcm.size / 16000 == pytest.approx(elapsed, abs=0.05)
    loud = np.convolve(np.abs(pcm.astype(np.float64)), np.ones(32) / 32, mode="same") > 1000
    heard_ms = loud.sum() / 16
    assert 150 < played <= (cleared - queued) * 1000 + 20
    assert np.argmax(loud) / 16000 >= 0.09  # the reply starts after the leading silence
    assert heard_ms == pytest.approx(played, abs=20)
    assert dropped == pytest.approx(2000 - played, abs=20)
    # nothing of the reply after the cut
    assert not loud[np.argmax(loud) + int(played * 16) + 32 :].any()
