"""Image input for the codec: safe loading, the reference's resize and CLIP normalisation, code checks."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mio_agent.exceptions import CodecError

__all__ = ["CLIP_MEAN", "CLIP_STD", "MAX_IMAGE_PIXELS", "check_codes", "load_image", "preprocess"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# 8192×8192: far above any photo the 224×224 tokenizer could use, far below a decompression bomb
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_size(image: Image.Image, what: str, max_pixels: int) -> None:
    w, h = image.size
    if w < 1 or h < 1:
        raise CodecError(f"{what} is empty ({w}×{h} pixels)")
    if w * h > max_pixels:
        raise CodecError(
            f"{what} is {w}×{h} pixels, more than the limit of {max_pixels:,}; downscale it first"
        )


def load_image(source: str | os.PathLike[str] | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB image from a file path or the bytes of an image file.

    Raises CodecError when the file cannot be read, is not an image, is truncated or corrupt,
    or has more than `max_pixels` pixels (checked from the header, before decoding).
    """
    what = "image data" if isinstance(source, bytes) else f"image {os.fspath(source)!s}"
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice that; a warning here is a bomb too
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CodecError(f"{what} is too large to decode safely ({exc})") from exc
        except FileNotFoundError as exc:
            raise CodecError(f"{what} not found") from exc
        except UnidentifiedImageError as exc:
            raise CodecError(f"{what} is not an image in a format Pillow reads") from exc
        except OSError as exc:
            raise CodecError(f"{what} cannot be read: {exc}") from exc
        with im:
            _check_size(im, what, max_pixels)
            try:
                im.load()
                return im.convert("RGB")
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                # truncated or corrupt data surfaces from load() as any of these
                raise CodecError(f"{what} cannot be decoded: {exc}") from exc


def preprocess(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Pixels [B, 3, size, size], float32: bilinear resize (aspect not kept), CLIP mean/std.

    The same steps as the reference's torchvision transform on PIL images (Resize((224, 224)),
    ToTensor, Normalize), without needing torchvision.
    """
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)
    std = np.asarray(CLIP_STD, dtype=np.float32)
    batch = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise CodecError(f"image {i} is a {type(image).__name__}, expected a PIL image")
        _check_size(image, f"image {i}", MAX_IMAGE_PIXELS)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        arr = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        batch.append((arr - mean) / std)
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()


def check_codes(codes: Sequence[int], *, count: int, size: int) -> list[int]:
    """`codes` as a list of ints after checking there are `count` of them, each in 0..size-1."""
    if isinstance(codes, (str, bytes)) or (not isinstance(codes, Sequence) and not hasattr(codes, "tolist")):
        raise CodecError(f"image codes must be a sequence of {count} integers, not {type(codes).__name__}")
    values = codes.tolist() if hasattr(codes, "tolist") else list(codes)
    if len(values) != count:
        raise CodecError(f"an image is exactly {count} codes, got {len(values)}")
    out = []
    for i, c in enumerate(values):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise CodecError(f"image code {i} is {c!r}, not an integer")
        if not 0 <= c < size:
            raise CodecError(f"image code {i} is {c}, outside 0..{size - 1}")
        out.append(int(c))
    return out
