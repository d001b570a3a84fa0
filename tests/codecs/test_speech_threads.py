"""One speech codec shared by many sessions' threads: every stream gets what it would get alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mio_agent.codecs.speech import SpeechCodec
from mio_agent.codecs.speech.checkpoint import save_tiny_speech_tokenizer


def _encode(codec: SpeechCodec, audio: np.ndarray) -> tuple[int, ...]:
    enc = codec.stream_encoder(chunk_frames=5, left_context_frames=5, lookahead_frames=2)
    codes: list[int] = []
    for i in range(0, audio.size, 320):
        codes += enc.push(audio[i : i + 320], 16000)
    return tuple(codes + enc.finish())


def _decode(codec: SpeechCodec, content: tuple[int, ...]) -> np.ndarray:
    dec = codec.stream_decoder(mode="content")
    chunks = [c for k in range(0, len(content), 3) for c in dec.push_content(content[k : k + 3])]
    return np.concatenate(chunks + dec.finish())


def test_streams_on_many_threads_equal_streams_alone(tmp_path: Path) -> None:
    codec = SpeechCodec.from_pretrained(save_tiny_speech_tokenizer(tmp_path / "SpeechTokenizer", seed=0))
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 + 800 * k).astype(np.float32) * 0.1 for k in range(6)]
    alone = [_encode(codec, c) for c in clips]
    audio_alone = [_decode(codec, codes) for codes in alone]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda c: _encode(codec, c), clips * 3))
        audio_together = list(pool.map(lambda codes: _decode(codec, codes), alone * 3))
    assert together == alone * 3
    for got, want in zip(audio_together, audio_alone * 3, strict=True):
        np.testing.assert_array_equal(got, want)
