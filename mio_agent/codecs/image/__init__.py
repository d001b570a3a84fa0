"""The SEED-2 image codec that loads MIO's official image tokenizer files."""

from __future__ import annotations

from mio_agent.codecs.image.bench import benchmark_image_codec
from mio_agent.codecs.image.checkpoint import QUANTIZER_FILE, VIT_FILE
from mio_agent.codecs.image.codec import ImageCodec
from mio_agent.codecs.image.io import MAX_IMAGE_PIXELS, load_image
from mio_agent.codecs.image.model import SeedConfig
from mio_agent.codecs.image.tiny import TINY_CONFIG, save_tiny_image_tokenizer, save_tiny_unclip

__all__ = [
    "MAX_IMAGE_PIXELS",
    "QUANTIZER_FILE",
    "TINY_CONFIG",
    "VIT_FILE",
    "ImageCodec",
    "SeedConfig",
    "benchmark_image_codec",
    "load_image",
    "save_tiny_image_tokenizer",
    "save_tiny_unclip",
]
