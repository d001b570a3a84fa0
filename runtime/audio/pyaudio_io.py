"""Microphone and speaker over PyAudio callback streams, handing audio to and from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mio_agent.runtime.audio.base import FRAME_MS, AudioFrame, DeviceError, FrameSourceBase
from mio_agent.runtime.audio.convert import MicConverter, to_int16
from mio_agent.runtime.audio.devices import DeviceInfo, DeviceKind, choose_device, devices_of, open_pyaudio
from mio_agent.runtime.audio.jitter import BufferedSink

__all__ = ["MicrophoneSource", "SpeakerSink"]

_COMMON_RATES = (48000, 44100, 16000, 32000, 24000, 22050, 96000, 8000)
# an output block whose estimated play time is this far off the sample clock restarts the clock
_RESYNC_S = 0.05
_PA_CONTINUE = 0
_PA_COMPLETE = 1
_PA_INT16 = 8
_PA_INPUT_OVERFLOW = 2
_PA_OUTPUT_UNDERFLOW = 4


def _candidates(
    info: DeviceInfo, kind: DeviceKind, rate: int | None, channels: int | None
) -> list[tuple[int, int]]:
    rates = [rate] if rate else list(dict.fromkeys([info.default_rate, *_COMMON_RATES]))
    most = info.channels(kind)
    chans = [channels] if channels else list(dict.fromkeys([1, 2, most]))
    return [(r, c) for r in rates for c in chans if c <= most]


def _open_stream(
    pa: Any,
    info: DeviceInfo,
    kind: DeviceKind,
    rate: int | None,
    channels: int | None,
    block_ms: int,
    callback: Callable[..., tuple[bytes | None, int]],
    prepare: Callable[[int, int], None],
) -> Any:
    """Open a callback stream in the first (rate, channels) the device accepts."""
    errors = []
    for r, c in _candidates(info, kind, rate, channels):
        prepare(r, c)
        try:
            return pa.open(
                format=_PA_INT16,
                channels=c,
                rate=r,
                input=kind == "input",
                output=kind == "output",
                input_device_index=info.index if kind == "input" else None,
                output_device_index=info.index if kind == "output" else None,
                frames_per_buffer=max(1, r * block_ms // 1000),
                stream_callback=callback,
            )
        except (OSError, ValueError) as exc:
            errors.append(f"{r} Hz x {c}: {exc}")
    raise DeviceError(
        f"cannot open {kind} device {info.describe()} in any format we tried ({'; '.join(errors[:6])}); "
        "it may be busy (another program holds it) or need a rate/channel count given with the device options"
    )


class MicrophoneSource(FrameSourceBase):
    """A microphone as an `AudioSource`: 20 ms frames of 16 kHz mono int16, whatever the device's format.

    PortAudio calls back on its own thread with raw blocks; the callback only stamps the time and
    hands the bytes to the event loop (`call_soon_threadsafe`), never blocking: while more than
    `max_pending` blocks wait for the loop, new ones are dropped and counted. Conversion (down-mix,
    resampling, framing) runs on the loop; frames go into a queue of `queue_frames`, from which the
    oldest is dropped (and counted in `dropped`) when the reader falls behind.

    `device`: name, part of a name, or index (None: the system default); `rate` / `channels`: the
    device format to ask for (None: the device's default rate, mono if it can, else stereo).
    """

    def __init__(
        self,
        device: str | int | None = None,
        *,
        rate: int | None = None,
        channels: int | None = None,
        block_ms: int = FRAME_MS,
        queue_frames: int = 100,
        max_pending: int = 50,
        stall_timeout_s: float = 2.0,
    ) -> None:
        self._device = device
        self.stall_timeout_s = stall_timeout_s
        self._rate, self._channels = rate, channels
        self._block_ms = block_ms
        self._queue: asyncio.Queue[AudioFrame | None] = asyncio.Queue(maxsize=queue_frames)
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._dropped_queue = 0
        self._dropped_blocks = 0
        self.overflows = 0
        """Blocks the device itself reported as overflowed (samples lost before they reached us)."""
        self._stack = contextlib.ExitStack()
        self._stream: Any = None
        self._converter: MicConverter | None = None
        self._latency = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.device: DeviceInfo | None = None
        self.device_rate = 0
        self.device_channels = 0

    @property
    def dropped(self) -> int:
        skipped = self._converter.skipped if self._converter else 0
        return self._dropped_queue + skipped

    @property
    def dropped_blocks(self) -> int:
        """Blocks refused in the callback because the event loop was not keeping up."""
        return self._dropped_blocks

    async def start(self) -> None:
        if self._stream is not None:
            return
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        pa = self._stack.enter_context(open_pyaudio())
        try:
            self.device = choose_device(devices_of(pa), self._device, "input")

            def prepare(rate: int, channels: int) -> None:
                self.device_rate, self.device_channels = rate, channels
                self._converter = MicConverter(rate, channels)

            self._stream = _open_stream(
                pa, self.device, "input", self._rate, self._channels, self._block_ms, self._callback, prepare
            )
            self._latency = float(self._stream.get_input_latency())
        except BaseException:
            self._stack.close()
            raise

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float], status: int
    ) -> tuple[None, int]:
        # capture time of the block's first sample: now, less the block and the input latency
        t = time.monotonic() - frame_count / max(self.device_rate, 1) - self._latency
        if status & _PA_INPUT_OVERFLOW:
            self.overflows += 1
        if in_data is None or self._loop is None or self._closed:
            return None, _PA_CONTINUE
        with self._lock:
            if self._pending >= self._max_pending:
                self._dropped_blocks += 1
                return None, _PA_CONTINUE
            self._pending += 1
        try:
            self._loop.call_soon_threadsafe(self._on_block, in_data, t)
        except RuntimeError:  # the loop has closed: nobody will read again
            return None, _PA_COMPLETE
        return None, _PA_CONTINUE

    def _on_block(self, data: bytes, t: float) -> None:
        with self._lock:
            self._pending -= 1
        if self._closed or self._converter is None:
            return
        for frame in self._converter.push(data, t):
            if self._queue.full():
                self._queue.get_nowait()
                self._dropped_queue += 1
            self._queue.put_nowait(frame)

    async def read(self) -> AudioFrame | None:
        """The next frame; None once closed. Raises DeviceError if the device stops delivering
        audio for `stall_timeout_s` (unplugged, taken by another program, a dead driver)."""
        if self._closed and self._queue.empty():
            return None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation that
            # arrives as a frame does, and a reader cancelled at shutdown would then read on forever
            async with asyncio.timeout(self.stall_timeout_s):
                frame = await self._queue.get()
        except TimeoutError:
            name = self.device.describe() if self.device else "the microphone"
            raise DeviceError(
                f"{name} delivered no audio for {self.stall_timeout_s:g} s; was it unplugged or taken by "
                "another program? `mio-agent devices` lists what is there now"
            ) from None
        if frame is None:
            # wake the next reader too
            self._queue.put_nowait(None)
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_stop, stream)
        self._stack.close()
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


def _stop(stream: Any) -> None:
    with contextlib.suppress(OSError):
        stream.stop_stream()
    with contextlib.suppress(OSError):
        stream.close()


class SpeakerSink(BufferedSink):
    """A speaker as an `AudioSink`: a jitter buffer played by a PyAudio callback stream.

    The stream runs from `start` to `close` and asks for `block_ms` at a time; the callback takes
    exactly that from our buffer (silence when empty), so no audio waits anywhere else and `clear`
    silences the speaker within one block plus the device's own output latency. What each
    callback returns is recorded, with its estimated play time, in `reference` for the echo
    canceller.

    `device`: name, part of a name, or index (None: the system default); `rate` / `channels`: the
    device format to ask for (None: the device's default rate, mono if it can, else stereo);
    `prebuffer_ms`: how much of a reply to hold before starting it; `max_buffer_s`: `play` waits
    while more than this is queued.
    """

    def __init__(
        self,
        device: str | int | None = None,
        *,
        rate: int | None = None,
        channels: int | None = None,
        block_ms: int = 10,
        prebuffer_ms: float = 60.0,
        max_buffer_s: float = 120.0,
    ) -> None:
        self._device = device
        self._want_rate, self._want_channels = rate, channels
        self._block_ms = block_ms
        super().__init__(rate or 48000, prebuffer_ms=prebuffer_ms, max_buffer_s=max_buffer_s)
        self._stack = contextlib.ExitStack()
        self._stream: Any = None
        self._latency = 0.0
        self._clock_t: float | None = None
        self._clock_n = 0
        self.device: DeviceInfo | None = None
        self.channels = 1
        self.device_underflows = 0
        """Blocks the device reported it ran short of (an overloaded machine, not an empty buffer)."""

    async def start(self) -> None:
        if self._stream is not None:
            return
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        pa = self._stack.enter_context(open_pyaudio())
        try:
            self.device = choose_device(devices_of(pa), self._device, "output")

            def prepare(rate: int, channels: int) -> None:
                # the buffer must hold audio at the rate the stream will actually run at
                self._set_rate(rate)
                self.channels = channels

            self._stream = _open_stream(
                pa,
                self.device,
                "output",
                self._want_rate,
                self._want_channels,
                self._block_ms,
                self._callback,
                prepare,
            )
            self._latency = float(self._stream.get_output_latency())
        except BaseException:
            self._stack.close()
            raise

    async def play(self, audio: np.ndarray | bytes, sample_rate: int, *, turn: int) -> None:
        if self._stream is None:
            # the buffer runs at the device's rate, known only once it is open
            await self.start()
        await super().play(audio, sample_rate, turn=turn)

    @property
    def output_latency_s(self) -> float:
        """What PortAudio reports as the delay from a callback's buffer to the speaker, in seconds."""
        return self._latency

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float], status: int
    ) -> tuple[bytes, int]:
        if status & _PA_OUTPUT_UNDERFLOW:
            self.device_underflows += 1
        t = time.monotonic() + self._latency
        if self._clock_t is None or abs(self._clock_t + self._clock_n / self._rate - t) > _RESYNC_S:
            self._clock_t, self._clock_n = t, 0
        samples = self._buffer.pull(frame_count, self._clock_t + self._clock_n / self._rate)
        self._clock_n += frame_count
        pcm = to_int16(samples)
        if self.channels > 1:
            pcm = np.repeat(pcm, self.channels)
        return pcm.tobytes(), _PA_CONTINUE

    def playing_out(self) -> bool:
        """False once the stream stopped (e.g. PortAudio gave up on the device after an error): then
        `drain` returns at once instead of waiting for audio that will never be taken."""
        stream = self._stream
        if stream is None:
            return True  # opened on the first `play`
        try:
            return bool(stream.is_active())
        except OSError:
            return False

    async def close(self) -> None:
        """Stop at once (call `drain` first to let queued audio finish)."""
        self._buffer.clear()
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_stop, stream)
        self._stack.close()

    async def __aenter__(self) -> SpeakerSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
