"""Band-limited polyphase resampling (Hann-windowed sinc), whole or as a stream with identical output."""

# The filter is the one torchaudio's `resample` uses by default (6 zero crossings, roll-off 0.99,
# Hann window), which is how MIO's reference prepares speech, so codes match it up to float
# rounding. Output sample j of a block of `new` outputs is a dot product of one of `new` kernels
# with an input window that slides by `orig` samples per block (rates reduced by their gcd).

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mio_agent.exceptions import CodecError

__all__ = ["StreamingResampler", "resample"]

_ZERO_CROSSINGS = 6
_ROLLOFF = 0.99
# kernels beyond this many taps (rates with a tiny gcd, e.g. 44101 Hz) would cost more than they are worth
_MAX_KERNEL_TAPS = 4_000_000


def _reduced(orig: int, new: int) -> tuple[int, int]:
    g = math.gcd(orig, new)
    return orig // g, new // g


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int) -> tuple[Tensor, int]:
    """Kernels [new, 1, 2 * width + orig] and the half-width, for rates already reduced by their gcd."""
    cutoff = min(orig, new) * _ROLLOFF
    width = math.ceil(_ZERO_CROSSINGS * orig / cutoff)
    if new * (2 * width + orig) > _MAX_KERNEL_TAPS:
        raise CodecError(
            f"resampling by {new}/{orig} needs a filter too large to be practical; "
            "convert the audio to a common rate (16000, 22050, 44100 or 48000 Hz) first"
        )
    # time of each input tap relative to each output phase, in periods of the cutoff; float32 and this
    # order of operations, as torchaudio computes it for float32 audio, so the taps agree bit for bit
    taps = torch.arange(-width, width + orig, dtype=torch.float32)[None, :] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float32)[:, None] / new + taps) * cutoff
    t = t.clamp(-_ZERO_CROSSINGS, _ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / _ZERO_CROSSINGS / 2) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), arg.sin() / arg)
    kernels = sinc * (window * (cutoff / orig))
    return kernels[:, None, :], width


def _apply(padded: Tensor, kernels: Tensor, orig: int) -> Tensor:
    """Blocks of outputs for a padded mono signal [samples]: one block per full window, flattened."""
    blocks = F.conv1d(padded[None, None, :], kernels, stride=orig)  # [1, new, n_blocks]
    return blocks[0].t().reshape(-1)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample float32 audio [samples] or [channels, samples]; output has ceil(n * new / orig) samples."""
    if orig_rate == new_rate:
        return np.asarray(audio, dtype=np.float32)
    orig, new = _reduced(orig_rate, new_rate)
    kernels, width = _kernel(orig, new)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    rows = x.reshape(-1, x.shape[-1])
    length = rows.shape[-1]
    target = -(-new * length // orig)
    with torch.inference_mode():
        out = torch.stack([_apply(F.pad(row, (width, width + orig)), kernels, orig)[:target] for row in rows])
    return out.reshape(*x.shape[:-1], target).numpy()


class StreamingResampler:
    """Resamples a mono stream pushed in pieces; the joined output equals `resample` of the whole."""

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        self.orig_rate = orig_rate
        self.new_rate = new_rate
        self._orig, self._new = _reduced(orig_rate, new_rate)
        self._kernels, self._width = (
            _kernel(self._orig, self._new) if orig_rate != new_rate else (torch.empty(0), 0)
        )
        # input whose windows are not all computed yet; the whole resampler's left zero padding comes first
        self._pending = np.zeros(self._width, dtype=np.float32)
        self._seen = 0
        self._emitted = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono float32 samples; return the output samples that are now final."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._seen += samples.size
        if self.orig_rate == self.new_rate:
            return samples.copy()
        self._pending = np.concatenate([self._pending, samples])
        # a block whose window holds no right padding lies wholly inside the final output length
        out = self._run()
        self._emitted += out.size
        return out

    def finish(self) -> np.ndarray:
        """Flush the tail (zero padding on the right, as the whole resampler pads)."""
        if self.orig_rate == self.new_rate:
            return np.zeros(0, dtype=np.float32)
        self._pending = np.concatenate([self._pending, np.zeros(self._width + self._orig, dtype=np.float32)])
        out = self._run()
        target = -(-self._new * self._seen // self._orig)
        keep = max(0, target - self._emitted)
        self._emitted += keep
        return out[:keep]

    def _run(self) -> np.ndarray:
        span = 2 * self._width + self._orig
        if self._pending.size < span:
            return np.zeros(0, dtype=np.float32)
        blocks = (self._pending.size - span) // self._orig + 1
        used = (blocks - 1) * self._orig + span
        with torch.inference_mode():
            out = _apply(torch.from_numpy(self._pending[:used]), self._kernels, self._orig).numpy()
        self._pending = self._pending[blocks * self._orig :]
        return out
