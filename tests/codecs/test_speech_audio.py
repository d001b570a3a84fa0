"""Audio at the speech codec's edge: WAV reading and atomic writing, and the polyphase resampler."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from mio_agent.codecs.speech import StreamingResampler, load_audio, resample, write_wav
from mio_agent.exceptions import CodecError


def riff(
    fmt_tag: int, channels: int, rate: int, bits: int, payload: bytes, *, extensible: bool = False
) -> bytes:
    """A WAV file built by hand, so that formats the stdlib writer lacks can be tested."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else fmt_tag, channels, rate, rate * block, block, bits)
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHIH", 22, bits, 0, fmt_tag) + guid_tail
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk: padded to even
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_pcm16_round_trip_mono_and_stereo(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-1, 1, (2, 1000)).astype(np.float32)
    write_wav(tmp_path / "s.wav", stereo, 22050)
    audio, rate = load_audio(tmp_path / "s.wav")
    assert rate == 22050 and audio.shape == (2, 1000) and audio.dtype == np.float32
    assert np.abs(audio - stereo).max() <= 0.5 / 32768
    write_wav(tmp_path / "m.wav", stereo[0] * 3, 16000)  # clipped, not wrapped
    mono, _ = load_audio(tmp_path / "m.wav")
    assert mono.shape == (1, 1000) and mono.max() <= 1.0 and mono.min() >= -1.0
    assert np.array_equal(
        np.sign(mono[0][np.abs(stereo[0]) > 0.5]), np.sign(stereo[0][np.abs(stereo[0]) > 0.5])
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wav", "s.wav"]


@pytest.mark.parametrize("extensible", [False, True])
def test_float_24_and_8_bit_wav(tmp_path: Path, extensible: bool) -> None:
    values = np.array([0.0, 0.5, -0.25, 1.0], dtype="<f4")
    (tmp_path / "f.wav").write_bytes(riff(3, 1, 8000, 32, values.tobytes(), extensible=extensible))
    audio, rate = load_audio(tmp_path / "f.wav")
    assert rate == 8000 and np.array_equal(audio[0], values)
    ints = [0, 4_194_304, -8_388_608, 8_388_607]  # 24-bit: 0, 0.5, -1, just under 1
    payload = b"".join(v.to_bytes(3, "little", signed=True) for v in ints)
    (tmp_path / "p24.wav").write_bytes(riff(1, 2, 44100, 24, payload, extensible=extensible))
    audio, _ = load_audio(tmp_path / "p24.wav")
    assert audio.shape == (2, 2)
    assert np.allclose(audio.T.reshape(-1), [0.0, 0.5, -1.0, 1.0], atol=1e-6)
    (tmp_path / "p8.wav").write_bytes(riff(1, 1, 8000, 8, bytes([128, 192, 0])))
    audio, _ = load_audio(tmp_path / "p8.wav")
    assert np.array_equal(audio[0], [0.0, 0.5, -1.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (riff(1, 1, 16000, 16, b""), "is empty"),
        (riff(3, 1, 16000, 32, np.array([0.1, np.nan], dtype="<f4").tobytes()), "1 NaN or infinite sample"),
        (riff(6, 1, 8000, 8, b"\x00\x01"), "WAV format 6 with 8 bits is not supported"),
        (b"RIFF\x04\x00\x00\x00WAVE", "lacks a fmt chunk"),
        (b"RIFFxxxxWAVEfmt \x02\x00\x00\x00ab", "fmt chunk is truncated"),
        (b"RIFF", "not a WAV file"),
        (b"\x00\x01 not audio at all", "install the soundfile package|cannot decode audio file"),
    ],
)
def test_unreadable_audio_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "bad.wav").write_bytes(content)
    with pytest.raises(CodecError, match=message) as info:
        load_audio(tmp_path / "bad.wav")
    assert "\n" not in str(info.value)


def test_missing_file_and_unwritable_target(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="cannot read audio file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(CodecError, match="cannot write"):
        write_wav(tmp_path / "no" / "dir.wav", np.zeros(10, dtype=np.float32), 16000)
    with pytest.raises(CodecError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([np.nan], dtype=np.float32), 16000)
    assert not (tmp_path / "nan.wav").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resample_keeps_a_tone(rate: int) -> None:
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(tone, rate, 16000)
    assert out.shape == (-(-16000 * rate // rate),)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(out - expected)[200:-200].max() < 0.01


def test_resample_filters_what_16k_cannot_hold() -> None:
    t = np.arange(48000) / 48000
    high = np.sin(2 * np.pi * 12000 * t).astype(np.float32)
    assert np.abs(resample(high, 48000, 16000))[200:-200].max() < 0.01


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 16000])
def test_streaming_resampler_equals_whole(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate // 2 + 13).astype(np.float32)
    stream = StreamingResampler(rate, 16000)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, rate // 20))
        parts.append(stream.push(x[i : i + n]))
        i += n
    parts.append(stream.finish())
    joined = np.concatenate(parts)
    whole = resample(x, rate, 16000)
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() < 1e-5


def test_unusable_rate_ratio_is_refused() -> None:
    with pytest.raises(CodecError, match="convert the audio to a common rate"):
        resample(np.zeros(100, dtype=np.float32), 44101, 16000)
