"""Voice activity: a segmenter that turns 20 ms microphone frames into utterances (webrtcvad or Silero)."""

from __future__ import annotations

import importlib
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mio_agent.exceptions import ConfigError
from mio_agent.runtime.audio.base import FRAME_MS, SAMPLE_RATE, AudioFrame

__all__ = [
    "SileroDetector",
    "SpeechEnded",
    "SpeechEvent",
    "SpeechFrame",
    "SpeechStarted",
    "VadSegmenter",
    "VoiceDetector",
    "WebRtcDetector",
    "make_detector",
]


class VoiceDetector(Protocol):
    """Says whether one 20 ms 16 kHz frame holds speech."""

    def is_speech(self, frame: AudioFrame) -> bool: ...

    def reset(self) -> None: ...


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"the {module} voice detector needs the {package} package: pip install {package}"
        ) from None


class WebRtcDetector:
    """The WebRTC voice activity detector (PyPI `webrtcvad-wheels`); `aggressiveness` 0 (lenient) to 3 (strict)."""

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"webrtcvad aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        self._vad = _import("webrtcvad", "webrtcvad-wheels").Vad(aggressiveness)

    def is_speech(self, frame: AudioFrame) -> bool:
        return bool(self._vad.is_speech(frame.pcm, SAMPLE_RATE))

    def reset(self) -> None:
        """webrtcvad keeps only short-term state; nothing to forget between utterances."""


class SileroDetector:
    """Silero VAD (PyPI `silero-vad`, which ships its model; nothing is downloaded).

    The model takes 32 ms windows (512 samples), so frames are pooled and each frame is judged by
    the newest window's probability, with hysteresis: speech once above `threshold`, silence
    again only below `threshold - 0.15`.
    """

    _WINDOW = 512

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"silero threshold must be between 0 and 1, got {threshold!r}")
        import torch

        self._torch = torch
        silero = _import("silero_vad", "silero-vad")
        with warnings.catch_warnings():
            # its loader uses APIs its dependencies have deprecated; nothing we can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            self._model = silero.load_silero_vad()
        self.threshold = threshold
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False
        self.probability = 0.0

    def is_speech(self, frame: AudioFrame) -> bool:
        self._pending = np.concatenate([self._pending, frame.samples.astype(np.float32) / 32768.0])
        while self._pending.size >= self._WINDOW:
            window, self._pending = self._pending[: self._WINDOW], self._pending[self._WINDOW :]
            with self._torch.inference_mode():
                self.probability = float(self._model(self._torch.from_numpy(window), SAMPLE_RATE).item())
        if self.probability >= self.threshold:
            self._speaking = True
        elif self.probability < self.threshold - 0.15:
            self._speaking = False
        return self._speaking

    def reset(self) -> None:
        self._model.reset_states()
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False
        self.probability = 0.0


def make_detector(kind: str = "webrtc", *, aggressiveness: int = 2, threshold: float = 0.5) -> VoiceDetector:
    """A detector by name: "webrtc" or "silero"."""
    if kind == "webrtc":
        return WebRtcDetector(aggressiveness)
    if kind == "silero":
        return SileroDetector(threshold)
    raise ConfigError(f"unknown voice detector {kind!r}; use 'webrtc' or 'silero'")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """An utterance was confirmed (it reached the minimum speech length).

    `frames` are its frames so far, pre-roll first, so nothing of the first syllable is lost;
    `t` is the capture time of the first of them, `detected_at` that of the frame that confirmed it.
    """

    t: float
    detected_at: float
    frames: tuple[AudioFrame, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    """One more frame of the utterance in progress."""

    frame: AudioFrame


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The utterance ended: `end_silence_ms` of silence followed it (or the stream ended, or it hit the cap).

    `audio` is all of it (int16, 16 kHz): pre-roll, speech and `hangover_ms` of the silence after.
    `speech_end` is when the last voiced frame ended; `detected_at` when the silence was long
    enough to say so (their difference is the end-of-turn delay). `reason`: "silence", "max_length"
    or "flush".
    """

    audio: np.ndarray = field(repr=False)
    t: float
    speech_end: float
    detected_at: float
    reason: str = "silence"

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE


SpeechEvent = SpeechStarted | SpeechFrame | SpeechEnded


class VadSegmenter:
    """Frames in, utterances out: pre-roll, minimum speech length, hang-over and end-of-turn silence.

    While silent, the last `pre_roll_ms` of frames are kept. A voiced frame opens a candidate; it
    becomes an utterance (`SpeechStarted`) once `min_speech_ms` of its frames are voiced, and is
    dropped as a false start (a cough, a click: counted in `false_starts`) if a gap longer than
    `hangover_ms` comes first. Inside an utterance, gaps up to `end_silence_ms` are pauses; a
    longer one ends it (`SpeechEnded`), keeping `hangover_ms` of the silence so the last sound
    is not clipped. `max_speech_s` caps an utterance (and the memory it holds). Frames quieter
    than `min_level_dbfs` count as silence whatever the detector says. `end_silence_ms` may be
    changed between frames (longer while the user dictates a number, shorter after a question).
    """

    def __init__(
        self,
        detector: VoiceDetector | None = None,
        *,
        pre_roll_ms: int = 300,
        min_speech_ms: int = 200,
        hangover_ms: int = 150,
        end_silence_ms: int = 600,
        max_speech_s: float = 30.0,
        min_level_dbfs: float = -60.0,
    ) -> None:
        for name, value in (
            ("pre_roll_ms", pre_roll_ms),
            ("min_speech_ms", min_speech_ms),
            ("hangover_ms", hangover_ms),
            ("end_silence_ms", end_silence_ms),
        ):
            if value < 0:
                raise ConfigError(f"VAD {name} must be >= 0 milliseconds, got {value}")
        if max_speech_s * 1000 <= min_speech_ms:
            raise ConfigError(
                f"VAD max_speech_s ({max_speech_s}) must exceed min_speech_ms ({min_speech_ms} ms)"
            )
        self.detector = detector if detector is not None else WebRtcDetector()
        self.pre_roll_ms = pre_roll_ms
        self.min_speech_ms = min_speech_ms
        self.hangover_ms = hangover_ms
        self.end_silence_ms = end_silence_ms
        self.max_speech_s = max_speech_s
        self.min_level_dbfs = min_level_dbfs
        self.false_starts = 0
        self._pre: deque[AudioFrame] = deque(maxlen=max(1, pre_roll_ms // FRAME_MS))
        self._frames: list[AudioFrame] = []
        self._state = "silence"  # "silence", "candidate", "speech"
        self._voiced = 0  # voiced frames in the candidate
        self._gap = 0  # unvoiced frames since the last voiced one
        self._last_voiced: AudioFrame | None = None

    @property
    def in_speech(self) -> bool:
        """Whether an utterance has been confirmed and not yet ended."""
        return self._state == "speech"

    def reset(self) -> None:
        """Drop any utterance in progress and the pre-roll."""
        self._pre.clear()
        self._frames = []
        self._state = "silence"
        self._voiced = self._gap = 0
        self._last_voiced = None
        self.detector.reset()

    def _is_voiced(self, frame: AudioFrame) -> bool:
        if frame.level_dbfs() < self.min_level_dbfs:
            # still fed to the detector, which adapts to the background it hears
            self.detector.is_speech(frame)
            return False
        return self.detector.is_speech(frame)

    def push(self, frame: AudioFrame, *, voiced: bool | None = None) -> list[SpeechEvent]:
        """Feed one frame; `voiced` overrides the detector (for tests and external detectors)."""
        is_voiced = self._is_voiced(frame) if voiced is None else voiced
        if self._state == "silence":
            if not is_voiced:
                self._pre.append(frame)
                return []
            self._state, self._frames, self._voiced, self._gap = "candidate", list(self._pre), 0, 0
            self._pre.clear()
        self._frames.append(frame)
        if is_voiced:
            self._voiced += 1
            self._gap = 0
            self._last_voiced = frame
        else:
            self._gap += 1
        if self._state == "candidate":
            return self._candidate(frame)
        return self._speech(frame)

    def _candidate(self, frame: AudioFrame) -> list[SpeechEvent]:
        if self._gap * FRAME_MS > self.hangover_ms:
            # a false start: keep its tail as pre-roll, in case real speech follows at once
            self.false_starts += 1
            self._pre.extend(self._frames)
            self._frames, self._state = [], "silence"
            return []
        if self._voiced * FRAME_MS < self.min_speech_ms:
            return []
        self._state = "speech"
        return [SpeechStarted(self._frames[0].t, frame.t, tuple(self._frames))]

    def _speech(self, frame: AudioFrame) -> list[SpeechEvent]:
        events: list[SpeechEvent] = [SpeechFrame(frame)]
        if self._gap * FRAME_MS >= self.end_silence_ms and self._gap > 0:
            events.append(self._end(frame, "silence"))
        elif len(self._frames) * FRAME_MS >= self.max_speech_s * 1000:
            events.append(self._end(frame, "max_length"))
        return events

    def _end(self, frame: AudioFrame, reason: str) -> SpeechEnded:
        keep = len(self._frames) - self._gap + min(self._gap, self.hangover_ms // FRAME_MS)
        audio = np.concatenate([f.samples for f in self._frames[:keep]])
        last = self._last_voiced or frame
        ended = SpeechEnded(
            audio, self._frames[0].t, last.t + FRAME_MS / 1000, frame.t + FRAME_MS / 1000, reason
        )
        # the silence after the utterance is the next one's pre-roll
        self._pre.clear()
        self._pre.extend(self._frames[keep:])
        self._frames, self._state, self._voiced, self._gap = [], "silence", 0, 0
        self._last_voiced = None
        return ended

    def flush(self) -> list[SpeechEvent]:
        """The stream ended: end the utterance in progress (a candidate is dropped)."""
        if self._state == "speech" and self._frames:
            return [self._end(self._frames[-1], "flush")]
        self._frames, self._state = [], "silence"
        return []
