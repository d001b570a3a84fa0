"""File-backed devices: a WAV file as the microphone, a WAV file as the speaker (real-time or fast)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from pathlib import Path

import numpy as np

from mio_agent.codecs.speech.audio import load_audio, to_model_rate
from mio_agent.runtime.audio.base import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioFrame,
    DeviceError,
    FrameSourceBase,
)
from mio_agent.runtime.audio.convert import to_int16
from mio_agent.runtime.audio.jitter import BufferedSink

__all__ = ["FileMicSource", "FileSpeakerSink", "frames_of"]

# a paced clock this far behind (a stalled loop) restarts instead of bursting to catch up
_MAX_LAG_S = 0.2


def frames_of(audio: np.ndarray, *, t0: float = 0.0, first_index: int = 0) -> list[AudioFrame]:
    """Cut 16 kHz mono audio (float32 or int16) into frames, the last one padded with silence."""
    pcm = to_int16(audio) if audio.dtype.kind == "f" else audio.astype(np.int16)
    pad = (-pcm.size) % FRAME_SAMPLES
    pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    return [
        AudioFrame(
            pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES],
            t0 + (first_index + i) * FRAME_MS / 1000,
            first_index + i,
        )
        for i in range(pcm.size // FRAME_SAMPLES)
    ]


class FileMicSource(FrameSourceBase):
    """A WAV file (any rate, any channel count) as an `AudioSource`.

    The file is down-mixed and resampled to 16 kHz mono once, at `start`. Real-time mode delivers
    frame i at `start + (i + 1) * 20 ms`, as a microphone would once the frame was captured; with
    `fast=True` frames come as fast as they are read, stamped with the same virtual times. `pad_s`
    seconds of silence follow the file (so the end of the last utterance is heard as such).
    """

    def __init__(self, path: str | Path, *, fast: bool = False, pad_s: float = 0.0) -> None:
        self.path = Path(path)
        self.fast = fast
        self.pad_s = pad_s
        self.file_rate = 0
        self.file_channels = 0
        self.duration_s = 0.0
        self.peak_dbfs = -120.0
        self._frames: list[AudioFrame] = []
        self._next = 0
        self._t0: float | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        return 0

    async def start(self) -> None:
        if self._t0 is not None:
            return
        if not self.path.is_file():
            raise DeviceError(f"microphone file {self.path} does not exist; give a WAV file to --mic-file")
        audio, rate = await asyncio.to_thread(load_audio, self.path)
        self.file_rate, self.file_channels = rate, audio.shape[0]
        mono = to_model_rate(audio, rate, SAMPLE_RATE, f"microphone file {self.path}")
        self.duration_s = mono.size / SAMPLE_RATE
        peak = float(np.abs(mono).max())
        self.peak_dbfs = 20.0 * float(np.log10(peak)) if peak > 1e-6 else -120.0
        mono = np.concatenate([mono, np.zeros(int(self.pad_s * SAMPLE_RATE), dtype=np.float32)])
        self._t0 = time.monotonic()
        self._frames = frames_of(mono, t0=self._t0)

    async def read(self) -> AudioFrame | None:
        if self._t0 is None:
            await self.start()
        if self._closed or self._next >= len(self._frames):
            return None
        frame = self._frames[self._next]
        self._next += 1
        if self.fast:
            # let the consumers of the previous frame run before the next arrives
            await asyncio.sleep(0)
        else:
            delay = frame.t + FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return frame

    async def close(self) -> None:
        self._closed = True


class FileSpeakerSink(BufferedSink):
    """A WAV file (16-bit mono at `rate` Hz) as an `AudioSink`.

    Real-time mode plays like a device: a clock takes `block_ms` from the jitter buffer every
    `block_ms` and writes it, silence included, so the file is the timeline from `start` to
    `close` and an interruption cuts the reply where a listener would have heard it stop. With
    `fast=True` audio is written the moment it is queued (no silence, no waiting), and play times
    follow a virtual clock that advances by what was written.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        rate: int = SAMPLE_RATE,
        fast: bool = False,
        block_ms: int = 10,
        prebuffer_ms: float = 60.0,
        max_buffer_s: float = 120.0,
    ) -> None:
        super().__init__(rate, prebuffer_ms=0.0 if fast else prebuffer_ms, max_buffer_s=max_buffer_s)
        self.path = Path(path)
        self.fast = fast
        self._block = max(1, rate * block_ms // 1000)
        self._wav: wave.Wave_write | None = None
        self._task: asyncio.Task[None] | None = None
        self._clock = 0.0
        self.written = 0
        """Samples written to the file so far."""

    async def start(self) -> None:
        if self._wav is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise DeviceError(f"cannot write speaker file {self.path}: {exc.strerror or exc}") from None
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self._rate)
        self._wav = wav
        self._clock = time.monotonic()
        if not self.fast:
            self._task = asyncio.create_task(self._run(), name=f"file-speaker:{self.path.name}")

    def _write(self, samples: np.ndarray) -> None:
        if self._wav is not None and samples.size:
            self._wav.writeframes(to_int16(samples).astype("<i2").tobytes())
            self.written += samples.size

    async def _run(self) -> None:
        step = self._block / self._rate
        while True:
            self._write(self._buffer.pull(self._block, self._clock))
            self._clock += step
            delay = self._clock - time.monotonic()
            if delay < -_MAX_LAG_S:
                self._clock = time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    def _pump(self) -> None:
        n = self._buffer.buffered
        if self.fast and n:
            self._write(self._buffer.pull(n, self._clock))
            self._clock += n / self._rate

    async def play(self, audio: np.ndarray | bytes, sample_rate: int, *, turn: int) -> None:
        if self._wav is None:
            await self.start()
        await super().play(audio, sample_rate, turn=turn)
        self._pump()

    def end_turn(self, turn: int) -> None:
        super().end_turn(turn)
        self._pump()

    async def close(self) -> None:
        """Stop the clock and finish the file (queued audio not yet played is not written)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._buffer.clear()
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()

    async def __aenter__(self) -> FileSpeakerSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
