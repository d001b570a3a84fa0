"""Codec benchmark: speech encode / streaming decode real-time factors and image encode time."""

from __future__ import annotations

import resource
from typing import Any

__all__ = ["bench_codecs"]


def bench_codecs(*, device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Speech and image codecs with random weights, tiny and full-size architectures, in one run."""
    if device != "cpu":
        # the codec benchmarks time CPU threads; a GPU run is a separate measurement not built yet
        from mio_agent.exceptions import ConfigError

        raise ConfigError("bench codecs measures the CPU only for now; run it with --device cpu")
    from mio_agent.codecs.image import benchmark_image_codec
    from mio_agent.codecs.speech import benchmark_speech_codec

    figures: dict[str, Any] = {"bench": "codecs", "device": device}
    speech = benchmark_speech_codec(
        sizes=("tiny",) if quick else ("tiny", "full"), seconds=2.0 if quick else 4.0
    )
    figures.update({f"speech_{k}": round(v, 4) for k, v in speech.items()})
    image = benchmark_image_codec(full=not quick, repeats=1 if quick else 3)
    figures.update({f"image_{k}": round(v, 4) for k, v in image.items()})
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures
