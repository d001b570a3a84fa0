"""Acoustic echo cancellation: the speaker's own sound removed from the microphone, with the played audio as reference."""

# The algorithm, its measured figures, and what it does and does not handle: docs/audio.md.

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from mio_agent.runtime.audio.base import FRAME_SAMPLES, SAMPLE_RATE, AudioFrame, DeviceError
from mio_agent.runtime.audio.convert import to_int16
from mio_agent.runtime.audio.reference import PlaybackReference

__all__ = [
    "DelayEstimator",
    "EchoCanceller",
    "EchoResult",
    "EchoStats",
    "SpeexEchoCanceller",
    "speexdsp_available",
]

# request numbers of speex_echo_ctl / speex_preprocess_ctl (speex/speex_echo.h, speex_preprocess.h)
_ECHO_SET_SAMPLING_RATE = 24
_PP_SET_DENOISE = 0
_PP_SET_NOISE_SUPPRESS = 18
_PP_SET_ECHO_SUPPRESS = 20
_PP_SET_ECHO_SUPPRESS_ACTIVE = 22
_PP_SET_ECHO_STATE = 24

# frames quieter than this (-60 dBFS) say little about the ERLE
_QUIET = 1e-6
_MAX_ERLE_DB = 60.0
_RISE, _FALL = 0.05, 0.01
_HYSTERESIS_DB = 4.0

_INSTALL_HINT = (
    "echo cancellation needs the speexdsp library: on Debian/Ubuntu `apt-get install libspeexdsp1`, "
    "on macOS `brew install speexdsp`; or turn echo cancellation off (and use headphones)"
)
_lib: Any = None


def _load() -> Any:
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("speexdsp"), "libspeexdsp.so.1", "libspeexdsp.dylib") if n]
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise DeviceError(f"{_INSTALL_HINT} (not found: {'; '.join(errors) or 'no library named speexdsp'})")
    state, i16 = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16)
    lib.speex_echo_state_init.restype = state
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_state_destroy.argtypes = [state]
    lib.speex_echo_state_reset.argtypes = [state]
    lib.speex_echo_ctl.argtypes = [state, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_cancellation.argtypes = [state, i16, i16, i16]
    lib.speex_preprocess_state_init.restype = state
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_destroy.argtypes = [state]
    lib.speex_preprocess_ctl.argtypes = [state, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [state, i16]
    _lib = lib
    return lib


def speexdsp_available() -> bool:
    """Whether libspeexdsp can be loaded here."""
    try:
        _load()
    except DeviceError:
        return False
    return True


def _ptr(a: np.ndarray) -> Any:
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))


class SpeexEchoCanceller:
    """speexdsp's echo canceller and residual echo suppressor on frames of int16 samples.

    `filter_ms`: the longest echo path it can learn (delay after reference alignment plus the
    room's reverberation); longer converges more slowly. `residual_suppression`: run speexdsp's
    preprocessor with the echo state (removes most of what the linear filter leaves; it also
    suppresses stationary noise by up to `noise_suppress_db`). `echo_suppress_db` /
    `echo_suppress_active_db`: the most residual echo is attenuated without / with near-end
    speech (speexdsp's defaults are -40 and -15).
    """

    def __init__(
        self,
        *,
        frame_samples: int = FRAME_SAMPLES,
        sample_rate: int = SAMPLE_RATE,
        filter_ms: int = 300,
        residual_suppression: bool = True,
        noise_suppress_db: int = -15,
        echo_suppress_db: int = -40,
        echo_suppress_active_db: int = -15,
    ) -> None:
        self._lib = _load()
        self.frame_samples = frame_samples
        self._echo = self._lib.speex_echo_state_init(frame_samples, int(filter_ms * sample_rate / 1000))
        if not self._echo:
            raise DeviceError(
                f"speexdsp could not create an echo canceller for {frame_samples}-sample frames"
            )
        self._set(self._lib.speex_echo_ctl, self._echo, _ECHO_SET_SAMPLING_RATE, sample_rate)
        self._pre: Any = None
        if residual_suppression:
            self._pre = self._lib.speex_preprocess_state_init(frame_samples, sample_rate)
            # the preprocessor computes its echo gains only with denoising on
            self._set(self._lib.speex_preprocess_ctl, self._pre, _PP_SET_DENOISE, 1)
            self._set(self._lib.speex_preprocess_ctl, self._pre, _PP_SET_NOISE_SUPPRESS, noise_suppress_db)
            self._set(self._lib.speex_preprocess_ctl, self._pre, _PP_SET_ECHO_SUPPRESS, echo_suppress_db)
            self._set(
                self._lib.speex_preprocess_ctl,
                self._pre,
                _PP_SET_ECHO_SUPPRESS_ACTIVE,
                echo_suppress_active_db,
            )
            self._lib.speex_preprocess_ctl(self._pre, _PP_SET_ECHO_STATE, ctypes.c_void_p(self._echo))
        self._linear = np.zeros(frame_samples, dtype=np.int16)

    @staticmethod
    def _set(ctl: Any, state: Any, request: int, value: int) -> None:
        arg = ctypes.c_int(value)
        ctl(state, request, ctypes.byref(arg))

    def process(self, mic: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame: the mic (int16) and what the speaker played during it (int16).

        Returns (cleaned, linear): after residual suppression, and the linear filter's output alone.
        """
        if self._echo is None:
            raise DeviceError("this echo canceller was closed")
        n = self.frame_samples
        if mic.size != n or reference.size != n:
            raise ValueError(
                f"echo canceller frames are {n} samples, got mic {mic.size} and reference {reference.size}"
            )
        rec = np.ascontiguousarray(mic, dtype=np.int16)
        play = np.ascontiguousarray(reference, dtype=np.int16)
        self._lib.speex_echo_cancellation(self._echo, _ptr(rec), _ptr(play), _ptr(self._linear))
        linear = self._linear.copy()
        if self._pre is None:
            return linear, linear
        out = linear.copy()
        self._lib.speex_preprocess_run(self._pre, _ptr(out))
        return out, linear

    def reset(self) -> None:
        """Forget the learnt echo path (after the speaker or microphone changed)."""
        if self._echo is not None:
            self._lib.speex_echo_state_reset(self._echo)

    def close(self) -> None:
        pre, self._pre = self._pre, None
        echo, self._echo = self._echo, None
        if pre:
            self._lib.speex_preprocess_state_destroy(pre)
        if echo:
            self._lib.speex_echo_state_destroy(echo)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _power(x: np.ndarray) -> float:
    f = x.astype(np.float64) / 32768.0
    return float(np.mean(f * f))


class DelayEstimator:
    """Finds the bulk delay from the reference to its echo in the microphone (GCC-PHAT).

    Every `every_s` of active reference it cross-correlates the last `span_s` of microphone audio
    with the reference over lags 0..`max_delay_s`, whitened (PHAT) so the direct path stands out
    as a sharp peak. A lag is reported once two estimates in a row agree within 2 ms and the
    peak stands `min_peak` times above the correlation's mean magnitude (speech over the reply,
    silence, or noise give no clear peak, and no estimate).
    """

    def __init__(
        self, *, max_delay_s: float = 0.5, span_s: float = 0.6, every_s: float = 0.1, min_peak: float = 10.0
    ) -> None:
        self.max_lag = int(max_delay_s * SAMPLE_RATE)
        self.span = int(span_s * SAMPLE_RATE)
        self.every = max(1, int(every_s * SAMPLE_RATE / FRAME_SAMPLES))
        self.min_peak = min_peak
        self._frames = self.span // FRAME_SAMPLES
        self._mic: deque[np.ndarray] = deque(maxlen=self._frames)
        self._t_last = 0.0
        self._count = 0
        self._previous: int | None = None
        self.delay_s: float | None = None
        """The latest agreed delay in seconds (None until there is one)."""
        self.peak = 0.0

    def push(self, frame: AudioFrame, reference: PlaybackReference) -> float | None:
        """Add a mic frame; returns the delay (seconds) from the reference's play times to the echo,
        when two estimates in a row just agreed on it."""
        self._mic.append(frame.samples.astype(np.float32) / 32768.0)
        self._t_last = frame.t + FRAME_SAMPLES / SAMPLE_RATE
        self._count += 1
        if self._count % self.every or len(self._mic) < self._frames:
            return None
        mic = np.concatenate(self._mic)
        start = self._t_last - mic.size / SAMPLE_RATE
        ref = reference.read(start - self.max_lag / SAMPLE_RATE, mic.size + self.max_lag)
        if float(np.mean(ref * ref)) < 1e-7 or float(np.mean(mic * mic)) < 1e-8:
            self._previous = None
            return None
        size = 1 << int(np.ceil(np.log2(mic.size + ref.size)))
        cross = np.fft.rfft(mic, size) * np.conj(np.fft.rfft(ref, size))
        corr = np.fft.irfft(cross / (np.abs(cross) + 1e-12), size)
        # an echo delayed by d has mic[m] ~ ref[m + max_lag - d], a peak at circular index d - max_lag
        lags = corr[(np.arange(self.max_lag + 1) - self.max_lag) % size]
        best = int(np.argmax(lags))
        self.peak = float(lags[best] / (np.mean(np.abs(lags)) + 1e-12))
        if self.peak < self.min_peak:
            self._previous = None
            return None
        agreed = self._previous is not None and abs(best - self._previous) <= 0.002 * SAMPLE_RATE
        self._previous = best
        if not agreed:
            return None
        self.delay_s = best / SAMPLE_RATE
        return self.delay_s


@dataclass(slots=True)
class EchoStats:
    """Running figures of an `EchoCanceller`."""

    frames: int = 0
    active_frames: int = 0
    """Frames during which the speaker had played something within the filter's reach."""
    echo_only_frames: int = 0
    """Active frames the double-talk gate judged to hold nothing but echo."""
    erle_db: float = 0.0
    """Echo return loss enhancement (mic power over output power, dB), followed over echo-only
    frames (up within about a second, down over several)."""
    linear_erle_db: float = 0.0
    """The same for the adaptive filter alone (before residual suppression): how well it has
    learnt the room."""
    delay_ms: float | None = None
    """The echo delay the estimator measured (None until it found one)."""
    delay_changes: int = 0
    """Times the estimated echo delay moved and the filter restarted."""


@dataclass(frozen=True, slots=True)
class EchoResult:
    """A microphone frame after echo cancellation.

    `near_end`: whether the frame may hold the user's voice; False when the speaker's echo alone
    explains its level, so a voice detector should treat it as silence. `echo_active`: whether
    the speaker played anything the echo of which could reach this frame.
    """

    frame: AudioFrame
    near_end: bool
    echo_active: bool


class EchoCanceller:
    """Removes what the speaker played from microphone frames, frame by frame on the event loop.

    For each mic frame it reads from the sink's `PlaybackReference` the 20 ms that played
    `delay - margin_ms` before the frame was captured, and runs the canceller. `delay` starts at
    `initial_delay_ms` (0: the sink's and the source's reported latencies are right) and, with
    `estimate_delay`, follows a `DelayEstimator`, so a path delay the latencies do not account for
    (a buffer the driver does not report, a Bluetooth speaker) still falls inside the filter;
    the filter restarts (and relearns, a second or two) only when the echo has moved where it
    cannot follow: before its reference, or past half its length. The margin keeps the echo after
    its reference even when the delay is slightly overestimated. One instance should live as
    long as the session, so what it learnt about the room carries over from reply to reply.

    It also gates double talk. Until the adaptive filter reaches `converged_db` of ERLE (the first
    second or so of the first reply), a frame counts as the user's only if its level exceeds by
    `margin_db` the loudest reference frame within the filter's reach times the largest coupling
    expected from speaker to microphone (`max_coupling_db`, 0 dB: the echo is no louder than the
    digital signal played). Afterwards it counts if the output keeps more than `double_talk_db` of
    the mic's power (echo alone is cut by the ERLE, the user's voice passes). Frames that fail
    have `near_end=False`; a voice detector should treat them as silence.
    """

    def __init__(
        self,
        reference: PlaybackReference,
        *,
        filter_ms: int = 300,
        margin_ms: float = 10.0,
        initial_delay_ms: float = 0.0,
        estimate_delay: bool = True,
        residual_suppression: bool = True,
        max_coupling_db: float = 0.0,
        margin_db: float = 6.0,
        converged_db: float = 10.0,
        double_talk_db: float = -10.0,
    ) -> None:
        self.reference = reference
        self.margin_s = margin_ms / 1000.0
        self.delay_s = initial_delay_ms / 1000.0
        self.window_s = filter_ms / 1000.0
        self.canceller = SpeexEchoCanceller(filter_ms=filter_ms, residual_suppression=residual_suppression)
        self.estimator = DelayEstimator() if estimate_delay else None
        self.coupling = 10 ** (max_coupling_db / 10)
        self.margin = 10 ** (margin_db / 10)
        self.converged_db = converged_db
        self.double_talk = 10 ** (double_talk_db / 10)
        self.stats = EchoStats()
        self._converged = False

    def _restart(self) -> None:
        self.canceller.reset()
        self._converged = False
        self.stats.linear_erle_db = self.stats.erle_db = 0.0

    def _track(self, mic_power: float, linear_power: float, out_power: float) -> None:
        """Follow the ERLE in dB: quickly up, slowly down, so the user's voice misjudged as echo for
        a few frames does not undo what the filter has learnt."""
        stats = self.stats
        for name, power in (("linear_erle_db", linear_power), ("erle_db", out_power)):
            now = min(_MAX_ERLE_DB, max(0.0, 10.0 * math.log10(mic_power / max(power, 1e-12))))
            old = getattr(stats, name)
            setattr(stats, name, old + (_RISE if now > old else _FALL) * (now - old))
        if stats.linear_erle_db >= self.converged_db:
            self._converged = True
        elif stats.linear_erle_db < self.converged_db - _HYSTERESIS_DB:
            self._converged = False

    def process(self, frame: AudioFrame) -> EchoResult:
        """The frame with the speaker's echo removed (same time and index), and the double-talk verdict."""
        self.stats.frames += 1
        if self.reference.end_time is None:
            return EchoResult(frame, near_end=True, echo_active=False)
        if self.estimator is not None:
            found = self.estimator.push(frame, self.reference)
            if self.estimator.delay_s is not None:
                self.stats.delay_ms = 1000.0 * self.estimator.delay_s
            # only a delay the filter cannot cover (the echo would come before its reference, or
            # late in the filter's span) is worth restarting for: restarting costs a second or two
            if (
                found is not None
                and not self.delay_s - self.margin_s / 2 <= found <= self.delay_s + self.window_s / 2
            ):
                self.delay_s = found
                self.stats.delay_changes += 1
                self._restart()
        start = frame.t - self.delay_s + self.margin_s
        # what played from one filter length before this frame's reference to its end
        window = self.reference.read(start - self.window_s, int(self.window_s * SAMPLE_RATE) + FRAME_SAMPLES)
        ref = window[-FRAME_SAMPLES:]
        blocks = window[: window.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        ref_peak = float(np.max(np.mean(blocks.astype(np.float64) ** 2, axis=1)))
        out, linear = self.canceller.process(frame.samples, to_int16(ref))
        cleaned = AudioFrame(out, frame.t, frame.index)
        if ref_peak < 1e-8:
            return EchoResult(cleaned, near_end=True, echo_active=False)
        self.stats.active_frames += 1
        mic_power, out_power = _power(frame.samples), _power(out)
        if not self._converged:
            # the filter has not learnt the room yet: only a voice louder than any echo could be counts
            near_end = out_power > self.margin * self.coupling * ref_peak
        else:
            # most echo is removed now: an output keeping a good part of the mic's power is the user
            near_end = out_power > self.double_talk * mic_power and out_power > 1e-9
        if not near_end:
            self.stats.echo_only_frames += 1
            if mic_power > _QUIET:
                self._track(mic_power, _power(linear), out_power)
        return EchoResult(cleaned, near_end=near_end, echo_active=True)

    def close(self) -> None:
        self.canceller.close()
