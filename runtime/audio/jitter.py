"""The speaker's jitter buffer: reply audio queued from the event loop, drained by a device thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from mio_agent.codecs.speech import StreamingResampler
from mio_agent.codecs.speech.audio import to_float32, to_mono
from mio_agent.exceptions import CodecError
from mio_agent.runtime.audio.reference import PlaybackReference

__all__ = ["BufferedSink", "PlaybackBuffer"]

# how many replies' played counts are remembered
_TURNS_KEPT = 256
_POLL_S = 0.01
DRAIN_STALL_S = 3.0
"""`drain` gives up when no audio left the buffer for this long: a device that stopped taking it."""


@dataclass(slots=True)
class _Chunk:
    turn: int
    samples: np.ndarray
    offset: int = 0


class PlaybackBuffer:
    """Queued reply audio at the device rate, mono float32; thread-safe.

    The loop side `append`s chunks of a reply (`turn`) and `end_turn`s it; the device side
    `pull`s exactly the samples it needs and gets silence when there is nothing (or not yet
    enough) to play. A reply starts playing once `prebuffer` samples of it are queued or it has
    ended, so a decoder that delivers in uneven bursts does not make the speaker stutter; if the
    queue runs dry in the middle of a reply that is an underrun, counted, and the buffer waits
    for `prebuffer` again. Every sample pulled is counted against its reply (`played`) and, when
    a reference is attached, recorded there for the echo canceller.
    """

    def __init__(self, rate: int, *, prebuffer: int, reference: PlaybackReference | None = None) -> None:
        self.rate = rate
        self.prebuffer = prebuffer
        self.reference = reference
        self._lock = threading.Lock()
        self._chunks: deque[_Chunk] = deque()
        self._buffered = 0
        self._ended: set[int] = set()
        self._waiting = True
        self._played: OrderedDict[int, int] = OrderedDict()
        self.underruns = 0

    @property
    def buffered(self) -> int:
        """Samples queued and not yet played."""
        return self._buffered

    def append(self, samples: np.ndarray, turn: int) -> None:
        if samples.size == 0:
            return
        with self._lock:
            self._chunks.append(_Chunk(turn, samples))
            self._buffered += samples.size
            self._played.setdefault(turn, 0)
            while len(self._played) > _TURNS_KEPT:
                self._played.popitem(last=False)

    def end_turn(self, turn: int) -> None:
        with self._lock:
            if any(c.turn == turn for c in self._chunks):
                self._ended.add(turn)

    def clear(self) -> int:
        """Drop every queued sample now; returns how many were dropped."""
        with self._lock:
            dropped = self._buffered
            self._chunks.clear()
            self._buffered = 0
            self._ended.clear()
            self._waiting = True
            return dropped

    def played(self, turn: int) -> int:
        """Samples of reply `turn` handed to the device so far."""
        with self._lock:
            return self._played.get(turn, 0)

    def _ready(self) -> bool:
        head = self._chunks[0].turn
        if head in self._ended or any(c.turn != head for c in self._chunks):
            return True
        return self._buffered >= self.prebuffer

    def pull(self, n: int, t: float) -> np.ndarray:
        """The next `n` samples to play (silence where there are none); `t`: when the first one plays."""
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            filled = 0
            while filled < n:
                if self._waiting:
                    if not self._chunks or not self._ready():
                        break
                    self._waiting = False
                chunk = self._chunks[0]
                take = min(n - filled, chunk.samples.size - chunk.offset)
                out[filled : filled + take] = chunk.samples[chunk.offset : chunk.offset + take]
                chunk.offset += take
                filled += take
                self._buffered -= take
                if chunk.turn in self._played:
                    self._played[chunk.turn] += take
                if chunk.offset < chunk.samples.size:
                    continue
                self._chunks.popleft()
                if any(c.turn == chunk.turn for c in self._chunks):
                    continue
                if chunk.turn in self._ended:
                    self._ended.discard(chunk.turn)
                else:
                    # ran dry in the middle of a reply: silence until it has a cushion again
                    self.underruns += 1
                # the next reply, too, starts only once it has its cushion
                self._waiting = True
        if self.reference is not None:
            self.reference.push(out, t)
        return out


class BufferedSink:
    """What every sink shares: conversion of reply audio to the device rate and the jitter buffer.

    Subclasses open the device in `start` and drain `self._buffer` from their own clock.
    """

    def __init__(self, rate: int, *, prebuffer_ms: float = 60.0, max_buffer_s: float = 120.0) -> None:
        self._prebuffer_ms, self._max_buffer_s = prebuffer_ms, max_buffer_s
        self._reference = PlaybackReference(rate)
        self._set_rate(rate)
        self._resamplers: dict[int, StreamingResampler] = {}
        self._current: int | None = None
        self._newest = -1 << 62
        self._cleared_upto = -1 << 62

    def _set_rate(self, rate: int) -> None:
        """Run at `rate` Hz (the device's); only before anything was played."""
        if rate <= 0:
            raise CodecError(f"sink sample rate must be a positive number of Hz, got {rate}")
        self._rate = rate
        self._reference.reset(rate)
        prebuffer = int(self._prebuffer_ms * rate / 1000)
        self._buffer = PlaybackBuffer(rate, prebuffer=prebuffer, reference=self._reference)
        self._max_buffer = int(self._max_buffer_s * rate)

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def reference(self) -> PlaybackReference:
        return self._reference

    @property
    def buffered_ms(self) -> float:
        return 1000.0 * self._buffer.buffered / self._rate

    @property
    def underruns(self) -> int:
        return self._buffer.underruns

    def played_ms(self, turn: int) -> float:
        """Milliseconds of reply `turn` handed to the speaker (they play out even after a `clear`)."""
        return 1000.0 * self._buffer.played(turn) / self._rate

    async def play(self, audio: np.ndarray | bytes, sample_rate: int, *, turn: int) -> None:
        """Queue a chunk of reply `turn`: int16 bytes, or int16 / float32 samples ([samples] or
        [channels, samples]) at `sample_rate` Hz. Waits only while more than `max_buffer_s` is queued.

        Audio of a reply that `clear` cut off is dropped, so a decoder still finishing it cannot
        restart playback.
        """
        if turn <= self._cleared_upto:
            return
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise CodecError(
                f"sample rate of reply audio must be a positive integer of Hz, got {sample_rate!r}"
            )
        raw = (
            np.frombuffer(audio, dtype="<i2") if isinstance(audio, bytes | bytearray | memoryview) else audio
        )
        if raw.size == 0:
            return
        mono = to_mono(to_float32(raw, f"reply audio of turn {turn}"))
        while self._buffer.buffered > self._max_buffer:
            await asyncio.sleep(_POLL_S)
            if turn <= self._cleared_upto:
                return
        if self._current is not None and self._current != turn:
            self.end_turn(self._current)
        self._current = turn
        self._newest = max(self._newest, turn)
        resampler = self._resamplers.get(turn)
        if resampler is not None and resampler.orig_rate != sample_rate:
            self._buffer.append(resampler.finish(), turn)
            resampler = None
        if resampler is None:
            resampler = self._resamplers[turn] = StreamingResampler(sample_rate, self._rate)
        self._buffer.append(resampler.push(mono), turn)

    def end_turn(self, turn: int) -> None:
        """No more audio is coming for reply `turn`: flush it so its last samples play too."""
        resampler = self._resamplers.pop(turn, None)
        if resampler is not None and turn > self._cleared_upto:
            self._buffer.append(resampler.finish(), turn)
        self._buffer.end_turn(turn)
        if self._current == turn:
            self._current = None

    def clear(self) -> float:
        """Drop everything not yet handed to the device, at once; returns the milliseconds dropped."""
        self._cleared_upto = self._newest
        self._resamplers.clear()
        self._current = None
        return 1000.0 * self._buffer.clear() / self._rate

    async def drain(self, timeout: float | None = None) -> bool:
        """End the current reply and wait until all queued audio was handed to the device."""
        if self._current is not None:
            self.end_turn(self._current)
        deadline = None if timeout is None else time.monotonic() + timeout
        left, moved_at = self._buffer.buffered, time.monotonic()
        while left > 0:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            # nothing takes audio from the buffer any more (the device stopped, or its stream broke
            # and PortAudio stopped calling back): it would never drain
            if not self.playing_out() or now - moved_at > DRAIN_STALL_S:
                return False
            await asyncio.sleep(_POLL_S)
            if self._buffer.buffered != left:
                left, moved_at = self._buffer.buffered, time.monotonic()
        return True

    def playing_out(self) -> bool:
        """Whether something still takes audio from the buffer (a device whose stream is running)."""
        return True
