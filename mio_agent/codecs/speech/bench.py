"""Speech codec benchmark: real-time factors of encode and streaming decode, time to first audio, on CPU."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from mio_agent.codecs.speech.checkpoint import random_model
from mio_agent.codecs.speech.codec import SpeechCodec
from mio_agent.codecs.speech.config import FULL_CONFIG, TINY_CONFIG, SpeechTokenizerConfig
from mio_agent.exceptions import ConfigError

__all__ = ["benchmark_speech_codec", "synthetic_speech"]

_CONFIGS: dict[str, SpeechTokenizerConfig] = {"tiny": TINY_CONFIG, "full": FULL_CONFIG}
# what a microphone callback delivers
_FRAME_SECONDS = 0.02
T = TypeVar("T")


def synthetic_speech(seconds: float, sample_rate: int = 16000, *, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like float32 test signal: gliding harmonics under a 3 Hz envelope, plus noise."""
    rng = np.random.Generator(np.random.PCG64(seed))
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)) ** 2
    noise = 0.02 * rng.standard_normal(t.size)
    return np.asarray(0.3 * envelope * voiced + noise, dtype=np.float32)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _bench_one(codec: SpeechCodec, audio: np.ndarray, seconds: float, prefix: str) -> dict[str, float]:
    rate = codec.sample_rate
    out: dict[str, float] = {}
    codec.decode(codec.encode(audio[: rate // 5], rate).content)  # warm-up: first-call allocations

    codes, took = _timed(lambda: codec.encode(audio, rate, timbre=True))
    out[f"{prefix}_encode_rtf"] = took / seconds
    whole, took = _timed(lambda: codec.decode(codes.content, codes.timbre))
    out[f"{prefix}_decode_rtf"] = took / seconds

    encoder = codec.stream_encoder()
    step = round(_FRAME_SECONDS * rate)
    start = time.perf_counter()
    streamed: list[int] = []
    for i in range(0, audio.size, step):
        streamed += encoder.push(audio[i : i + step], rate)
    tail, tail_took = _timed(encoder.finish)
    streamed += tail
    out[f"{prefix}_stream_encode_rtf"] = (time.perf_counter() - start) / seconds
    out[f"{prefix}_stream_encode_tail_ms"] = tail_took * 1000
    out[f"{prefix}_stream_encode_agreement"] = float(np.mean(np.array(streamed) == np.array(codes.content)))

    assert codes.timbre is not None
    decoder = codec.stream_decoder()
    start = time.perf_counter()
    decoder.push_content(codes.content)
    decoder.push_timbre(0, codes.timbre[0])
    decoder.push_timbre(1, codes.timbre[1])
    # timbre2 codes one at a time, as the model emits them; the clock starts with the first
    first: float | None = None
    chunks: list[np.ndarray] = []
    t2_start = time.perf_counter()
    for code in codes.timbre[2]:
        chunks += decoder.push_timbre(2, [code])
        if chunks and first is None:
            first = time.perf_counter() - t2_start
    chunks += decoder.finish()
    out[f"{prefix}_stream_decode_rtf"] = (time.perf_counter() - start) / seconds
    out[f"{prefix}_first_chunk_ms"] = 1000 * (first if first is not None else time.perf_counter() - t2_start)
    out[f"{prefix}_first_chunk_codes"] = float(decoder.schedule.first_chunk_frames + decoder.lookahead_frames)
    out[f"{prefix}_stream_max_abs_err"] = float(np.abs(np.concatenate(chunks) - whole).max())

    preview = codec.stream_decoder(mode="content")
    start = time.perf_counter()
    got: list[np.ndarray] = []
    for code in codes.content:
        got = preview.push_content([code])
        if got:
            break
    out[f"{prefix}_preview_first_chunk_ms"] = 1000 * (time.perf_counter() - start)
    return out


def benchmark_speech_codec(
    *,
    sizes: Sequence[str] = ("tiny", "full"),
    seconds: float = 4.0,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Time the speech codec with random weights on the CPU, for the tiny and the full-size architecture.

    Keys, per size ("tiny_", "full_"): encode_rtf and decode_rtf (whole utterance), stream_encode_rtf
    (20 ms frames pushed as a microphone would) with stream_encode_tail_ms (the work left when the
    utterance ends) and stream_encode_agreement (fraction of content codes equal to the whole
    encode), stream_decode_rtf (four-part block, timbre2 pushed code by code), first_chunk_ms
    (compute time from the first timbre2 code to the first audio chunk, codes arriving instantly),
    first_chunk_codes (timbre2 codes needed before it), preview_first_chunk_ms (the same for a
    content-only preview), stream_max_abs_err (streamed vs whole decode), params_m, build_s.
    A real-time factor below 1 is faster than real time. `threads` sets torch's CPU threads.
    """
    unknown = [s for s in sizes if s not in _CONFIGS]
    if unknown:
        raise ConfigError(f"unknown speech codec size(s) {unknown}; choose from {sorted(_CONFIGS)}")
    if seconds <= 0:
        raise ConfigError(f"benchmark audio length must be positive, got {seconds} s")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        results: dict[str, float] = {"threads": float(torch.get_num_threads()), "seconds": float(seconds)}
        for size in sizes:
            config = _CONFIGS[size]
            start = time.perf_counter()
            model = random_model(config, seed=seed)
            results[f"{size}_build_s"] = time.perf_counter() - start
            codec = SpeechCodec(model)
            # every tensor of the checkpoint, codebooks included (the release's file: 120.5 M floats)
            results[f"{size}_params_m"] = sum(t.numel() for t in model.state_dict().values()) / 1e6
            results.update(
                _bench_one(codec, synthetic_speech(seconds, config.sample_rate, seed=seed), seconds, size)
            )
        return results
    finally:
        torch.set_num_threads(previous)
