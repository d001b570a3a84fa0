"""Audio at the codec's edge: checked float conversion, down-mix, WAV reading and atomic PCM16 writing."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

from mio_agent.codecs.speech.resample import resample
from mio_agent.exceptions import CodecError
from mio_agent.files import atomic_output

__all__ = ["load_audio", "to_float32", "to_model_rate", "to_mono", "write_wav"]

# above this many rows a [channels, samples] array is more likely [samples, channels]
_MAX_CHANNELS = 16
_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def to_float32(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """[samples] or [channels, samples] of any PCM integer or float type to float32 in [-1, 1] scale.

    Integers are scaled by their full range (int16 / 32768, as the reference reads WAV files).
    Raises CodecError for other shapes, types, no samples, or NaN / infinite samples.
    """
    arr = np.asarray(audio)
    if arr.ndim not in (1, 2):
        raise CodecError(f"{what} must be [samples] or [channels, samples], got shape {arr.shape}")
    if arr.ndim == 2 and arr.shape[0] > _MAX_CHANNELS and arr.shape[1] <= _MAX_CHANNELS:
        raise CodecError(
            f"{what} has shape {arr.shape}, which looks like [samples, channels]; pass it transposed "
            "([channels, samples])"
        )
    if arr.size == 0:
        raise CodecError(f"{what} is empty (shape {arr.shape}); pass at least one sample")
    if arr.dtype == np.uint8:
        out = (arr.astype(np.float32) - 128.0) / 128.0
    elif arr.dtype.kind == "i":
        out = arr.astype(np.float32) / np.float32(2 ** (8 * arr.dtype.itemsize - 1))
    elif arr.dtype.kind == "f":
        out = arr.astype(np.float32)
    else:
        raise CodecError(f"{what} has dtype {arr.dtype}; pass float or integer PCM samples")
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise CodecError(f"{what} holds {bad} NaN or infinite sample(s); the source is corrupt")
    return out


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Down-mix float32 [channels, samples] to [samples] by the mean of the channels."""
    return audio if audio.ndim == 1 else audio.mean(axis=0, dtype=np.float32)


def to_model_rate(audio: np.ndarray, sample_rate: int, model_rate: int, what: str = "audio") -> np.ndarray:
    """Checked, down-mixed (channel mean) and resampled (windowed sinc) mono float32 at `model_rate`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise CodecError(f"sample rate must be a positive integer number of Hz, got {sample_rate!r}")
    mono = to_mono(to_float32(audio, what))
    return resample(mono, int(sample_rate), model_rate)


def _parse_wav(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    """PCM 8/16/24/32-bit and IEEE float 32/64 WAV (also WAVE_FORMAT_EXTENSIBLE) to [channels, samples]."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise CodecError(f"{path} is not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise CodecError(f"{path}: WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise CodecError(f"{path}: WAV file lacks a {'fmt' if fmt is None else 'data'} chunk (truncated?)")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise CodecError(f"{path}: WAV header says {channels} channels at {rate} Hz")
    width = bits // 8
    frames = len(payload) // (width * channels) if width else 0
    payload = payload[: frames * width * channels]
    raw: np.ndarray
    if tag == _PCM and bits == 8:
        raw = np.frombuffer(payload, dtype=np.uint8)
    elif tag == _PCM and bits in (16, 32):
        raw = np.frombuffer(payload, dtype=np.dtype("<i2") if bits == 16 else np.dtype("<i4"))
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        raw = (np.where(value >= 1 << 23, value - (1 << 24), value) << 8).astype(np.int32)
    elif tag == _FLOAT and bits in (32, 64):
        raw = np.frombuffer(payload, dtype=np.dtype("<f4") if bits == 32 else np.dtype("<f8"))
    else:
        raise CodecError(f"{path}: WAV format {tag} with {bits} bits is not supported; use PCM or float")
    return raw.reshape(frames, channels).T, rate


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 [channels, samples] and its sample rate.

    WAV (PCM 8/16/24/32-bit, float 32/64) is read with the standard library; other formats need
    the optional `soundfile` package. Raises CodecError if the file is missing, unreadable,
    empty or holds NaN samples.
    """
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CodecError(f"cannot read audio file {file}: {exc.strerror or exc}") from exc
    if data[:4] == b"RIFF":
        raw, rate = _parse_wav(data, file)
    else:
        try:
            import soundfile
        except ImportError:
            raise CodecError(
                f"{file} is not a WAV file; install the soundfile package to read other formats"
            ) from None
        try:
            frames, rate = soundfile.read(str(file), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises its own error types for bad files
            raise CodecError(f"cannot decode audio file {file}: {exc}") from exc
        raw = np.asarray(frames).T
    return np.ascontiguousarray(to_float32(raw, f"audio file {file}")), int(rate)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write [samples] or [channels, samples] float audio as PCM16 WAV, atomically (temp file + rename).

    Samples beyond [-1, 1] are clipped.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise CodecError(f"sample rate must be a positive integer number of Hz, got {sample_rate!r}")
    samples = to_float32(audio, "audio to write")
    frames = samples.reshape(1, -1) if samples.ndim == 1 else samples
    # the inverse of reading (int16 / 32768), so a round trip moves a sample by at most half a step
    pcm = np.clip(np.round(frames.T * 32768.0), -32768, 32767).astype("<i2")
    file = Path(path).expanduser()
    try:
        with atomic_output(file) as tmp, wave.open(str(tmp), "wb") as out:
            out.setnchannels(frames.shape[0])
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(pcm.tobytes())
    except OSError as exc:
        raise CodecError(f"cannot write {file}: {exc.strerror or exc}") from exc
