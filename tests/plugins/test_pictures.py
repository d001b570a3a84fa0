"""Capabilities get the pictures as the user gave them, beside MIO's 32 codes."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator

from PIL import Image

from mio_agent.capability import Capability, CapabilityContext
from mio_agent.conversation import ImagePart
from mio_agent.events import OutputEvent, TextDelta
from mio_agent.testing import CapabilityHarness, png_bytes


@dataclasses.dataclass(frozen=True)
class MeasurePicture(Capability):
    """Says the size and the top-left colour of each picture it was given (pixels, not codes)."""

    async def run(self, ctx: CapabilityContext) -> AsyncIterator[OutputEvent]:
        for picture in ctx.pictures:
            size = "x".join(map(str, picture.size))
            yield TextDelta(session=ctx.session, turn=ctx.turn, text=f"{size} {picture.getpixel((0, 0))};")


CAP = MeasurePicture(
    name="measure_picture",
    description="Say each picture's size.",
    inputs=("image",),
    outputs=("text",),
    mode="std",
    preset="text",
    prompt="{text}",
)


async def test_a_capability_reads_the_pixels_it_was_given() -> None:
    harness = CapabilityHarness()
    sink = await harness.run(CAP, images=[png_bytes(40, 24, (10, 20, 30)), png_bytes(8, 8, (200, 0, 0))])
    assert not sink.errors
    assert sink.text == "40x24 (10, 20, 30);8x8 (200, 0, 0);"


def test_pictures_do_not_change_what_mio_sees() -> None:
    picture = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    codes = tuple(range(32))
    assert ImagePart(codes, picture) == ImagePart(codes)  # equal: MIO only sees the codes
    assert "picture" not in repr(ImagePart(codes, picture))
