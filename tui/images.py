"""Images in the conversation: a real terminal graphics protocol when there is one, half blocks otherwise."""

from __future__ import annotations

import io
import sys
from typing import Literal

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

__all__ = ["Graphics", "ImageView", "detect_graphics", "half_blocks", "image_widget"]

Graphics = Literal["sixel", "tgp"] | None
"""A terminal graphics protocol the terminal answered to, or None (half blocks)."""


def detect_graphics() -> Graphics:
    """Ask the terminal which graphics protocol it speaks (textual-image), or None.

    Call it before the app starts: the terminal can only be queried while Textual does not own it.
    None without a terminal, without the optional `textual-image` package, or for a terminal with
    neither Sixel nor the Kitty graphics protocol.
    """
    if not (sys.__stdout__ and sys.__stdout__.isatty()):
        return None
    try:
        # importing the widgets asks the terminal its cell size, which only works before Textual starts
        import textual_image.widget  # noqa: F401
        from textual_image import renderable
        from textual_image.renderable.sixel import Image as SixelImage
        from textual_image.renderable.tgp import Image as TGPImage
    except ImportError:
        return None
    if renderable.Image is SixelImage:
        return "sixel"
    if renderable.Image is TGPImage:
        return "tgp"
    return None


def half_blocks(png: bytes, width: int = 32) -> Text:
    """An image as rows of '▀' whose foreground is one pixel row and background the next: two
    pixels per character cell, readable in any terminal that shows 24-bit colour."""
    import numpy as np
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    height = max(2, round(picture.height * width / picture.width / 2) * 2)
    rgb = np.asarray(picture.resize((width, height)), dtype=np.uint8)
    out = Text()
    for y in range(0, height, 2):
        for x in range(width):
            (r1, g1, b1), (r2, g2, b2) = rgb[y, x].tolist(), rgb[y + 1, x].tolist()
            out.append("▀", style=f"rgb({r1},{g1},{b1}) on rgb({r2},{g2},{b2})")
        if y + 2 < height:
            out.append("\n")
    return out


class ImageView(Static):
    """An image the agent made, drawn in half blocks."""

    DEFAULT_CLASSES = "image"


def image_widget(png: bytes, *, width: int, graphics: Graphics) -> Widget:
    """A widget showing `png` `width` cells wide: through the terminal's graphics protocol when it has
    one (pixels, not cells), else in half blocks."""
    if graphics is not None:
        from PIL import Image
        from textual_image.widget import Image as GraphicsImage

        picture = Image.open(io.BytesIO(png))
        picture.load()
        widget = GraphicsImage(picture, classes="image graphics")
        widget.styles.width = width
        widget.styles.height = "auto"
        return widget
    return ImageView(half_blocks(png, width=width))
