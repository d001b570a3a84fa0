"""The speech codec benchmark runs on the tiny architecture and reports every figure (no timings asserted)."""

from __future__ import annotations

import math

import pytest
import torch

from mio_agent.codecs.speech import benchmark_speech_codec
from mio_agent.exceptions import ConfigError


def test_tiny_benchmark_reports_every_figure() -> None:
    threads = torch.get_num_threads()
    result = benchmark_speech_codec(sizes=("tiny",), seconds=1.0, threads=1)
    assert torch.get_num_threads() == threads
    for key in (
        "encode_rtf",
        "decode_rtf",
        "stream_encode_rtf",
        "stream_encode_tail_ms",
        "stream_decode_rtf",
        "first_chunk_ms",
        "preview_first_chunk_ms",
        "build_s",
    ):
        assert math.isfinite(result[f"tiny_{key}"]) and result[f"tiny_{key}"] > 0, key
    assert result["tiny_first_chunk_codes"] == 4 + 7
    assert result["tiny_stream_max_abs_err"] < 1e-5
    assert 0.9 <= result["tiny_stream_encode_agreement"] <= 1.0
    assert 0 < result["tiny_params_m"] < 3
    assert result["threads"] == 1.0 and not any(k.startswith("full_") for k in result)


def test_benchmark_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown speech codec size"):
        benchmark_speech_codec(sizes=("huge",))
    with pytest.raises(ConfigError, match="must be positive"):
        benchmark_speech_codec(sizes=("tiny",), seconds=0)
