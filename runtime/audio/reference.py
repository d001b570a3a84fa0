"""What a sink played, at 16 kHz mono and addressable by play time: the echo canceller's reference signal."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from mio_agent.codecs.speech import StreamingResampler
from mio_agent.runtime.audio.format import SAMPLE_RATE

__all__ = ["PlaybackReference"]

# a chunk whose play time is off the running sample clock by more than this starts a new segment
# (an xrun, a paused stream); below it, jitter in callback timing is ignored
_RESYNC_S = 0.05
# chunks waiting to be resampled; the device thread appends, a reader drains; bounded so a sink with
# no reader (no echo canceller) costs no memory
_MAX_PENDING = 512


class PlaybackReference:
    """A ring of the last `seconds` of played audio, resampled to 16 kHz mono.

    The device side calls `push(samples, t)` with the audio it hands to the hardware and the
    monotonic time its first sample is expected to leave the speaker; this is cheap (an append),
    so it can run in an audio callback. Readers call `read(t, n)` for the `n` samples that were
    playing from time `t` on (zeros where nothing was played); resampling happens there, in the
    reader's thread. Sample positions follow the device's sample count, not callback times, so
    jitter in when callbacks run does not smear the signal.
    """

    def __init__(self, device_rate: int, *, seconds: float = 4.0) -> None:
        self._cap = int(seconds * SAMPLE_RATE)
        self._lock = threading.Lock()
        self._pending: deque[tuple[float, np.ndarray]] = deque(maxlen=_MAX_PENDING)
        self.reset(device_rate)

    def reset(self, device_rate: int) -> None:
        """Forget everything played; from now on pushes come at `device_rate` Hz."""
        with self._lock:
            self.device_rate = device_rate
            self._pending.clear()
            self._ring = np.zeros(self._cap, dtype=np.float32)
            self._origin: float | None = None  # time of absolute ring index 0
            self._write = 0  # absolute index of the next 16 kHz sample to write
            self._seg_t = 0.0  # play time of the first device sample of the current segment
            self._seg_in = 0  # device samples pushed in the current segment
            self._resampler = self._new_resampler()

    def _new_resampler(self) -> StreamingResampler | None:
        return StreamingResampler(self.device_rate, SAMPLE_RATE) if self.device_rate != SAMPLE_RATE else None

    def push(self, samples: np.ndarray, t: float) -> None:
        """Record mono float32 samples at the device rate whose first one plays at monotonic time `t`."""
        self._pending.append((t, samples))

    def _ingest(self) -> None:
        while self._pending:
            t, samples = self._pending.popleft()
            if self._origin is None:
                self._origin, self._seg_t, self._seg_in = t, t, 0
            expected = self._seg_t + self._seg_in / self.device_rate
            if abs(t - expected) > _RESYNC_S:
                self._seg_t, self._seg_in = t, 0
                self._resampler = self._new_resampler()
                self._jump_to(round((t - self._origin) * SAMPLE_RATE))
            self._seg_in += samples.size
            out = samples if self._resampler is None else self._resampler.push(samples)
            self._store(out)

    def _jump_to(self, index: int) -> None:
        if index > self._write:
            # the gap was silence (nothing was handed to the device)
            self._store(np.zeros(min(index - self._write, self._cap), dtype=np.float32))
        self._write = index

    def _store(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        if x.size > self._cap:
            self._write += x.size - self._cap
            x = x[-self._cap :]
        start = self._write % self._cap
        first = min(x.size, self._cap - start)
        self._ring[start : start + first] = x[:first]
        self._ring[: x.size - first] = x[first:]
        self._write += x.size

    def read(self, t: float, n: int) -> np.ndarray:
        """The `n` 16 kHz samples that played from monotonic time `t` on; zeros where none are known."""
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            self._ingest()
            if self._origin is None:
                return out
            i0 = round((t - self._origin) * SAMPLE_RATE)
            a, hi = max(i0, self._write - self._cap, 0), min(i0 + n, self._write)
            while a < hi:
                b = min(hi, (a // self._cap + 1) * self._cap)
                out[a - i0 : b - i0] = self._ring[a % self._cap : a % self._cap + (b - a)]
                a = b
        return out

    @property
    def end_time(self) -> float | None:
        """Play time just after the newest known sample (None before anything was played)."""
        with self._lock:
            self._ingest()
            return None if self._origin is None else self._origin + self._write / SAMPLE_RATE
