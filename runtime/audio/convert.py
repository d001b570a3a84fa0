"""Device audio to 20 ms frames of 16 kHz mono int16: down-mix, band-limited resampling, framing, timestamps."""

from __future__ import annotations

from typing import Any

import numpy as np

from mio_agent.codecs.speech import StreamingResampler
from mio_agent.exceptions import CodecError
from mio_agent.runtime.audio.base import FRAME_SAMPLES, SAMPLE_RATE, AudioFrame

__all__ = ["MicConverter", "to_int16"]

# a block arriving this far off the running sample clock means blocks were lost (or the device
# stalled): the clock restarts at the block's time and the frame index skips the gap
_RESYNC_S = 0.1
_FORMATS: dict[str, tuple[np.dtype[Any], float]] = {
    "int16": (np.dtype("<i2"), 32768.0),
    "float32": (np.dtype("<f4"), 1.0),
}


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16 (rounded, clipped)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


class MicConverter:
    """Turns interleaved PCM blocks as a device delivers them into `AudioFrame`s.

    Channels are averaged (a mono mix), the rate is converted with the project's windowed-sinc
    `StreamingResampler` (the filter the speech codec's reference uses; its look-ahead is a
    fraction of a millisecond), and the stream is cut into 20 ms frames. Each frame's `t` follows
    the sample count from the first block's time, so frames are evenly spaced however unevenly
    the blocks arrived; a block far off that clock (lost blocks) restarts it and skips indices.
    """

    def __init__(self, rate: int, channels: int, *, sample_format: str = "int16") -> None:
        if rate <= 0 or channels <= 0:
            raise CodecError(
                f"device format must have a positive rate and channel count, got {rate} Hz x {channels}"
            )
        if sample_format not in _FORMATS:
            raise CodecError(f"sample format must be one of {sorted(_FORMATS)}, got {sample_format!r}")
        self.rate = rate
        self.channels = channels
        self._dtype, self._scale = _FORMATS[sample_format]
        self._resampler = StreamingResampler(rate, SAMPLE_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._seg_t: float | None = None
        self._seg_in = 0  # device samples (per channel) in this segment
        self._seg_out = 0  # 16 kHz samples framed in this segment (emitted or pending)
        self._index = 0
        self.skipped = 0
        """Frames skipped because blocks went missing."""

    def push(self, block: bytes | np.ndarray, t: float) -> list[AudioFrame]:
        """Convert one device block whose first sample was captured at monotonic time `t`."""
        raw = np.frombuffer(block, dtype=self._dtype) if isinstance(block, bytes | bytearray) else block
        if raw.size % self.channels:
            raise CodecError(
                f"a block of {raw.size} samples does not split into {self.channels} interleaved channels"
            )
        mono = raw.reshape(-1, self.channels).mean(axis=1, dtype=np.float32) / np.float32(self._scale)
        if self._seg_t is None:
            self._seg_t = t
        else:
            expected = self._seg_t + self._seg_in / self.rate
            if t - expected > _RESYNC_S:
                gap = round((t - expected) * SAMPLE_RATE / FRAME_SAMPLES)
                self._index += gap
                self.skipped += gap
                # the partial frame before the gap is discarded with it
                self._resampler = StreamingResampler(self.rate, SAMPLE_RATE)
                self._pending = np.zeros(0, dtype=np.float32)
                self._seg_t, self._seg_in, self._seg_out = t, 0, 0
        self._seg_in += mono.size
        self._pending = np.concatenate([self._pending, self._resampler.push(mono)])
        frames = []
        while self._pending.size >= FRAME_SAMPLES:
            chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            frames.append(AudioFrame(to_int16(chunk), self._seg_t + self._seg_out / SAMPLE_RATE, self._index))
            self._seg_out += FRAME_SAMPLES
            self._index += 1
        return frames
