"""Images a turn can include: uploads, and camera keyframes whose codes are computed as they arrive."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import numpy as np

from mio_agent.config import CameraConfig
from mio_agent.conversation import ImagePart
from mio_agent.events import VideoFrame
from mio_agent.exceptions import CodecError

if TYPE_CHECKING:
    from PIL import Image

    from mio_agent.codecs.video import KeyframePicker
    from mio_agent.runtime.voice.resources import SharedResources

__all__ = ["MAX_PENDING_UPLOADS", "ImageInputs"]

log = logging.getLogger(__name__)

MAX_PENDING_UPLOADS = 4
"""Uploaded images waiting for the next turn; older ones are dropped past this (each costs 32 tokens + markers)."""


class ImageInputs:
    """Uploaded images (for the next turn) and the latest camera keyframes with their codes.

    A keyframe is encoded on the codec thread as soon as the picker chooses it; while one is
    being encoded, newer keyframes replace each other in a one-slot waiting room, so a slow
    encoder never builds a backlog and the newest scene is always the next one encoded.
    """

    def __init__(self, shared: SharedResources, cfg: CameraConfig, pool: Executor) -> None:
        self._shared = shared
        self._cfg = cfg
        self._pool = pool
        self._uploads: list[ImagePart] = []
        self._recent: ImagePart | None = None
        self._keyframes: deque[tuple[int, ImagePart]] = deque(maxlen=cfg.keep)
        self._picker: KeyframePicker | None = None
        self._encoding: asyncio.Future[list[int]] | None = None
        self._waiting: tuple[int, Image.Image] | None = None
        self.frames_seen = 0
        self.keyframes_encoded = 0

    def recent(self) -> ImagePart | None:
        """The newest image at hand: an upload, a keyframe, or an image of the conversation."""
        return self._recent

    def remember(self, codes: tuple[int, ...]) -> None:
        """An image of the conversation (e.g. one the agent made) becomes the recent image."""
        self._recent = ImagePart(codes)

    def take_pending(self) -> tuple[ImagePart, ...]:
        """The uploads waiting for a turn (they join it and are no longer pending)."""
        out, self._uploads = tuple(self._uploads), []
        return out

    def for_turn(self) -> tuple[tuple[int, ImagePart], ...]:
        """(keyframe number or -1 for uploads, part) of the images a voice turn starting now includes."""
        uploads = tuple((-1, p) for p in self.take_pending())
        n = self._cfg.per_turn
        frames = tuple(self._keyframes)[-n:] if n else ()
        return uploads + frames

    async def encode_upload(self, data: bytes, name: str) -> ImagePart:
        """Image bytes (PNG, JPEG...) to their 32 codes; CodecError names what was wrong."""
        from mio_agent.codecs.image.io import load_image

        try:
            picture = load_image(data)
        except Exception as exc:
            raise CodecError(f"image {name or '(upload)'} could not be read: {exc}") from None
        codec = self._shared.image_codec
        codes = await asyncio.get_running_loop().run_in_executor(self._pool, lambda: codec().encode(picture))
        part = ImagePart(tuple(codes), picture)
        self._recent = part
        return part

    def withdraw(self, part: ImagePart) -> None:
        """An upload that a capability used (e.g. `invoke` with the image) does not also join the
        next turn: the pending uploads with its codes are dropped."""
        self._uploads = [p for p in self._uploads if p != part]

    async def add_upload(self, data: bytes, name: str) -> None:
        part = await self.encode_upload(data, name)
        self._uploads.append(part)
        del self._uploads[:-MAX_PENDING_UPLOADS]

    def add_frame(self, ev: VideoFrame) -> None:
        """A camera frame: maybe a keyframe, then encoded in the background."""
        from mio_agent.codecs.video import KeyframePicker

        if self._picker is None:
            self._picker = KeyframePicker()
        rgb = np.frombuffer(ev.rgb, dtype=np.uint8).reshape(ev.shape)
        key = self._picker.push(rgb, ev.t)
        self.frames_seen += 1
        if key is None:
            return
        self._waiting = (key.index, key.image)
        if self._encoding is None or self._encoding.done():
            self._next_keyframe()

    def _next_keyframe(self) -> None:
        if self._waiting is None:
            self._encoding = None
            return
        index, picture = self._waiting
        self._waiting = None
        codec = self._shared.image_codec
        fut = asyncio.get_running_loop().run_in_executor(self._pool, lambda: codec().encode(picture))
        self._encoding = fut

        def done(f: asyncio.Future[list[int]]) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:
                log.warning("keyframe %d could not be encoded: %s", index, f.exception())
            else:
                part = ImagePart(tuple(f.result()), picture)
                self._keyframes.append((index, part))
                self._recent = part
                self.keyframes_encoded += 1
            self._next_keyframe()

        fut.add_done_callback(done)

    async def settle(self) -> None:
        """Wait until every chosen keyframe has been encoded (tests, file input)."""
        while self._encoding is not None and not self._encoding.done():
            await asyncio.wait({self._encoding})
            await asyncio.sleep(0)
