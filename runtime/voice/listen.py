"""Listening: voice activity, speech codes computed while the user speaks, and the finished utterance."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from mio_agent.config import AudioConfig
from mio_agent.conversation import ImagePart, SpeechPart, Turn
from mio_agent.runtime.audio.base import SAMPLE_RATE, AudioFrame
from mio_agent.runtime.voice.vad import SpeechEnded, SpeechFrame, SpeechStarted, VadSegmenter, make_detector

if TYPE_CHECKING:
    from mio_agent.codecs.speech import StreamingSpeechEncoder
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["STAGE_CODES", "Listener", "Utterance"]

STAGE_CODES = 10
"""New speech codes (200 ms) worth a prefill while the user speaks."""


@dataclass(slots=True)
class Utterance:
    """A finished user utterance, ready to be a turn."""

    turn: Turn
    duration_s: float
    ended_at: float
    vad_s: float
    encode_s: float
    keyframes: tuple[int, ...]
    interrupted_agent: bool


class Listener:
    """Frames in; "started" and `Utterance`s out. Speech codes are computed on `pool` as frames
    arrive, so the end of an utterance leaves only the encoder's look-ahead to encode."""

    def __init__(self, shared: SharedResources, cfg: AudioConfig, pool: Executor) -> None:
        self._codec = shared.speech
        self._pool = pool
        self.vad = VadSegmenter(
            make_detector(cfg.vad, aggressiveness=cfg.vad_aggressiveness),
            pre_roll_ms=cfg.pre_roll_ms,
            min_speech_ms=cfg.min_speech_ms,
            end_silence_ms=cfg.end_silence_ms,
            max_speech_s=cfg.max_speech_s,
        )
        self._min_speech_ms = cfg.min_speech_ms
        self._encoder: StreamingSpeechEncoder | None = None
        self._codes: list[int] = []
        self._pending: list[asyncio.Future[list[int]]] = []
        self._staged = 0
        self._detected_at = 0.0
        self._images: tuple[tuple[int, ImagePart], ...] = ()
        self._interrupting = False

    @property
    def in_speech(self) -> bool:
        return self.vad.in_speech

    def set_images(self, images: tuple[tuple[int, ImagePart], ...]) -> None:
        """The images (keyframe number or -1, part) that join this utterance, fixed at its start so
        the turn's ids do not change under the prefill."""
        self._images = images

    def mark_interrupting(self) -> None:
        """This utterance interrupted the agent: it is a turn whatever its length."""
        self._interrupting = True

    def heard_ms(self, frame: AudioFrame) -> float:
        """Milliseconds of speech heard in the current utterance, up to the end of `frame`.

        The confirming frame (at `detected_at`) ends the first `min_speech_ms`; each later frame adds
        its own length."""
        return self._min_speech_ms + (frame.t - self._detected_at) * 1000.0

    def _encode(self, samples: np.ndarray) -> None:
        enc = self._encoder
        assert enc is not None
        fut = asyncio.get_running_loop().run_in_executor(self._pool, enc.push, samples, SAMPLE_RATE)
        self._pending.append(fut)

        def done(f: asyncio.Future[list[int]]) -> None:
            if not f.cancelled() and f.exception() is None:
                self._codes.extend(f.result())

        fut.add_done_callback(done)

    async def push(self, frame: AudioFrame) -> list[Literal["started"] | Utterance]:
        out: list[Literal["started"] | Utterance] = []
        for ev in self.vad.push(frame):
            if isinstance(ev, SpeechStarted):
                self._encoder = self._codec.stream_encoder()
                self._codes, self._pending, self._staged = [], [], 0
                self._detected_at = ev.detected_at
                self._interrupting = False
                for f in ev.frames:
                    self._encode(f.samples)
                out.append("started")
            elif isinstance(ev, SpeechFrame):
                if self._encoder is not None:
                    self._encode(ev.frame.samples)
            elif isinstance(ev, SpeechEnded):
                u = await self._finish(ev)
                if u is not None:
                    out.append(u)
        self._pending = [f for f in self._pending if not f.done()]
        return out

    async def _finish(self, ev: SpeechEnded) -> Utterance | None:
        ended_at = time.monotonic()
        enc, self._encoder = self._encoder, None
        if enc is None:
            return None
        t0 = time.perf_counter()
        if self._pending:
            await asyncio.gather(*self._pending)
        tail = await asyncio.get_running_loop().run_in_executor(self._pool, enc.finish)
        encode_s = time.perf_counter() - t0
        codes = tuple(self._codes) + tuple(tail)
        self._codes, self._pending = [], []
        if not codes:
            return None
        images = self._images
        turn = Turn("user", (*(p for _, p in images), SpeechPart(codes)))
        return Utterance(
            turn=turn,
            duration_s=ev.duration_s,
            ended_at=ended_at,
            vad_s=max(ev.detected_at - ev.speech_end, 0.0),
            encode_s=encode_s,
            keyframes=tuple(k for k, _ in images if k >= 0),
            interrupted_agent=self._interrupting,
        )

    def turn_so_far(self) -> Turn | None:
        """The utterance as a turn, when enough new codes arrived since the last one staged."""
        if len(self._codes) - self._staged < STAGE_CODES:
            return None
        self._staged = len(self._codes)
        return Turn("user", (*(p for _, p in self._images), SpeechPart(tuple(self._codes))))
