"""Image codec benchmark: encode time of the tiny and the full-size SEED-2 tokenizer (random weights)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from mio_agent.codecs.image.codec import ImageCodec
from mio_agent.codecs.image.model import SeedConfig
from mio_agent.codecs.image.tiny import TINY_CONFIG, build_random

__all__ = ["benchmark_image_codec"]


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls pay for allocator and kernel selection
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _measure(
    cfg: SeedConfig, prefix: str, *, image: Image.Image, repeats: int, dtype: torch.dtype, seed: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    model = build_random(cfg, seed=seed, dtype=dtype)
    built = time.perf_counter() - t0
    codec = ImageCodec(model, device=torch.device("cpu"), dtype=dtype)
    codes = codec.encode(image)
    return {
        f"{prefix}_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        f"{prefix}_build_s": built,
        f"{prefix}_encode_s": _median_s(lambda: codec.encode(image), repeats),
        f"{prefix}_embed_s": _median_s(lambda: codec.embed(codes), repeats),
    }


def benchmark_image_codec(
    *, full: bool = True, repeats: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, float]:
    """Seconds per image on the CPU (median of `repeats` after a warm-up), for the tiny
    configuration and, when `full`, for the official sizes (EVA-ViT-g with 39 blocks, ~1.1 B
    parameters: about 4.4 GB of float32 and some seconds per image on two cores).

    Keys: `<size>_encode_s`, `<size>_embed_s` (codes → unCLIP embedding), `<size>_build_s`
    (random weights) and `<size>_params_m` for size tiny and full, plus `threads`. The unCLIP
    decoder is not timed here: its cost is the diffusion folder's, 20 UNet steps per image.
    """
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    out = {"threads": float(torch.get_num_threads())}
    out.update(_measure(TINY_CONFIG, "tiny", image=image, repeats=repeats, dtype=dtype, seed=seed))
    if full:
        out.update(_measure(SeedConfig(), "full", image=image, repeats=repeats, dtype=dtype, seed=seed))
    return out
