"""A simulated room for tests and benchmarks: the speaker's sound comes back into the microphone."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

import numpy as np

from mio_agent.codecs.speech import StreamingResampler
from mio_agent.codecs.speech.audio import load_audio, to_model_rate
from mio_agent.runtime.audio.base import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, AudioFrame, FrameSourceBase
from mio_agent.runtime.audio.convert import to_int16
from mio_agent.runtime.audio.jitter import BufferedSink

__all__ = ["EchoPath", "EchoRoom", "room_impulse_response"]


def room_impulse_response(
    *, delay_ms: float = 60.0, gain_db: float = -10.0, rt60_s: float = 0.25, seed: int = 0
) -> np.ndarray:
    """A loudspeaker-to-microphone impulse response at 16 kHz.

    `delay_ms` of nothing (device buffers plus the flight time), then a direct path and a diffuse
    tail decaying by 60 dB in `rt60_s`, band-limited as a small loudspeaker is (no deep bass, soft
    top). Scaled so white noise through it loses `-gain_db` dB.
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(rt60_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / max(rt60_s, 1e-3)) * 0.3
    tail[0] = 1.0
    # first-difference high-pass and a 4-tap smoothing low-pass: a speaker's band, roughly
    band = np.convolve(np.array([1.0, -0.9]), np.ones(4) / 4.0)
    h = np.convolve(tail, band)
    h *= 10 ** (gain_db / 20) / np.sqrt(np.sum(h * h))
    return np.concatenate([np.zeros(int(delay_ms * SAMPLE_RATE / 1000)), h]).astype(np.float32)


class EchoPath:
    """Streams 16 kHz audio through an impulse response, 20 ms at a time (FFT overlap-save)."""

    def __init__(self, impulse_response: np.ndarray) -> None:
        self.impulse_response = np.asarray(impulse_response, dtype=np.float32)
        size = 1
        while size < self.impulse_response.size + FRAME_SAMPLES:
            size *= 2
        self._size = size
        self._spectrum = np.fft.rfft(self.impulse_response, size)
        self._history = np.zeros(size, dtype=np.float32)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """The echo during this frame of played audio (float32, 320 samples)."""
        self._history = np.concatenate([self._history[frame.size :], frame.astype(np.float32)])
        return np.fft.irfft(np.fft.rfft(self._history) * self._spectrum, self._size)[-frame.size :].astype(
            np.float32
        )


class _RoomSpeaker(BufferedSink):
    """The room's loudspeaker: its buffer is drained by the room's microphone clock, not its own."""

    def __init__(self, room: EchoRoom, rate: int, prebuffer_ms: float) -> None:
        super().__init__(rate, prebuffer_ms=prebuffer_ms)
        self._room = room
        self._resampler = StreamingResampler(rate, SAMPLE_RATE) if rate != SAMPLE_RATE else None
        self._carry = np.zeros(0, dtype=np.float32)
        self._in_frame = 0

    def next_frame(self, t: float) -> np.ndarray:
        """What the speaker hands to the device for the 20 ms from `t`, at 16 kHz."""
        n = (
            self._rate * (self._in_frame + 1) * FRAME_MS // 1000
            - self._rate * self._in_frame * FRAME_MS // 1000
        )
        self._in_frame += 1
        played = self._buffer.pull(n, t)
        if self._resampler is not None:
            played = np.concatenate([self._carry, self._resampler.push(played)])
            played, self._carry = played[:FRAME_SAMPLES], played[FRAME_SAMPLES:]
        return np.pad(played, (0, FRAME_SAMPLES - played.size))

    async def start(self) -> None:
        await self._room.start()

    async def close(self) -> None:
        self._buffer.clear()

    async def __aenter__(self) -> _RoomSpeaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EchoRoom:
    """A microphone that hears a user (a WAV file, an array, or nobody) and the speaker through an echo path.

    `room.mic` is an `AudioSource` and `room.speaker` an `AudioSink`, on one clock: each mic frame
    takes the next 20 ms from the speaker's buffer, passes it through `EchoPath`, and adds it and
    `noise_dbfs` of white noise to the user's voice. Real-time mode paces frames like a device;
    with `fast=True` time advances only as fast as the mic is read, so the speaker plays exactly
    as much as the mic has heard (a decoder slower than that is heard as gaps). The mic ends
    after the voice plus `pad_s` seconds of silence.
    """

    def __init__(
        self,
        voice: str | Path | np.ndarray | None = None,
        *,
        fast: bool = False,
        pad_s: float = 0.0,
        speaker_rate: int = SAMPLE_RATE,
        prebuffer_ms: float = 60.0,
        delay_ms: float = 60.0,
        gain_db: float = -10.0,
        rt60_s: float = 0.25,
        noise_dbfs: float = -70.0,
        seed: int = 0,
    ) -> None:
        self._voice_arg = voice
        self.fast = fast
        self.pad_s = pad_s
        self.path = EchoPath(
            room_impulse_response(delay_ms=delay_ms, gain_db=gain_db, rt60_s=rt60_s, seed=seed)
        )
        self._noise = 10 ** (noise_dbfs / 20)
        self._rng = np.random.default_rng(seed + 1)
        self.speaker = _RoomSpeaker(self, speaker_rate, prebuffer_ms)
        self.mic = _RoomMic(self)
        self._voice = np.zeros(0, dtype=np.float32)
        self._t0: float | None = None
        self._index = 0
        self._ahead = deque([np.zeros(FRAME_SAMPLES, dtype=np.float32)])

    async def start(self) -> None:
        if self._t0 is not None:
            return
        voice = self._voice_arg
        if isinstance(voice, str | Path):
            audio, rate = await asyncio.to_thread(load_audio, voice)
            voice = to_model_rate(audio, rate, SAMPLE_RATE, f"voice file {voice}")
        elif voice is None:
            voice = np.zeros(0, dtype=np.float32)
        voice = np.asarray(voice, dtype=np.float32)
        if voice.dtype.kind != "f":
            voice = voice.astype(np.float32) / 32768.0
        total = voice.size + int(self.pad_s * SAMPLE_RATE)
        total += (-total) % FRAME_SAMPLES
        self._voice = np.pad(voice, (0, total - voice.size))
        self._t0 = time.monotonic()

    @property
    def frames(self) -> int:
        return self._voice.size // FRAME_SAMPLES

    async def next_frame(self) -> AudioFrame | None:
        if self._t0 is None:
            await self.start()
        assert self._t0 is not None
        if self._index >= self.frames:
            return None
        i = self._index
        self._index += 1
        t = self._t0 + i * FRAME_MS / 1000
        if self.fast:
            await asyncio.sleep(0)
        else:
            delay = t + FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        # the speaker is handed audio one frame before it plays, as a device's buffer does
        self._ahead.append(self.speaker.next_frame(t + FRAME_MS / 1000))
        echo = self.path.push(self._ahead.popleft())
        voice = self._voice[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        noise = self._rng.standard_normal(FRAME_SAMPLES).astype(np.float32) * np.float32(self._noise)
        return AudioFrame(to_int16(voice + echo + noise), t, i)


class _RoomMic(FrameSourceBase):
    """The room's microphone (an `AudioSource`)."""

    def __init__(self, room: EchoRoom) -> None:
        self._room = room
        self._closed = False

    @property
    def dropped(self) -> int:
        return 0

    async def start(self) -> None:
        await self._room.start()

    async def read(self) -> AudioFrame | None:
        return None if self._closed else await self._room.next_frame()

    async def close(self) -> None:
        self._closed = True
