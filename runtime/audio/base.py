"""What every audio source and sink shares: the 20 ms frame, the source/sink protocols and the device error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import numpy as np

from mio_agent.exceptions import DeviceError
from mio_agent.runtime.audio.format import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    from mio_agent.runtime.audio.reference import PlaybackReference

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioFrame",
    "AudioSink",
    "AudioSource",
    "DeviceError",
    "FrameSourceBase",
]


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of 16 kHz mono int16 audio.

    `t` is the `time.monotonic()` at which the first sample reached the microphone (estimated from
    the device's reported latency), so frames can be lined up with what the speaker played then.
    `index` counts frames from the start of the source; a gap in it means frames were dropped.
    """

    samples: np.ndarray = field(repr=False)
    t: float
    index: int

    @property
    def pcm(self) -> bytes:
        """Little-endian int16 bytes, the layout webrtcvad and `AudioIn` events take."""
        return self.samples.astype("<i2", copy=False).tobytes()

    def level_dbfs(self) -> float:
        """RMS level in dB below full scale (-120 for digital silence)."""
        x = self.samples.astype(np.float64) / 32768.0
        rms = float(np.sqrt(np.mean(x * x)))
        return 20.0 * np.log10(rms) if rms > 1e-6 else -120.0


@runtime_checkable
class AudioSource(Protocol):
    """A microphone or anything that acts like one: 20 ms frames of 16 kHz mono int16, in order.

    Use as `async with source: async for frame in source: ...`; iteration ends when the source
    is closed or (for a file) runs out.
    """

    @property
    def dropped(self) -> int:
        """Frames lost because the consumer fell behind (or the device overflowed)."""
        ...

    async def start(self) -> None: ...

    async def read(self) -> AudioFrame | None:
        """The next frame, or None once the source has ended or was closed."""
        ...

    async def close(self) -> None: ...

    def __aiter__(self) -> AudioSource: ...

    async def __anext__(self) -> AudioFrame: ...

    async def __aenter__(self) -> AudioSource: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    """A speaker or anything that acts like one: plays replies through a jitter buffer.

    `play` queues decoded audio of a reply (`turn`); `end_turn` says no more is coming for it;
    `clear` drops everything not yet played at once; `played_ms(turn)` says how much of a reply
    actually went out, the amount to keep in the model's context after an interruption.
    """

    @property
    def rate(self) -> int:
        """The device's sample rate in Hz."""
        ...

    @property
    def reference(self) -> PlaybackReference:
        """What was played, at 16 kHz mono with its play times: the echo canceller's reference."""
        ...

    @property
    def buffered_ms(self) -> float: ...

    @property
    def underruns(self) -> int: ...

    async def start(self) -> None: ...

    async def play(self, audio: np.ndarray | bytes, sample_rate: int, *, turn: int) -> None: ...

    def end_turn(self, turn: int) -> None: ...

    def clear(self) -> float:
        """Drop all queued audio now; returns how many milliseconds were dropped."""
        ...

    def played_ms(self, turn: int) -> float: ...

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been played; False if `timeout` (seconds) ran out first."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> AudioSink: ...

    async def __aexit__(self, *exc: object) -> None: ...


class FrameSourceBase:
    """`async for` and `async with` for a source that defines start(), read() and close()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def read(self) -> AudioFrame | None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AudioFrame:
        frame = await self.read()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
