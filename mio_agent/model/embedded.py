"""The embedded tiny MIO-format model: built from a seed into the user cache on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mio_agent.exceptions import ConfigError
from mio_agent.model.builder import BUILD_FORMAT_VERSION, PRESETS, build_preset
from mio_agent.model.cache import build_atomically, cache_root

if TYPE_CHECKING:
    from mio_agent.config import ModelConfig

__all__ = ["configured_model_dir", "embedded_model_path"]


def embedded_model_path(*, seed: int = 0, preset: str = "embedded", cache_dir: Path | None = None) -> Path:
    """Folder of the built-in model of `preset` and `seed`, built on first use (about a second).

    It lives in `cache_dir` (default $MIO_AGENT_CACHE, else the user cache folder) under
    embedded/<preset>-seed<seed>-v<format>/; the same seed always gives the same files. Codec
    helpers may add their own folders inside it later with `cache.build_atomically`.
    """
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown embedded model preset {preset!r}; use one of {', '.join(sorted(PRESETS))}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"model.embedded_seed must be a non-negative integer, not {seed!r}")
    target = cache_root(cache_dir) / "embedded" / f"{preset}-seed{seed}-v{BUILD_FORMAT_VERSION}"
    return build_atomically(target, lambda folder: build_preset(folder, preset, seed=seed))


def configured_model_dir(model: ModelConfig) -> tuple[Path, bool]:
    """The model folder a config's `model` section names, building the embedded one on first use;
    returns (folder, is_embedded)."""
    if model.path is not None:
        return Path(model.path).expanduser(), False
    return embedded_model_path(seed=model.embedded_seed), True
