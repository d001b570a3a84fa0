"""SpeechCodec on a tiny checkpoint: encode and decode shapes and rates, the edge conversions, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mio_agent.codecs.speech as speech
from mio_agent.codecs.speech import (
    SpeechCodec,
    SpeechCodes,
    resample,
    save_tiny_speech_tokenizer,
    synthetic_speech,
)
from mio_agent.exceptions import CodecError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> SpeechCodec:
    folder = save_tiny_speech_tokenizer(tmp_path_factory.mktemp("speech") / "SpeechTokenizer", seed=0)
    return SpeechCodec.from_pretrained(folder)


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return synthetic_speech(1.5, 16000, seed=1)


def test_public_names_import() -> None:
    api = {"SpeechCodec", "SpeechCodes", "save_tiny_speech_tokenizer", "load_audio", "write_wav"}
    assert api | {"benchmark_speech_codec", "StreamingSpeechDecoder", "StreamingSpeechEncoder"} <= set(
        speech.__all__
    )
    for name in speech.__all__:
        assert getattr(speech, name) is not None


@pytest.mark.parametrize("samples", [1, 319, 320, 321, 24_000])
def test_encode_gives_one_frame_per_hop(codec: SpeechCodec, samples: int) -> None:
    codes = codec.encode(synthetic_speech(samples / 16000, seed=2), 16000)
    frames = math.ceil(samples / 320)
    assert codes.frames == frames
    assert codes.timbre is not None and [len(t) for t in codes.timbre] == [frames] * 3
    assert all(0 <= c < 1024 for layer in (codes.content, *codes.timbre) for c in layer)


def test_encode_content_only_matches_the_first_layer(codec: SpeechCodec, voice: np.ndarray) -> None:
    full = codec.encode(voice, 16000)
    content = codec.encode(voice, 16000, timbre=False)
    assert content.timbre is None
    assert content.content == full.content
    # random tiny weights still spread over many codes, so the other tests compare something
    assert len(set(full.content)) > full.frames // 4


def test_int16_input_is_scaled_as_the_reference_reads_wav(codec: SpeechCodec, voice: np.ndarray) -> None:
    pcm = np.round(voice * 32767).astype(np.int16)
    assert codec.encode(pcm, 16000) == codec.encode(pcm.astype(np.float32) / 32768, 16000)


def test_channels_are_averaged_and_rate_converted(codec: SpeechCodec, voice: np.ndarray) -> None:
    at48 = resample(voice, 16000, 48000)
    stereo = np.stack([at48 * 1.5, at48 * 0.5])
    assert codec.encode(stereo, 48000) == codec.encode(at48, 48000)
    back = resample(at48, 48000, 16000)
    assert back.shape == voice.shape
    # a band-limited round trip: the 3 Hz-enveloped harmonics (< 1 kHz) survive nearly untouched
    assert np.abs(back - voice)[1000:-1000].max() < 0.02
    assert codec.encode(at48, 48000) == codec.encode(back, 16000)


def test_decode_gives_hop_samples_per_frame(codec: SpeechCodec, voice: np.ndarray) -> None:
    codes = codec.encode(voice, 16000)
    full = codec.decode(codes.content, codes.timbre)
    preview = codec.decode(codes.content)
    assert full.dtype == np.float32 and full.shape == (codes.frames * 320,)
    assert preview.shape == full.shape and np.isfinite(full).all()
    assert np.abs(full - preview).max() > 1e-3
    assert np.array_equal(codec.decode_block(codes.block_codes()), full)
    assert np.array_equal(codec.decode(list(codes.content), [list(t) for t in codes.timbre or ()]), full)


def test_block_codes_round_trip() -> None:
    codes = SpeechCodes(content=(5, 1023), timbre=((0, 1), (2, 3), (1023, 4)))
    block = codes.block_codes()
    assert block == [5, 1023, 1024, 1025, 2050, 2051, 4095, 3076]
    assert SpeechCodes.from_block_codes(block) == codes
    assert SpeechCodes.from_block_codes([7, 8]) == SpeechCodes(content=(7, 8))


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, dtype=np.float32), 16000, "is empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, "1 NaN or infinite sample"),
        (np.array([0.1, np.inf], dtype=np.float64), 16000, "NaN or infinite"),
        (np.zeros((1, 2, 3), dtype=np.float32), 16000, r"must be \[samples\] or \[channels, samples\]"),
        (np.zeros((16000, 2), dtype=np.float32), 16000, r"looks like \[samples, channels\]"),
        (np.zeros(10, dtype=np.complex64), 16000, "dtype complex64"),
        (np.zeros(10, dtype=bool), 16000, "dtype bool"),
        (np.zeros(10, dtype=np.float32), 0, "sample rate must be a positive integer"),
        (np.zeros(10, dtype=np.float32), 16000.0, "sample rate must be a positive integer"),
    ],
)
def test_bad_audio_is_refused(codec: SpeechCodec, audio: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(CodecError, match=message) as info:
        codec.encode(audio, rate)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "timbre", "message"),
    [
        ([], None, "no content codes"),
        ([1, 1024], None, r"content code 1024 at position 1 is outside 0\.\.1023; pass per-layer codes"),
        ([-1], None, "content code -1 at position 0 is outside"),
        ([1.5, 2.0], None, "content codes must be integers"),
        ([[1, 2]], None, "must be a flat sequence"),
        ([1, 2], [[1, 2], [1, 2], [3]], "timbre2 has 1 codes but content has 2"),
        ([1, 2], [[1, 2], [1, 2000], [3, 4]], "timbre1 code 2000 at position 1"),
        ([1], [[1]] * 8, "8 timbre layers given; the codec has only 7"),
    ],
)
def test_bad_codes_are_refused(
    codec: SpeechCodec, content: list[int], timbre: list[list[int]] | None, message: str
) -> None:
    with pytest.raises(CodecError, match=message) as info:
        codec.decode(content, timbre)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([1, 2, 1025, 2049, 3073], r"differ in length \(content 2, timbre0 1, timbre1 1, timbre2 1\)"),
        ([1, 1025, 3], "a content code at position 2 comes after timbre0 codes"),
        ([1, 4096], "speech code index 4096 at position 1 is outside 0..4095"),
        ([1025], "holds no content codes"),
        ([1, 2, 1025, 1026, 2049, 2050], r"timbre2 0\)"),
    ],
)
def test_bad_blocks_are_refused(codec: SpeechCodec, block: list[int], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode_block(block)


def test_device_is_checked(tmp_path: Path) -> None:
    from mio_agent.exceptions import ConfigError

    folder = save_tiny_speech_tokenizer(tmp_path / "st", seed=0)
    with pytest.raises(ConfigError, match="not a torch device"):
        SpeechCodec.from_pretrained(folder, device="warp-drive")
