"""Where a config's codec files are; the embedded model's tiny codecs are built on first use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mio_agent.config import Config
from mio_agent.model.cache import build_atomically
from mio_agent.model.embedded import configured_model_dir

__all__ = [
    "IMAGE_FOLDER",
    "SPEECH_FOLDER",
    "UNCLIP_FOLDER",
    "diffusion_dir",
    "image_tokenizer_dir",
    "speech_tokenizer_dir",
]

# the folder names of MIO's release, beside the model weights, where its reference code looks
SPEECH_FOLDER = "SpeechTokenizer"
IMAGE_FOLDER = "seed-tokenizer-2"
UNCLIP_FOLDER = "stable-diffusion-2-1-unclip"


def _resolve(cfg: Config, explicit: str | None, name: str, build: Callable[[Path, int], object]) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    folder, embedded = configured_model_dir(cfg.model)
    target = folder / name
    if embedded:
        seed = cfg.model.embedded_seed
        # built lazily and separately, so a voice-only session never builds the diffusion stack
        build_atomically(target, lambda tmp: build(tmp, seed))
    return target


def speech_tokenizer_dir(cfg: Config) -> Path:
    """`codecs.speech_tokenizer`, else `<model>/SpeechTokenizer`."""
    from mio_agent.codecs.speech import save_tiny_speech_tokenizer

    return _resolve(
        cfg, cfg.codecs.speech_tokenizer, SPEECH_FOLDER, lambda d, s: save_tiny_speech_tokenizer(d, seed=s)
    )


def image_tokenizer_dir(cfg: Config) -> Path:
    """`codecs.image_tokenizer`, else `<model>/seed-tokenizer-2`."""
    from mio_agent.codecs.image import save_tiny_image_tokenizer

    return _resolve(
        cfg, cfg.codecs.image_tokenizer, IMAGE_FOLDER, lambda d, s: save_tiny_image_tokenizer(d, seed=s)
    )


def diffusion_dir(cfg: Config) -> Path:
    """`codecs.diffusion`, else `<model>/stable-diffusion-2-1-unclip`."""
    from mio_agent.codecs.image import save_tiny_unclip

    return _resolve(cfg, cfg.codecs.diffusion, UNCLIP_FOLDER, lambda d, s: save_tiny_unclip(d, seed=s))
