"""File-backed microphone and speaker: conversion, real-time pacing, fast mode, clear, errors.

Pacing is checked on a virtual clock that stands in for `time.monotonic` and `asyncio.sleep` in
runtime/audio/files.py: time moves only when the code under test sleeps (or the test advances it),
so what is delivered when is exact, however loaded the machine running the tests is.
"""

from __future__ import annotations

import asyncio
import types
import wave
from pathlib import Path

import numpy as np
import pytest

import mio_agent.runtime.audio.files as files_module
from mio_agent.codecs.speech import load_audio, write_wav
from mio_agent.runtime.audio import DeviceError, FileMicSource, FileSpeakerSink
from mio_agent.runtime.audio.base import AudioFrame

_real_sleep = asyncio.sleep
# a generous bound that only turns a hang into a failure; nothing here is timed against it
HANG_S = 60.0


class VirtualClock:
    """`monotonic()` and `sleep()` for the module under test.

    With `jump=True` a sleep moves the clock forward by its delay at once (one task: it is the only
    one waiting). Otherwise sleepers wait until the test moves the clock with `advance()`, which
    wakes them in order of their deadlines and lets each run until it sleeps again.
    """

    def __init__(self, *, jump: bool) -> None:
        self.now = 1000.0
        self.jump = jump
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        if self.jump or delay <= 0:
            self.now += max(0.0, delay)
            await _real_sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, wake))
        await wake

    async def _settle(self) -> None:
        # a woken task runs to its next sleep in one step of the loop; a few more are a margin
        for _ in range(5):
            await _real_sleep(0)

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await self._settle()
        while True:
            due = [t for t, _ in self._sleepers if t <= end + 1e-9]
            if not due:
                break
            self.now = max(self.now, min(due))
            woken = [(t, f) for t, f in self._sleepers if t <= self.now + 1e-9]
            self._sleepers = [s for s in self._sleepers if s not in woken]
            for _, wake in woken:
                if not wake.done():
                    wake.set_result(None)
            await self._settle()
        self.now = max(self.now, end)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Only runtime/audio/files.py sees this clock; the event loop keeps the real one."""
        fake_asyncio = types.SimpleNamespace(**vars(asyncio))
        fake_asyncio.sleep = self.sleep
        monkeypatch.setattr(files_module, "asyncio", fake_asyncio)
        monkeypatch.setattr(files_module, "time", types.SimpleNamespace(monotonic=self.monotonic))


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.4) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


async def test_file_mic_converts_a_44k_stereo_file_and_runs_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.wav"
    left = _tone(700, 44100, 1.0)
    write_wav(path, np.stack([left, left]), 44100)
    clock = VirtualClock(jump=True)
    clock.install(monkeypatch)
    started = clock.now
    async with FileMicSource(path, fast=True, pad_s=0.2) as mic:

        async def read_all() -> list[AudioFrame]:
            return [frame async for frame in mic]

        frames = await asyncio.wait_for(read_all(), HANG_S)
    assert (mic.file_rate, mic.file_channels) == (44100, 2)
    assert mic.duration_s == pytest.approx(1.0, abs=0.001)
    assert len(frames) == 60  # 1.0 s of file plus 0.2 s of silence, 20 ms each
    # fast: it only yields to other tasks between frames and never waits for the frames' times
    assert clock.slept == [0] * 60
    assert clock.now == started
    assert frames[0].t == started
    assert np.allclose(np.diff([f.t for f in frames]), 0.02)
    audio = np.concatenate([f.samples for f in frames[:50]]).astype(np.float64)
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / audio.size
    assert peak == pytest.approx(700, abs=3)
    assert not np.concatenate([f.samples for f in frames[51:]]).any()


async def test_file_mic_is_paced_in_real_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "in.wav"
    write_wav(path, _tone(300, 16000, 0.4), 16000)
    clock = VirtualClock(jump=True)
    clock.install(monkeypatch)
    started = clock.now
    mic = FileMicSource(path)
    await mic.start()

    async def read_all() -> list[tuple[AudioFrame, float]]:
        return [(frame, clock.now) async for frame in mic]

    delivered = await asyncio.wait_for(read_all(), HANG_S)
    assert len(delivered) == 20
    # each frame is delivered when its last sample would have been captured, not before, and
    # stamped with the time its first one was
    for i, (frame, at) in enumerate(delivered):
        assert frame.index == i
        assert frame.t == pytest.approx(started + 0.02 * i)
        assert at == pytest.approx(frame.t + 0.02)
    assert clock.now - started == pytest.approx(0.4)


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
        assert await speaker.drain(timeout=HANG_S)
        assert speaker.played_ms(1) == pytest.approx(500, abs=1)
        assert speaker.played_ms(2) == pytest.approx(250, abs=1)
    audio, rate = load_audio(out)
    assert rate == 16000 and audio.shape == (1, 12000)
    first = audio[0, :8000].astype(np.float64)
    assert np.argmax(np.abs(np.fft.rfft(first))) * 16000 / first.size == pytest.approx(500, abs=3)


async def test_file_speaker_real_time_keeps_the_timeline_and_clear_cuts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.wav"
    clock = VirtualClock(jump=False)
    clock.install(monkeypatch)
    speaker = FileSpeakerSink(out)  # 10 ms blocks
    await speaker.start()
    started = clock.now
    await clock.advance(0.1)  # silence before the reply is part of the timeline
    await speaker.play(_tone(400, 16000, 2.0), 16000, turn=1)
    await clock.advance(0.3)
    dropped = speaker.clear()
    played = speaker.played_ms(1)
    await clock.advance(0.1)
    await asyncio.wait_for(speaker.close(), HANG_S)
    elapsed = clock.now - started
    with wave.open(str(out)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    # the file is the timeline, silence included: a block per 10 ms (the one at each end may fall
    # either side of the boundary)
    assert pcm.size / 16000 == pytest.approx(elapsed, abs=0.0101)
    loud = np.convolve(np.abs(pcm.astype(np.float64)), np.ones(32) / 32, mode="same") > 1000
    heard_ms = loud.sum() / 16
    # handed over at the device's pace: the 300 ms it had between play and clear, to a block
    assert played == pytest.approx(300, abs=10.1)
    assert np.argmax(loud) / 16000 >= 0.09  # the reply starts after the leading silence
    assert heard_ms == pytest.approx(played, abs=20)
    assert dropped == pytest.approx(2000 - played, abs=20)
    # nothing of the reply after the cut
    assert not loud[np.argmax(loud) + int(played * 16) + 32 :].any()
