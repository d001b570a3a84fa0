"""Streaming speech on a tiny checkpoint: chunked decode equals whole decode; chunked encode agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mio_agent.codecs.speech import (
    SpeechCodec,
    SpeechCodes,
    resample,
    save_tiny_speech_tokenizer,
    synthetic_speech,
)
from mio_agent.exceptions import CodecError, ConfigError

torch.set_num_threads(1)

# streamed audio equals a whole decode up to float rounding; measured ~3e-7 on the tiny model
STREAM_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> SpeechCodec:
    folder = save_tiny_speech_tokenizer(tmp_path_factory.mktemp("speech") / "SpeechTokenizer", seed=0)
    return SpeechCodec.from_pretrained(folder)


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return synthetic_speech(3.0, 16000, seed=3)


@pytest.fixture(scope="module")
def codes(codec: SpeechCodec, voice: np.ndarray) -> SpeechCodes:
    return codec.encode(voice, 16000)


def test_full_stream_in_mio_order_equals_whole_decode(codec: SpeechCodec, codes: SpeechCodes) -> None:
    whole = codec.decode(codes.content, codes.timbre)
    decoder = codec.stream_decoder()
    block = codes.block_codes()
    n = codes.frames
    chunks: list[np.ndarray] = []
    first_at: int | None = None
    for i in range(0, len(block), 3):
        out = decoder.push(block[i : i + 3])
        if out and first_at is None:
            first_at = i + 3
        chunks += out
    chunks += decoder.finish()
    # nothing before the timbre2 phase; then the first chunk as soon as its frames and context are in
    assert first_at is not None and 3 * n < first_at <= 3 * n + 4 + decoder.lookahead_frames + 3
    sizes = [c.size // 320 for c in chunks]
    assert sizes[:5] == [4, 8, 16, 32, 50]
    assert all(c.size % 320 == 0 for c in chunks)
    joined = np.concatenate(chunks)
    assert joined.shape == whole.shape
    assert np.abs(joined - whole).max() < STREAM_TOLERANCE
    assert decoder.samples_emitted == whole.size


def test_frame_by_frame_interleaved_layers_equal_whole_decode(codec: SpeechCodec, codes: SpeechCodes) -> None:
    assert codes.timbre is not None
    whole = codec.decode(codes.content, codes.timbre)
    decoder = codec.stream_decoder(first_chunk_frames=1, growth=1.5, max_chunk_frames=7)
    chunks: list[np.ndarray] = []
    for i in range(codes.frames):
        chunks += decoder.push_content([codes.content[i]])
        for layer in range(3):
            chunks += decoder.push_timbre(layer, [codes.timbre[layer][i]])
    chunks += decoder.finish()
    assert max(c.size for c in chunks) <= 7 * 320 or chunks[-1].size > 7 * 320
    assert np.abs(np.concatenate(chunks) - whole).max() < STREAM_TOLERANCE


def test_content_preview_streams_as_content_arrives(codec: SpeechCodec, codes: SpeechCodes) -> None:
    preview = codec.decode(codes.content)
    decoder = codec.stream_decoder(mode="content")
    chunks: list[np.ndarray] = []
    first_at: int | None = None
    for i, code in enumerate(codes.content):
        out = decoder.push_content([code])
        if out and first_at is None:
            first_at = i + 1
        chunks += out
    assert first_at == 4 + decoder.lookahead_frames
    # timbre codes are checked but change nothing in a preview
    assert codes.timbre is not None
    assert decoder.push_timbre(0, codes.timbre[0]) == []
    chunks += decoder.finish()
    assert np.abs(np.concatenate(chunks) - preview).max() < STREAM_TOLERANCE


@pytest.mark.parametrize("frames", [1, 2, 3, 9])
def test_short_blocks_stream_exactly(codec: SpeechCodec, codes: SpeechCodes, frames: int) -> None:
    assert codes.timbre is not None
    short = SpeechCodes(codes.content[:frames], tuple(t[:frames] for t in codes.timbre))  # type: ignore[arg-type]
    decoder = codec.stream_decoder()
    chunks = decoder.push(short.block_codes()) + decoder.finish()
    whole = codec.decode(short.content, short.timbre)
    assert np.abs(np.concatenate(chunks) - whole).max() < STREAM_TOLERANCE


def test_streaming_decode_errors(codec: SpeechCodec) -> None:
    decoder = codec.stream_decoder()
    decoder.push([1, 2, 3])
    with pytest.raises(CodecError, match="timbre1 began with timbre0 at 0 of 3 codes"):
        decoder.push([2048])
    decoder.push([1024, 1025])
    with pytest.raises(CodecError, match="a content code came after timbre0 codes"):
        decoder.push([5])
    with pytest.raises(CodecError, match="timbre0 would have 4 codes but content has 3"):
        decoder.push_timbre(0, [1, 2])
    with pytest.raises(CodecError, match="timbre1 would have 1 codes but timbre0 has 0"):
        codec.stream_decoder().push_timbre(1, [1])
    with pytest.raises(CodecError, match=r"outside 0\.\.4095"):
        decoder.push([5000])
    with pytest.raises(CodecError, match=r"timbre0 code 1024 at position 0 is outside 0\.\.1023"):
        decoder.push_timbre(0, [1024])
    with pytest.raises(CodecError, match="timbre layer must be 0, 1 or 2"):
        decoder.push_timbre(3, [1])
    with pytest.raises(CodecError, match=r"unequal length \(content 3, timbre0 2, timbre1 0, timbre2 0\)"):
        decoder.finish()
    # a refused finish leaves the stream open: the missing codes complete it
    decoder.push([1026, 2048, 2049, 2050, 3072, 3073, 3074])
    assert sum(c.size for c in decoder.finish()) == 3 * 320
    with pytest.raises(CodecError, match="stream is finished"):
        decoder.push([1])
    with pytest.raises(CodecError, match="without any content codes"):
        codec.stream_decoder(mode="content").finish()


def test_decode_schedule_is_checked(codec: SpeechCodec) -> None:
    with pytest.raises(ConfigError, match="first_chunk_frames <= max_chunk_frames"):
        codec.stream_decoder(first_chunk_frames=10, max_chunk_frames=5)
    with pytest.raises(ConfigError, match="growth must be >= 1"):
        codec.stream_decoder(growth=0.5)
    with pytest.raises(ConfigError, match="mode must be 'full' or 'content'"):
        codec.stream_decoder(mode="loud")  # type: ignore[arg-type]


def _stream_encode(
    codec: SpeechCodec, audio: np.ndarray, rate: int, **sizes: int
) -> tuple[list[int], list[int]]:
    encoder = codec.stream_encoder(**sizes)
    step = rate // 50
    codes: list[int] = []
    for i in range(0, audio.shape[-1], step):
        codes += encoder.push(audio[..., i : i + step], rate)
        # bounded look-ahead: a frame's code is out once max_delay_frames more frames have arrived
        heard = min(audio.shape[-1], i + step) * 16000 // rate // 320
        assert len(codes) >= heard - encoder.max_delay_frames
    tail = encoder.finish()
    assert len(tail) <= encoder.max_delay_frames + 1
    return codes + tail, tail


def test_chunked_encode_with_unbounded_context_equals_whole(codec: SpeechCodec, voice: np.ndarray) -> None:
    whole = codec.encode(voice, 16000, timbre=False).content
    got, _ = _stream_encode(
        codec, voice, 16000, chunk_frames=7, left_context_frames=1000, lookahead_frames=1000
    )
    assert tuple(got) == whole


def test_chunked_encode_agrees_with_whole_utterance(codec: SpeechCodec, voice: np.ndarray) -> None:
    # stereo int16 at 48 kHz in 20 ms frames, as a microphone delivers
    at48 = resample(voice, 16000, 48000)
    pcm = np.round(np.stack([at48, at48]) * 32767).astype(np.int16)
    whole = np.array(codec.encode(pcm, 48000, timbre=False).content)
    got, tail = _stream_encode(codec, pcm, 48000)
    assert len(got) == whole.size
    # the default context (25 frames back, 10 ahead) gives the same codes on the tiny model; a
    # small context shows the truncated LSTM at work: agreement stays high but below 100 %
    assert np.mean(np.array(got) == whole) >= 0.95
    small, _ = _stream_encode(codec, pcm, 48000, chunk_frames=5, left_context_frames=0, lookahead_frames=0)
    assert 0.0 < np.mean(np.array(small) == whole) < 0.95
    assert 0 < len(tail) <= 25 + 10 + 4 + 1


def test_streaming_encode_errors(codec: SpeechCodec) -> None:
    encoder = codec.stream_encoder()
    assert encoder.push(np.zeros(0, dtype=np.float32), 16000) == []
    encoder.push(np.zeros(320, dtype=np.float32), 16000)
    with pytest.raises(CodecError, match="sample rate changed from 16000 to 48000 Hz"):
        encoder.push(np.zeros(960, dtype=np.float32), 48000)
    with pytest.raises(CodecError, match="NaN"):
        encoder.push(np.full(320, np.nan, dtype=np.float32), 16000)
    assert encoder.finish() == [encoder.codes[0]]
    with pytest.raises(CodecError, match="stream is finished"):
        encoder.push(np.zeros(320, dtype=np.float32), 16000)
    with pytest.raises(CodecError, match="without any audio"):
        codec.stream_encoder().finish()
    with pytest.raises(ConfigError, match="chunk_frames >= 1"):
        codec.stream_encoder(chunk_frames=0)
